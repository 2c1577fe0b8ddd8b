"""serverless.yml `provider` and `functions` (and the local `layers`) as triggerd's local
functions: `[functions.NAME]` tables with `runtime`, `handler`, `code`, `memory_mb`,
`timeout_s`, `environment`, `layers`, `reserved_concurrency`, `provisioned_concurrency`.

Paths are written relative to the service directory (the serverless.yml's), which is the
base directory the translated config is validated and run with."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from triggerd.functions.backends.local_config import (
    NODE_RUNTIMES,
    PROVIDED_RUNTIMES,
    PYTHON_RUNTIMES,
)
from triggerd.imports.sam_functions import other_backend, runs_elsewhere
from triggerd.imports.serverless_context import SlsContext
from triggerd.imports.serverless_vars import Unresolved
from triggerd.imports.serverless_yaml import as_intrinsic

__all__ = ["AsyncSettings", "FunctionPlan", "translate_function"]

#: The Serverless Framework's defaults (AWS provider): 1024 MB, 6 s.
DEFAULT_MEMORY_MB = 1024
DEFAULT_TIMEOUT_S = 6
#: The runtime the framework deploys when none is set (v3 / v4).
DEFAULT_RUNTIME = {"3": "nodejs18.x", "4": "nodejs20.x"}
#: The runtimes the local backend runs; a function on another is skipped with a warning.
LOCAL_RUNTIMES = PYTHON_RUNTIMES | NODE_RUNTIMES | PROVIDED_RUNTIMES

#: Provider keys read here or by the events (the rest are deployment settings: warnings).
PROVIDER_KEYS = frozenset(
    {
        "name",
        "runtime",
        "memorySize",
        "timeout",
        "environment",
        "region",
        "stage",
        "layers",
        "httpApi",
    }
)
_FUNCTION_KEYS = frozenset(
    {
        "handler",
        "runtime",
        "memorySize",
        "timeout",
        "environment",
        "layers",
        "description",
        "reservedConcurrency",
        "provisionedConcurrency",
        "maximumRetryAttempts",
        "maximumEventAge",
        "destinations",
        "package",
        "events",
    }
)


@dataclass
class AsyncSettings:
    """A function's asynchronous-invocation settings, given to each of its asynchronous
    triggers (S3, schedule, ...), as Lambda applies them to every async invocation."""

    keys: dict[str, Any] = field(default_factory=dict)
    used: bool = False


@dataclass
class FunctionPlan:
    """A translated function: its `[functions.NAME]` table and async settings."""

    name: str
    table: dict[str, Any]
    async_settings: AsyncSettings


def translate_function(
    ctx: SlsContext, name: str, fn: dict[str, Any], version: str
) -> FunctionPlan | None:
    """The function's table, or None (with a warning) when it cannot run locally."""
    where = f"functions.{name}"
    entry = ctx.overrides.functions.get(name) if ctx.overrides is not None else None
    settings = dict(entry.settings) if entry is not None else {}
    # As SAM's side: a function the overrides give another backend (or, for an image,
    # code) is translated whatever its package or runtime.
    elsewhere = runs_elsewhere(settings)
    if "image" in fn and not elsewhere and "code" not in settings:
        ctx.warn(
            f"{where}.image",
            "container image functions cannot run locally: skipped (give it a backend in the "
            f"overrides file's functions.{name}.settings)",
        )
        return None
    provider = ctx.provider
    runtime = ctx.text(fn.get("runtime", provider.get("runtime")), f"{where}.runtime")
    if runtime is None and not elsewhere:
        runtime = DEFAULT_RUNTIME.get(version, DEFAULT_RUNTIME["4"])
        ctx.warn(f"{where}.runtime", f"not set: the framework's default {runtime} is used")
    if runtime not in LOCAL_RUNTIMES and not elsewhere:
        ctx.warn(
            f"{where}.runtime",
            f"{runtime} has no local runtime in triggerd: skipped (give it a backend in the "
            f"overrides file's functions.{name}.settings)",
        )
        return None
    table: dict[str, Any] = {"backend": "local", "code": "."}
    if runtime is not None:
        table["runtime"] = runtime
    if not elsewhere:
        table["handler"] = ctx.required_str(fn.get("handler"), f"{where}.handler")
        ctx.rest(fn, _FUNCTION_KEYS, where)
    else:
        ctx.rest(fn, (*_FUNCTION_KEYS, "image"), where)
    _sizes(ctx, fn, where, table)
    environment = _environment(ctx, name, fn, where)
    if environment:
        table["environment"] = environment
    layers = _layers(ctx, fn.get("layers", provider.get("layers")), f"{where}.layers")
    if layers:
        table["layers"] = layers
    description = ctx.text(fn.get("description"), f"{where}.description")
    if description:
        table["description"] = description
    for key, target in (
        ("reservedConcurrency", "reserved_concurrency"),
        ("provisionedConcurrency", "provisioned_concurrency"),
    ):
        value = ctx.integer(fn.get(key), f"{where}.{key}")
        if value is not None:
            table[target] = value
    _package(ctx, fn.get("package"), f"{where}.package", table)
    if elsewhere:
        table["backend"] = settings["backend"]
        other_backend(ctx.warn, where, table, settings)
    return FunctionPlan(name, table, _async(ctx, fn, where))


