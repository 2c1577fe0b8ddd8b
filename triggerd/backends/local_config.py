"""Configuration of the `local` backend and the environment its Python workers get."""

from __future__ import annotations

import os
import re
import sys
from typing import Literal

from pydantic import Field, field_validator

from triggerd.backends.local_worker import WorkerSpec
from triggerd.runtime import bootstrap
from triggerd.types import BackendContext, ConfigPath, FunctionConfig

#: Workers per function when `reserved_concurrency` is not set.
DEFAULT_CONCURRENCY = 4
ENV_MAX_BYTES = 4096

#: Environment variables Lambda sets itself and rejects in a function's configuration.
RESERVED_ENV = frozenset(
    {
        "_HANDLER",
        "_X_AMZN_TRACE_ID",
        "AWS_ACCESS_KEY_ID",
        "AWS_DEFAULT_REGION",
        "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_INITIALIZATION_TYPE",
        "AWS_LAMBDA_LOG_FORMAT",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_LEVEL",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_LAMBDA_RUNTIME_API",
        "AWS_REGION",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "LAMBDA_RUNTIME_DIR",
        "LAMBDA_TASK_ROOT",
        "TZ",
    }
)
_CREDENTIAL_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
_ENV_KEY = re.compile(r"[a-zA-Z][a-zA-Z0-9_]+")
_PYTHON_RUNTIME = re.compile(r"python3\.\d+")
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_HANDLER = re.compile(rf"{_IDENT}(?:[./]{_IDENT})*\.{_IDENT}")


class LocalFunctionConfig(FunctionConfig):
    """A function run by triggerd itself, in warm worker processes on this machine."""

    backend: Literal["local"] = "local"
    runtime: str = Field("python3.11", description="Lambda runtime identifier (python3.x).")
    handler: str = Field(description="module.function, packages dotted: pkg.mod.handler")
    code: ConfigPath = Field(
        description="Directory holding the function's code (LAMBDA_TASK_ROOT); relative to the "
        "config file."
    )
    environment: dict[str, str] = Field(
        default_factory=dict, description="Environment variables (at most 4 KB in total)."
    )
    version: str = Field("$LATEST", description="Reported as the function version.")
    timeout_s: float = Field(3.0, ge=1, le=900, description="Invocation timeout, seconds.")
    memory_mb: int = Field(128, ge=128, le=10240, description="Reported memory size, MB.")
    reserved_concurrency: int | None = Field(
        None, ge=0, description=f"Maximum concurrent workers (default {DEFAULT_CONCURRENCY})."
    )

    @field_validator("runtime")
    @classmethod
    def _runtime(cls, value: str) -> str:
        if not _PYTHON_RUNTIME.fullmatch(value):
            raise ValueError(
                f"runtime {value!r} is not supported by the local backend yet "
                "(supported: python3.x, e.g. python3.11)"
            )
        return value

    @field_validator("handler")
    @classmethod
    def _handler(cls, value: str) -> str:
        if not _HANDLER.fullmatch(value):
            raise ValueError(
                f"handler {value!r} must look like module.function (packages dotted: "
                "pkg.module.function)"
            )
        return value

    @field_validator("environment")
    @classmethod
    def _environment(cls, value: dict[str, str]) -> dict[str, str]:
        problems = [f"invalid variable name {k!r}" for k in value if not _ENV_KEY.fullmatch(k)]
        problems += [f"{k} is reserved by Lambda" for k in sorted(value) if k in RESERVED_ENV]
        size = sum(len(k.encode()) + len(v.encode()) for k, v in value.items())
        if size > ENV_MAX_BYTES:
            problems.append(f"variables total {size} bytes, over the {ENV_MAX_BYTES} bytes limit")
        if problems:
            raise ValueError("; ".join(problems))
        return value


def python_worker_spec(
    config: LocalFunctionConfig, ctx: BackendContext, code_dir: str
) -> WorkerSpec:
    """The bundled Python runtime client, run by this interpreter, in Lambda's environment."""
    script = os.path.abspath(bootstrap.__file__)
    env: dict[str, str] = {
        "LANG": "en_US.UTF-8",
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
    }
    env.update(config.environment)
    env.update({k: os.environ[k] for k in _CREDENTIAL_ENV if k in os.environ})
    env.update(
        {
            "_HANDLER": config.handler,
            "AWS_LAMBDA_FUNCTION_NAME": ctx.function,
            "AWS_LAMBDA_FUNCTION_VERSION": config.version,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(config.memory_mb),
            "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/" + ctx.function,
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_REGION": ctx.region,
            "AWS_DEFAULT_REGION": ctx.region,
            "AWS_EXECUTION_ENV": "AWS_Lambda_" + config.runtime,
            "LAMBDA_TASK_ROOT": code_dir,
            "LAMBDA_RUNTIME_DIR": os.path.dirname(script),
            "TZ": ":UTC",
        }
    )
    return WorkerSpec(argv=(sys.executable, script), cwd=code_dir, env=env, version=config.version)
