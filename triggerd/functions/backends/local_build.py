"""pip installs for Python functions: the runtime environment Lambda's base image provides
(boto3, and awslambdaric when chosen), installed once per Python version and shared, and a
function's own `requirements`, cached by content hash.

Each install runs the function's interpreter's own pip (`python -m pip install --target`), so
compiled wheels match the interpreter the function runs with, into a temporary directory that
is renamed into place only when pip succeeded: a failed install leaves nothing behind, and a
finished one is never redone. pip's output is passed line by line to a progress callback.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence

from triggerd.functions.backends.local_python import Interpreter

#: A line of progress (pip's output, or what is being installed).
Progress = Callable[[str], None]
#: Lines of pip's output kept for the error message.
ERROR_LINES = 12


class BuildError(Exception):
    """An install that failed; the message says why (pip's own error lines)."""


def _noop(line: str) -> None:
    return None


def _begin(dest: str) -> str | None:
    """A temporary directory next to `dest` to install into; None when `dest` exists."""
    if os.path.isdir(dest):
        return None
    parent = os.path.dirname(dest)
    os.makedirs(parent, exist_ok=True)
    return tempfile.mkdtemp(prefix=".installing-", dir=parent)


def _finish(tmp: str, dest: str) -> None:
    try:
        os.rename(tmp, dest)
    except OSError:
        if not os.path.isdir(dest):  # not another process finishing the same install first
            raise


def _abandon(tmp: str) -> None:
    shutil.rmtree(tmp, ignore_errors=True)


async def pip_install(
    interpreter: Interpreter,
    dest: str,
    args: Sequence[str],
    *,
    what: str,
    progress: Progress = _noop,
    cwd: str | None = None,
) -> str:
    """`pip install --target dest args...` with `interpreter`, unless `dest` already exists.
    Returns `dest`; raises BuildError with pip's last lines when pip fails."""
    tmp = await asyncio.to_thread(_begin, dest)
    if tmp is None:
        return dest
    progress(f"installing {what} with {interpreter.path}")
    try:
        await _run_pip(interpreter, tmp, args, what, progress, cwd)
        await asyncio.to_thread(_finish, tmp, dest)
    finally:
        await asyncio.to_thread(_abandon, tmp)
    progress(f"installed {what}")
    return dest


async def _run_pip(
    interpreter: Interpreter,
    target: str,
    args: Sequence[str],
    what: str,
    progress: Progress,
    cwd: str | None,
) -> None:
    argv = [
        interpreter.path,
        "-m",
        "pip",
        "install",
        "--no-input",
        "--disable-pip-version-check",
        "--no-warn-script-location",
        "--progress-bar",
        "off",
        "--target",
        target,
        *args,
    ]
    env = dict(os.environ)
    env["PYTHONNOUSERSITE"] = "1"
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except OSError as e:
        raise BuildError(f"installing {what}: cannot run {interpreter.path}: {e}") from e
    tail: collections.deque[str] = collections.deque(maxlen=ERROR_LINES)
    assert proc.stdout is not None
    try:
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            if line:
                tail.append(line)
                progress("  " + line)
        code = await proc.wait()
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    if code != 0:
        errors = [x for x in tail if "ERROR" in x or "rror:" in x] or list(tail)
        if any("No module named pip" in x for x in tail):
            path = interpreter.path
            errors = [f"{path} has no pip (install it: {path} -m ensurepip)"]
        message = f"installing {what} failed (pip exit status {code}): " + " | ".join(errors)
        raise BuildError(message)


def runtime_env_dir(runtimes_dir: str, version: str, package: str, pin: str | None) -> str:
    """Where a runtime-provided package lives: `<runtimes_dir>/python3.12/boto3-1.43.117`."""
    return os.path.join(runtimes_dir, "python" + version, package + ("-" + pin if pin else ""))


async def install_runtime_package(
    interpreter: Interpreter,
    runtimes_dir: str,
    package: str,
    pin: str | None,
    progress: Progress = _noop,
) -> str:
    """The shared runtime environment directory holding `package` (installed on first use)."""
    dest = runtime_env_dir(runtimes_dir, interpreter.version, package, pin)
    spec = f"{package}=={pin}" if pin else package
    # awslambdaric has a C++ extension: only a published wheel, never a build on this machine.
    extra = ["--only-binary", package] if package == "awslambdaric" else []
    what = f"{spec} for python{interpreter.version} (the runtime's own packages)"
    return await pip_install(interpreter, dest, [*extra, spec], what=what, progress=progress)


def requirements_key(requirements: str, interpreter: Interpreter) -> str:
    h = hashlib.sha256()
    with open(requirements, "rb") as f:
        h.update(f.read())
    h.update(f"\0{interpreter.version}\0{interpreter.path}".encode())
    return h.hexdigest()[:20]


async def install_requirements(
    interpreter: Interpreter, requirements: str, work_dir: str, progress: Progress = _noop
) -> str:
    """The function's dependencies directory for `requirements` (installed when its content,
    or the interpreter, changed; older installs are removed)."""
    key = await asyncio.to_thread(requirements_key, requirements, interpreter)
    dest = os.path.join(work_dir, "deps-" + key)
    where = os.path.dirname(requirements)  # pip reads relative paths in it from there
    await pip_install(
        interpreter,
        dest,
        ["-r", requirements],
        what=requirements,
        progress=progress,
        cwd=where or None,
    )
    await asyncio.to_thread(_remove_others, work_dir, "deps-", dest)
    return dest


def _remove_others(parent: str, prefix: str, keep: str) -> None:
    for name in os.listdir(parent):
        old = os.path.join(parent, name)
        if name.startswith(prefix) and old != keep:
            shutil.rmtree(old, ignore_errors=True)