def _sizes(ctx: SlsContext, fn: dict[str, Any], where: str, table: dict[str, Any]) -> None:
    provider = ctx.provider
    memory = ctx.integer(fn.get("memorySize", provider.get("memorySize")), f"{where}.memorySize")
    timeout = ctx.number(fn.get("timeout", provider.get("timeout")), f"{where}.timeout")
    table["memory_mb"] = DEFAULT_MEMORY_MB if memory is None else memory
    table["timeout_s"] = DEFAULT_TIMEOUT_S if timeout is None else timeout


def _environment(ctx: SlsContext, name: str, fn: dict[str, Any], where: str) -> dict[str, str]:
    """provider.environment, then the function's, then the overrides' for this function."""
    entry = ctx.overrides.functions.get(name) if ctx.overrides is not None else None
    override = dict(entry.environment) if entry is not None else {}
    merged: dict[str, str] = {}
    for scope, values in (
        ("provider.environment", ctx.provider.get("environment")),
        (f"{where}.environment", fn.get("environment")),
    ):
        if values is None or isinstance(values, Unresolved):
            continue
        if not isinstance(values, dict):
            ctx.warn(scope, "must be a mapping: not carried over")
            continue
        for key, value in values.items():
            if key in override:
                continue
            if as_intrinsic(value) is not None:
                ctx.warn(
                    f"{scope}.{key}",
                    f"{as_intrinsic(value)} is resolved by CloudFormation: set {key} in the "
                    "overrides file's environment for this function",
                )
                merged.pop(key, None)
                continue
            text = ctx.text(value, f"{scope}.{key}")
            if text is None:
                merged.pop(key, None)  # unresolved here: not the provider's value either
            else:
                merged[key] = text
    merged.update({k: str(v) for k, v in override.items()})
    return merged


def layer_logical_id(name: str) -> str:
    """The CloudFormation logical id the framework gives local layer `name`
    (`common-libs` -> `CommonDashlibsLambdaLayer`)."""
    normal = name[:1].upper() + name[1:]
    return normal.replace("-", "Dash").replace("_", "Underscore") + "LambdaLayer"


def _layers(ctx: SlsContext, value: Any, where: str) -> list[str]:
    if value is None or isinstance(value, Unresolved):
        return []
    if not isinstance(value, list):
        ctx.warn(where, "must be a list: not carried over")
        return []
    declared = ctx.data.get("layers")
    local = declared if isinstance(declared, dict) else {}
    by_id = {layer_logical_id(k): k for k in local}
    out: list[str] = []
    for i, item in enumerate(value):
        intrinsic = as_intrinsic(item)
        layer = by_id.get(intrinsic.args) if intrinsic and intrinsic.name == "Ref" else None
        if layer is None:
            ctx.warn(
                f"{where}[{i}]",
                f"{item} is not a layer of this file's `layers` section (published layers "
                "are not downloaded): not carried over",
            )
            continue
        path = _layer_path(ctx, layer, local[layer])
        if path is not None:
            out.append(path)
    return out


