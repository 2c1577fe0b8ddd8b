"""Finding the interpreter a `pythonX.Y` runtime names.

The runtime of triggerd's own Python version is the interpreter triggerd runs on (nothing to
search or run). For other versions, candidates named `pythonX.Y` are looked for on PATH
first, then in the places version managers install interpreters (`SEARCH_DIRS`), and each is
*run* to ask its version: a pyenv shim on PATH exists for every version but only works for
the selected one, so finding a file is not enough. The interpreter's own `sys.executable` is
kept, so workers start the real binary, not a shim that execs it.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from triggerd.types import ConfigError

#: The Python runtimes Lambda supports.
SUPPORTED_VERSIONS = ("3.9", "3.10", "3.11", "3.12", "3.13", "3.14")
#: Searched after PATH, in this order (globs; `~` and `$PYENV_ROOT` expanded).
SEARCH_DIRS = (
    "$PYENV_ROOT/versions/*/bin",
    "~/.pyenv/versions/*/bin",
    "~/.local/share/uv/python/*/bin",
    "~/.asdf/installs/python/*/bin",
    "/usr/local/bin",
    "/usr/bin",
    "/opt/python/*/bin",
)
PROBE_TIMEOUT_S = 10.0
_OWN_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
_PROBE = "import sys; print('%d.%d' % sys.version_info[:2]); print(sys.executable)"


@dataclass(frozen=True, slots=True)
class Interpreter:
    path: str
    #: "3.12"
    version: str


def runtime_version(runtime: str) -> str:
    """`python3.12` -> `3.12`."""
    return runtime.removeprefix("python")


def candidate_paths(version: str) -> list[str]:
    """Every `pythonX.Y` on PATH, then in the search directories, without duplicates."""
    name = "python" + version
    import glob  # when a function's runtime is not triggerd's own Python

    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    for pattern in SEARCH_DIRS:
        if "$PYENV_ROOT" in pattern and "PYENV_ROOT" not in os.environ:
            continue
        dirs += sorted(glob.glob(os.path.expanduser(os.path.expandvars(pattern))), reverse=True)
    seen: set[str] = set()
    out = []
    for d in dirs:
        path = os.path.join(d, name)
        if path not in seen and os.path.isfile(path) and os.access(path, os.X_OK):
            seen.add(path)
            out.append(path)
    return out


async def probe(path: str) -> Interpreter | None:
    """The interpreter at `path` as it reports itself, or None when it does not run."""
    import asyncio  # imported by the checks that start a process (`validate` may not)

    try:
        proc = await asyncio.create_subprocess_exec(
            path,
            "-S",
            "-c",
            _PROBE,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError:
        return None
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return None
    lines = out.decode(errors="replace").split("\n")
    if proc.returncode != 0 or len(lines) < 2:
        return None
    return Interpreter(path=lines[1].strip() or path, version=lines[0].strip())


def is_own_runtime(runtime: str, explicit: str | None) -> bool:
    """Whether `runtime` runs on triggerd's own interpreter: nothing to search or probe."""
    return explicit is None and bool(sys.executable) and runtime_version(runtime) == _OWN_VERSION


def own_interpreter() -> Interpreter:
    """The interpreter triggerd runs on: its version is known without starting anything
    (a probe costs a process start, and through a pyenv shim some 60 processes of bash). The
    binary itself, not a virtualenv's link to it: workers start with `-S` and Lambda's own
    paths, so nothing of the daemon's environment reaches them either way."""
    return Interpreter(path=os.path.realpath(sys.executable), version=_OWN_VERSION)


def _missing(runtime: str, where: str) -> ConfigError:
    dirs = ", ".join(SEARCH_DIRS)
    return ConfigError(
        [
            f"{where}runtime: {runtime} needs a Python {runtime_version(runtime)} interpreter "
            f"and none runs on PATH or in {dirs}: install it, or set interpreter = "
            f'"/path/to/python{runtime_version(runtime)}"'
        ]
    )


@dataclass
class InterpreterFinder:
    """Finds interpreters, each version probed once per finder."""

    _found: dict[tuple[str, str | None], Interpreter] = field(default_factory=dict)

    async def find(self, runtime: str, explicit: str | None = None, where: str = "") -> Interpreter:
        """The interpreter for `runtime` (`explicit`: the configured one, checked), or a
        ConfigError naming the runtime and how to fix it."""
        version = runtime_version(runtime)
        key = (version, explicit)
        if key in self._found:
            return self._found[key]
        if explicit is not None:
            found = await probe(explicit)
            if found is None:
                raise ConfigError([f"{where}interpreter: {explicit} does not run"])
            if found.version != version:
                raise ConfigError(
                    [
                        f"{where}interpreter: {explicit} is Python {found.version}, "
                        f"runtime {runtime} needs {version}"
                    ]
                )
        elif is_own_runtime(runtime, explicit):
            found = own_interpreter()
        else:
            found = await self._search(version, runtime, where)
        self._found[key] = found
        return found

    async def _search(self, version: str, runtime: str, where: str) -> Interpreter:
        for path in candidate_paths(version):
            found = await probe(path)
            if found is not None and found.version == version:
                return found
        raise _missing(runtime, where)
