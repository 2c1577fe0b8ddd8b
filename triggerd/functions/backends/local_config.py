"""Configuration of the `local` backend and the command and environment its workers get."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Self

from pydantic import Field, ValidationInfo, field_validator, model_validator

from triggerd.functions import runtime_client
from triggerd.functions.backends.local_package import MAX_LAYERS
from triggerd.functions.backends.local_python import (
    SUPPORTED_VERSIONS,
    Interpreter,
    runtime_version,
)
from triggerd.types import (
    CodePath,
    FunctionConfig,
    InputFile,
    empty_list,
    resolve_config_path,
)

if TYPE_CHECKING:  # the worker machinery is imported when a worker is started, not to validate
    from triggerd.functions.backends.local_worker import WorkerSpec
    from triggerd.types import BackendContext

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
_ENV_KEY = re.compile(r"[a-zA-Z][a-zA-Z0-9_]+")
PYTHON_RUNTIMES = frozenset("python" + v for v in SUPPORTED_VERSIONS)
#: The boto3 the runtime provides when `boto3_version` is not set (like Lambda's base image,
#: one pinned version).
DEFAULT_BOTO3_VERSION = "1.43.117"
#: Runtimes whose Python the default boto3 no longer supports: the last release that does.
LAST_BOTO3_FOR = {"python3.9": "1.42.97"}
_VERSION = re.compile(r"[0-9][0-9A-Za-z.+!-]*")
_ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}")
_SESSION_NAME = re.compile(r"[\w+=,.@-]{2,64}")
#: Lambda's Node.js runtimes, run with the bundled Node.js runtime client and `node` on PATH.
NODE_RUNTIMES = frozenset({"nodejs18.x", "nodejs20.x", "nodejs22.x"})
#: The bundled runtime clients' directory (the Python client's bootstrap.py, node/).
_CLIENT_DIR = os.path.dirname(os.path.abspath(runtime_client.__file__))
_NODE_CLIENT = os.path.join(_CLIENT_DIR, "node")
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
        description="Lambda runtime identifier: python3.9 ... python3.14 (that interpreter, "
        "found on PATH or in the usual install places); nodejs18.x / nodejs20.x / nodejs22.x "
        "(the bundled Node.js runtime client, `node` from PATH); or provided / provided.al2 / "
        "provided.al2023 (a `bootstrap` executable in the code directory).",
    )
    interpreter: InputFile | None = Field(
        None,
        description="python3.x: the Python interpreter to run (must be the runtime's "
        "version); default: found on PATH, then pyenv, uv, asdf and system directories. "
        "nodejs*.x: the `node` executable to run (default: `node` on PATH; a major version "
        "other than the runtime's is logged as a warning at start).",
    )
    runtime_client: Literal["bundled", "awslambdaric"] = Field(
        "bundled",
        description="python3.x only: the bundled runtime client, or `python -m awslambdaric` "
        "(installed with the runtime's own packages on first use).",
    )
    handler: str = Field(
        "",
        description="python3.x: module.function (packages dotted: pkg.mod.handler), required. "
        "nodejs: file.export (index.handler; the file .js, .mjs or .cjs), required. "
        "provided: passed to the bootstrap as _HANDLER.",
    )
    code: CodePath = Field(
        description="The function's code (LAMBDA_TASK_ROOT): a directory, or a Lambda "
        "deployment .zip (extracted into the work dir); relative to the config file."
    )
    requirements: str | None = Field(
        None,
        description="python3.x only: a requirements file installed for the function (by "
        "`triggerd build`, or `run` on first use); default: the code directory's "
        'requirements.txt when there is one; "" for none.',
    )
    layers: list[CodePath] = Field(
        default_factory=empty_list,
        max_length=MAX_LAYERS,
        description="Layers (directories or .zip files), merged in order into the function's "
        "/opt-equivalent directory.",
    )
    boto3_version: str | None = Field(
        None,
        description="python3.x only: the boto3 the runtime provides (installed once per "
        f"Python version into the runtimes directory); default {DEFAULT_BOTO3_VERSION} "
        f"({LAST_BOTO3_FOR['python3.9']} on python3.9, the last release supporting it).",
    )
    role_arn: str | None = Field(
        None,
        description="Execution role: the function gets this role's temporary credentials "
        "(STS AssumeRole with the daemon's credentials), refreshed before they expire.",
    )
    role_session_name: str | None = Field(
        None, description="Session name for role_arn (default: the function's name)."
    )
    role_duration_s: int = Field(
        3600, ge=900, le=43200, description="Lifetime of role_arn's credentials, seconds."
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
    worker_max_invocations: int | None = Field(
        None,
        ge=1,
        description="Replace a worker after this many invocations (default: no limit). The "
        "replacement is started beside it and takes over between invocations: no invocation "
        "fails or waits for a cold start.",
    )
    worker_max_rss_growth_mb: int | None = Field(
        None,
        ge=0,
        description="Replace a worker, in the same way, once its resident memory grew this "
        "many MB past what it used after its first invocation (a runtime client or handler "
        "that leaks); default a quarter of memory_mb; 0 turns it off.",
    )

    @property
    def provided(self) -> bool:
        return self.runtime in PROVIDED_RUNTIMES

    @property
    def runtime_boto3(self) -> str:
        """The boto3 version the runtime provides."""
        if self.boto3_version is not None:
            return self.boto3_version
        return LAST_BOTO3_FOR.get(self.runtime, DEFAULT_BOTO3_VERSION)

    @property
    def rss_growth_limit_kb(self) -> int | None:
        """`worker_max_rss_growth_mb` in KB (its default applied), None when off."""
        mb = (
            self.memory_mb // 4
            if self.worker_max_rss_growth_mb is None
            else (self.worker_max_rss_growth_mb)
        )
        return mb * 1024 if mb > 0 else None

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
        if not (value in PYTHON_RUNTIMES or value in PROVIDED_RUNTIMES or node):
            raise ValueError(
                f"runtime {value!r} is not supported by the local backend "
                f"(supported: {', '.join(sorted(PYTHON_RUNTIMES, key=len))}; nodejs18.x, "
                "nodejs20.x, nodejs22.x; provided, provided.al2, provided.al2023)"
            )
        return value

    @field_validator("requirements")
    @classmethod
    def _requirements(cls, value: str | None, info: ValidationInfo) -> str | None:
        return resolve_config_path(value, info) if value else value

    @field_validator("boto3_version")
    @classmethod
    def _boto3_version(cls, value: str | None) -> str | None:
        if value is not None and not _VERSION.fullmatch(value):
            raise ValueError(f"{value!r} is not a version number (e.g. {DEFAULT_BOTO3_VERSION})")
        return value

    @field_validator("role_arn")
    @classmethod
    def _role_arn(cls, value: str | None) -> str | None:
        if value is not None and not _ROLE_ARN.fullmatch(value):
            raise ValueError(f"{value!r} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)")
        return value

    @field_validator("role_session_name")
    @classmethod
    def _session_name(cls, value: str | None) -> str | None:
        if value is not None and not _SESSION_NAME.fullmatch(value):
            raise ValueError("2-64 characters of letters, digits and +=,.@_-")
        return value

    @model_validator(mode="after")
    def _combination(self) -> Self:
        if (self.provided or self.node) and self.runtime_client != "bundled":
            raise ValueError("runtime_client applies to python3.x runtimes only")
        unused_role = sorted({"role_session_name", "role_duration_s"} & self.model_fields_set)
        if unused_role and self.role_arn is None:
            raise ValueError(f"{', '.join(unused_role)}: only used with role_arn")
        if (self.provided or self.node) and self.boto3_version is not None:
            raise ValueError(
                "boto3_version applies to python3.x runtimes only (other runtimes are given "
                "no boto3: ship the SDK the code needs)"
            )
        if self.provided and (self.interpreter is not None or self.requirements):
            raise ValueError("interpreter and requirements apply to python3.x runtimes only")
        if self.node and self.requirements:
            raise ValueError("requirements apply to python3.x runtimes only (ship node_modules)")
        if self.node and self.interpreter is None and shutil.which("node") is None:
            raise ValueError(
                f"runtime {self.runtime} needs the `node` command on PATH: install Node.js "
                "(e.g. apt-get install nodejs), add its bin directory to PATH, or set "
                'interpreter = "/path/to/node"'
            )
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


@dataclass(frozen=True, slots=True)
class Prepared:
    """A function's files and interpreter, ready to start workers from."""

    #: LAMBDA_TASK_ROOT: the code directory, or where the deployment .zip was extracted.
    code_dir: str
    #: The `/opt`-equivalent: the function's layers merged (`python/`, `bin/`, `lib/`,
    #: `extensions/`).
    opt_dir: str
    #: python3.x: the interpreter workers run.
    interpreter: Interpreter | None = None
    #: The function's installed `requirements` (None without).
    deps_dir: str | None = None
    #: The runtime's own packages (boto3, awslambdaric when chosen), after the function's.
    runtime_paths: tuple[str, ...] = ()


