"""Preparing a local function before its first worker starts: the checks `triggerd validate`
runs (interpreter, code, layers, requirements file), and the build `triggerd build` and
`triggerd run` do (code extracted, layers merged, runtime packages and requirements
installed). An unchanged function costs a few file scans."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from typing import TYPE_CHECKING

from triggerd.functions.backends.local_build import (
    Progress,
    install_requirements,
    install_runtime_package,
)
from triggerd.functions.backends.local_config import LocalFunctionConfig, Prepared
from triggerd.functions.backends.local_package import (
    check_layers,
    check_source,
    prepare_code,
    prepare_opt,
)
from triggerd.functions.backends.local_python import Interpreter, InterpreterFinder
from triggerd.types import ConfigError

if TYPE_CHECKING:
    from triggerd.types import BackendContext

log = logging.getLogger("triggerd.backend")

#: Overrides the default runtimes directory of tools and tests that do not set one.
RUNTIMES_DIR_ENV = "TRIGGERD_RUNTIMES_DIR"


def runtimes_dir(ctx: BackendContext) -> str:
    """Where the runtime-provided packages live, shared by the functions of a daemon."""
    return os.path.abspath(
        ctx.runtimes_dir
        or os.environ.get(RUNTIMES_DIR_ENV)
        or os.path.join(ctx.work_dir, "runtimes")
    )


def requirements_file(config: LocalFunctionConfig, code_dir: str) -> str | None:
    """The requirements to install: the configured file, or the requirements.txt at the top
    of the code (`code_dir`: the directory, or where the .zip was extracted) when there is
    one (`requirements = ""`: none)."""
    if config.provided or config.node or config.requirements == "":
        return None
    if config.requirements is not None:
        return os.path.abspath(config.requirements)
    default = os.path.abspath(os.path.join(code_dir, "requirements.txt"))
    return default if os.path.isfile(default) else None


def _check_files(config: LocalFunctionConfig, where: str) -> None:
    problems = check_source(config.code, f"{where}code")
    if config.requirements and not os.path.isfile(config.requirements):
        problems.append(f"{where}requirements: {config.requirements} does not exist")
    if problems:
        raise ConfigError(problems)
    check_layers(config.layers, where)


async def check(
    config: LocalFunctionConfig,
    name: str,
    finder: InterpreterFinder | None = None,
    *,
    files: bool = True,
) -> Interpreter | None:
    """What is checked before building: the interpreter runs and (`files`) the code, layers
    and requirements exist (ConfigError naming each problem). Returns the interpreter.
    `triggerd validate` checks the interpreter only: a config is often validated on another
    machine than the one holding the code."""
    where = f"functions.{name}."
    if files:
        await asyncio.to_thread(_check_files, config, where)
    if config.node:
        await check_node(config, where)
        return None
    if config.provided:
        return None
    return await (finder or InterpreterFinder()).find(config.runtime, config.interpreter, where)


async def check_node(config: LocalFunctionConfig, where: str) -> None:
    """The `node` to run answers `--version` (ConfigError otherwise); a major version other
    than the runtime's is a warning: Lambda's nodejsNN.x runs Node.js NN."""
    node = config.interpreter or shutil.which("node") or "node"
    try:
        proc = await asyncio.create_subprocess_exec(
            node,
            "--version",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    except (OSError, TimeoutError) as e:
        raise ConfigError([f"{where}interpreter: {node} does not run: {e}"]) from None
    version = out.decode(errors="replace").strip()
    if proc.returncode != 0 or not version.startswith("v"):
        raise ConfigError([f"{where}interpreter: {node} --version failed"])
    wanted = config.runtime.removeprefix("nodejs").removesuffix(".x")
    if version[1:].split(".")[0] != wanted:
        log.warning(
            "backend.node_version_mismatch",
            extra={"runtime": config.runtime, "node": node, "version": version},
        )


def _check_bootstrap(code_dir: str, runtime: str, where: str) -> None:
    path = os.path.join(code_dir, "bootstrap")
    if not os.path.isfile(path):
        raise ConfigError([f"{where}code: runtime {runtime} needs an executable {path}"])
    if not os.access(path, os.X_OK):
        raise ConfigError([f"{where}code: {path} is not executable (chmod +x)"])


async def prepare(
    config: LocalFunctionConfig,
    ctx: BackendContext,
    progress: Progress,
    finder: InterpreterFinder | None = None,
) -> Prepared:
    """Build everything the function's workers need. ConfigError for operator mistakes,
    PackageError for unusable packages, BuildError when an install failed."""
    where = f"functions.{ctx.function}."
    interpreter = await check(config, ctx.function, finder)
    work_dir = await asyncio.to_thread(os.path.abspath, ctx.work_dir)
    code_dir = await asyncio.to_thread(prepare_code, config.code, work_dir)
    if config.provided:
        await asyncio.to_thread(_check_bootstrap, code_dir, config.runtime, where)
    opt_dir = await asyncio.to_thread(prepare_opt, config.layers, work_dir)
    if interpreter is None:
        return Prepared(code_dir, opt_dir)
    shared = runtimes_dir(ctx)
    paths = [
        await install_runtime_package(interpreter, shared, "boto3", config.runtime_boto3, progress)
    ]
    if config.runtime_client == "awslambdaric":
        paths.append(
            await install_runtime_package(interpreter, shared, "awslambdaric", None, progress)
        )
    deps = None
    requirements = await asyncio.to_thread(requirements_file, config, code_dir)
    if requirements is not None:
        deps = await install_requirements(interpreter, requirements, work_dir, progress)
    return Prepared(code_dir, opt_dir, interpreter, deps, tuple(paths))