def _layer_path(ctx: SlsContext, name: str, layer: Any) -> str | None:
    where = f"layers.{name}"
    if not isinstance(layer, dict):
        ctx.warn(where, "must be a mapping: not carried over")
        return None
    package = layer.get("package")
    artifact = package.get("artifact") if isinstance(package, dict) else None
    path = ctx.text(artifact if artifact is not None else layer.get("path"), f"{where}.path")
    if path is None:
        ctx.warn(where, "has neither path nor package.artifact: not carried over")
        return None
    for key in layer:
        if key not in ("path", "package", "name", "description"):
            ctx.warn(f"{where}.{key}", "has no local equivalent and is not carried over")
    return path


def _package(ctx: SlsContext, package: Any, where: str, table: dict[str, Any]) -> None:
    if not isinstance(package, dict):
        return
    for key, value in package.items():
        if key == "artifact" and isinstance(value, str):
            table["code"] = value  # a deployment .zip: the local backend extracts it
        elif key in ("patterns", "include", "exclude", "individually"):
            ctx.warn(
                f"{where}.{key}",
                "noted: the function runs from the service directory as it is (packaging "
                "patterns are not applied locally)",
            )
        else:
            ctx.warn(f"{where}.{key}", "has no local equivalent and is not carried over")


def _async(ctx: SlsContext, fn: dict[str, Any], where: str) -> AsyncSettings:
    """maximumRetryAttempts (0-2), maximumEventAge (60-21600 s), destinations.onFailure."""
    settings = AsyncSettings()
    retries = ctx.integer(fn.get("maximumRetryAttempts"), f"{where}.maximumRetryAttempts")
    if retries is not None:
        settings.keys["maximum_retry_attempts"] = retries
    age = ctx.integer(fn.get("maximumEventAge"), f"{where}.maximumEventAge")
    if age is not None:
        settings.keys["maximum_event_age_s"] = age
    destinations = fn.get("destinations")
    if isinstance(destinations, dict):
        for key, value in destinations.items():
            if key == "onFailure":
                target = on_failure(ctx, value, f"{where}.destinations.onFailure")
                if target is not None:
                    settings.keys["on_failure"] = target
            else:
                ctx.warn(f"{where}.destinations.{key}", "triggerd has only on-failure destinations")
    return settings


def on_failure(ctx: SlsContext, value: Any, where: str) -> dict[str, Any] | None:
    """An on-failure destination (an ARN, `{arn, type}`, or an intrinsic): the overrides'
    table for it, else an SQS queue's URL on AWS; other kinds need an override."""
    if isinstance(value, dict) and "arn" in value and as_intrinsic(value) is None:
        ctx.rest(value, ("arn", "type"), where)
        value = value["arn"]
    ref = ctx.reference(value, "queue", where)
    if ref is None:
        return None
    url = sqs_url(ref.arn)
    default = {"type": "sqs", "queue_url": url} if url else None
    entry = ctx.override(*ref.keys())
    table = default if entry is None else ctx.entry_table(entry, default, "sqs")
    if table is None or not ctx.reaches_local(table):
        # As SAM's side: no local queue, so a file, and no failed event is lost.
        return ctx.pending_file(where, f"no local destination for {ref.text}")
    table = ctx.local_source(ref, default, "sqs")
    if table is not None and table.get("type") == "rabbitmq" and ref.name:
        table = {"routing_key": ref.name, **table}  # the queue of the same name, as SAM's side
    return table


def sqs_url(arn: str | None) -> str | None:
    """The queue URL of an SQS queue ARN on AWS."""
    if not arn:
        return None
    parts = arn.split(":")
    if len(parts) != 6 or parts[2] != "sqs" or not parts[3] or not parts[4]:
        return None
    return f"https://sqs.{parts[3]}.amazonaws.com/{parts[4]}/{parts[5]}"