def _joined(*parts: str) -> str:
    return os.pathsep.join(p for p in parts if p)


def python_path(prepared: Prepared, version: str, runtime_dir: str) -> str:
    """PYTHONPATH in Lambda's order: the code, the function's dependencies (on Lambda they
    are in the code package), the layers, the runtime's packages, the runtime itself."""
    opt = prepared.opt_dir
    return _joined(
        prepared.code_dir,
        prepared.deps_dir or "",
        os.path.join(opt, "python", "lib", f"python{version}", "site-packages"),
        os.path.join(opt, "python"),
        *prepared.runtime_paths,
        runtime_dir,
    )


def worker_spec(
    config: LocalFunctionConfig,
    ctx: BackendContext,
    prepared: Prepared,
    tmp_dir: str | None = None,
) -> WorkerSpec:
    """The command for the configured runtime, with the environment Lambda gives it. Only
    what Lambda would set is passed: nothing of the daemon's environment but PATH (with the
    layers' bin/ appended, as Lambda's /opt/bin) and LD_LIBRARY_PATH."""
    code_dir, opt = prepared.code_dir, prepared.opt_dir
    env: dict[str, str] = {
        "LANG": "en_US.UTF-8",
        "PATH": _joined(
            os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), os.path.join(opt, "bin")
        ),
    }
    if tmp_dir is not None:
        env["TMPDIR"] = tmp_dir
    env.update(config.environment)
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
    interpreter = prepared.interpreter
    if config.node:
        # Lambda's NODE_PATH: the layers' nodejs/ directories, the runtime's modules, the code.
        env["AWS_EXECUTION_ENV"] = "AWS_Lambda_" + config.runtime
        runtime_dir = _NODE_CLIENT
        major = config.runtime.removeprefix("nodejs").removesuffix(".x")
        env["NODE_PATH"] = os.pathsep.join(
            [
                os.path.join(opt, "nodejs", f"node{major}", "node_modules"),
                os.path.join(opt, "nodejs", "node_modules"),
                os.path.join(_NODE_CLIENT, "node_modules"),
                _NODE_CLIENT,
                code_dir,
            ]
        )
        node = config.interpreter or "node"
        argv: tuple[str, ...] = (node, os.path.join(_NODE_CLIENT, "index.mjs"))
    elif config.provided or interpreter is None:
        # OS-only runtimes: no AWS_EXECUTION_ENV; the bootstrap lives with the code.
        runtime_dir = code_dir
        argv = (os.path.join(code_dir, "bootstrap"),)
    else:
        env["AWS_EXECUTION_ENV"] = "AWS_Lambda_" + config.runtime
        # -S: no site-packages of the interpreter (nor the daemon's virtualenv); the function
        # sees PYTHONPATH and the standard library, as on Lambda.
        if config.runtime_client == "awslambdaric":
            runtime_dir = prepared.runtime_paths[-1] if prepared.runtime_paths else code_dir
            argv = (interpreter.path, "-S", "-m", "awslambdaric", config.handler)
        else:
            script = os.path.join(_CLIENT_DIR, "bootstrap.py")
            runtime_dir = os.path.dirname(script)
            argv = (interpreter.path, "-S", script)
        env["PYTHONPATH"] = python_path(prepared, runtime_version(config.runtime), runtime_dir)
    env["LAMBDA_RUNTIME_DIR"] = runtime_dir
    env["LD_LIBRARY_PATH"] = _joined(
        os.environ.get("LD_LIBRARY_PATH", ""),
        runtime_dir,
        os.path.join(runtime_dir, "lib"),
        code_dir,
        os.path.join(code_dir, "lib"),
        os.path.join(opt, "lib"),
    )
    # External extensions: every executable in the layers' extensions/ (Lambda's /opt/extensions).
    extensions = os.path.join(opt, "extensions")
    from triggerd.functions.backends.local_worker import WorkerSpec

    return WorkerSpec(
        argv=argv,
        cwd=code_dir,
        env=env,
        version=config.version,
        extensions_dir=extensions if os.path.isdir(extensions) else None,
    )
