"""Configuration of the `local` backend and the command and environment its workers get."""

from __future__ import annotations

import os
import re
import shutil
import sys
from typing import Literal, Self

from pydantic import Field, field_validator, model_validator

from triggerd.functions.backends.local_worker import WorkerSpec
from triggerd.functions.runtime_client import bootstrap
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
#: Lambda's Node.js runtimes, run with the bundled Node.js runtime client and `node` on PATH.
NODE_RUNTIMES = frozenset({"nodejs18.x", "nodejs20.x", "nodejs22.x"})
_NODE_CLIENT = os.path.join(os.path.dirname(os.path.abspath(bootstrap.__file__)), "node")
#: Lambda's OS-only runtimes: the code directory holds a `bootstrap` executable.
PROVIDED_RUNTIMES = frozenset({"provided", "provided.al2", "provided.al2023"})
#: Idle workers (beyond the provisioned ones) are stopped after this long, by default.
DEFAULT_IDLE_TIMEOUT_S = 300.0
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_HANDLER = re.compile(rf"{_IDENT}(?:[./]{_IDENT})*\.{_IDENT}")


class LocalFunctionConfig(FunctionConfig):
    """A function run by triggerd itself, in warm worker processes on this machine."""

    backend: Literal["local"] = "local"
    runtime: str = Field(
        "python3.11",
        description="Lambda runtime identifier: python3.x; nodejs18.x / nodejs20.x / "
        "nodejs22.x (the bundled Node.js runtime client, `node` from PATH); or provided / "
        "provided.al2 / provided.al2023 (a `bootstrap` executable in the code directory).",
    )
    runtime_client: Literal["bundled", "awslambdaric"] = Field(
        "bundled",
        description="python3.x only: the bundled runtime client, or `python -m awslambdaric` "
        "(needs awslambdaric installed for this interpreter).",
    )
    handler: str = Field(
        "",
        description="python3.x: module.function (packages dotted: pkg.mod.handler), required. "
        "nodejs: file.export (index.handler; the file .js, .mjs or .cjs), required. "
        "provided: passed to the bootstrap as _HANDLER.",
    )
    code: ConfigPath = Field(
        description="Directory holding the function's code (LAMBDA_TASK_ROOT); relative to the "
        "config file."
    )
    environment: dict[str, str] = Field(
        default_factory=dict, description="Environment variables (at most 4 KB in total)."
    )
    version: str = Field("$LATEST", description="Reported as the function version.")
    timeout_s: float = Field(3.0, ge=1, le=900, description="Invocation timeout, seconds.")
    memory_mb: int = Field(
        128,
        ge=128,
        le=10240,
        description="Memory size, MB: a worker whose resident memory goes over it is killed "
        "(Runtime.OutOfMemory).",
    )
    reserved_concurrency: int | None = Field(
        None, ge=0, description=f"Maximum concurrent workers (default {DEFAULT_CONCURRENCY})."
    )
    provisioned_concurrency: int = Field(
        0,
        ge=0,
        description="Workers started when the backend starts and kept warm (never reaped).",
    )
    idle_timeout_s: float = Field(
        DEFAULT_IDLE_TIMEOUT_S,
        gt=0,
        description="Workers idle this long are stopped (provisioned ones are kept).",
    )

    @property
    def provided(self) -> bool:
        return self.runtime in PROVIDED_RUNTIMES

    @property
    def node(self) -> bool:
        return self.runtime in NODE_RUNTIMES

    @property
    def max_workers(self) -> int:
        if self.reserved_concurrency is None:
            return max(DEFAULT_CONCURRENCY, self.provisioned_concurrency)
        return self.reserved_concurrency

    @field_validator("runtime")
    @classmethod
    def _runtime(cls, value: str) -> str:
        node = value in NODE_RUNTIMES
        if not (_PYTHON_RUNTIME.fullmatch(value) or value in PROVIDED_RUNTIMES or node):
            raise ValueError(
                f"runtime {value!r} is not supported by the local backend "
                "(supported: python3.x, e.g. python3.11; nodejs18.x, nodejs20.x, nodejs22.x; "
                "provided, provided.al2, provided.al2023)"
            )
        if node and shutil.which("node") is None:
            raise ValueError(
                f"runtime {value} needs the `node` command on PATH: install Node.js "
                "(e.g. apt-get install nodejs) or add its bin directory to PATH"
            )
        return value

    @model_validator(mode="after")
    def _combination(self) -> Self:
        if (self.provided or self.node) and self.runtime_client != "bundled":
            raise ValueError("runtime_client applies to python3.x runtimes only")
        if not self.provided and not _HANDLER.fullmatch(self.handler):
            raise ValueError(
                f"handler {self.handler!r} must look like module.function (packages dotted: "
                "pkg.module.function)"
            )
        if self.provisioned_concurrency > self.max_workers:
            raise ValueError(
                f"provisioned_concurrency ({self.provisioned_concurrency}) is over "
                f"reserved_concurrency ({self.max_workers})"
            )
        return self

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


def worker_spec(
    config: LocalFunctionConfig, ctx: BackendContext, code_dir: str, tmp_dir: str | None = None
) -> WorkerSpec:
    """The command for the configured runtime, with the environment Lambda gives it."""
    script = os.path.abspath(bootstrap.__file__)
    env: dict[str, str] = {
        "LANG": "en_US.UTF-8",
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
    }
    if tmp_dir is not None:
        env["TMPDIR"] = tmp_dir
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
            "LAMBDA_TASK_ROOT": code_dir,
            "TZ": ":UTC",
        }
    )
    if config.provided:
        # OS-only runtimes: no AWS_EXECUTION_ENV; the bootstrap lives with the code.
        env["LAMBDA_RUNTIME_DIR"] = code_dir
        argv: tuple[str, ...] = (os.path.join(code_dir, "bootstrap"),)
    elif config.node:
        # Lambda's NODE_PATH, minus the layer directories: runtime modules, then the code.
        env["AWS_EXECUTION_ENV"] = "AWS_Lambda_" + config.runtime
        env["LAMBDA_RUNTIME_DIR"] = _NODE_CLIENT
        env["NODE_PATH"] = os.pathsep.join(
            [os.path.join(_NODE_CLIENT, "node_modules"), _NODE_CLIENT, code_dir]
        )
        argv = ("node", os.path.join(_NODE_CLIENT, "index.mjs"))
    else:
        env["AWS_EXECUTION_ENV"] = "AWS_Lambda_" + config.runtime
        if config.runtime_client == "awslambdaric":
            env["LAMBDA_RUNTIME_DIR"] = code_dir
            argv = (sys.executable, "-m", "awslambdaric", config.handler)
        else:
            env["LAMBDA_RUNTIME_DIR"] = os.path.dirname(script)
            argv = (sys.executable, script)
    return WorkerSpec(argv=argv, cwd=code_dir, env=env, version=config.version)
