"""SAM functions to triggerd `[functions.NAME]` tables: the Globals merge, the properties that
have a local equivalent, layers defined in the template, and a warning for every other one."""

from __future__ import annotations

import platform
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from triggerd.functions.backends.local_config import (
    NODE_RUNTIMES,
    PROVIDED_RUNTIMES,
    PYTHON_RUNTIMES,
)
from triggerd.imports.common import Overrides, Translation
from triggerd.imports.sam_template import NO_VALUE, Template, Unresolved

FUNCTION_TYPE = "AWS::Serverless::Function"
#: Function settings every backend has.
#: Settings every backend takes (memory_mb is the local backend's: others refuse it).
SHARED = {"backend", "timeout_s", "reserved_concurrency", "description"}
#: Where InlineCode is written, relative to the template.
INLINE_DIR = ".triggerd-inline"
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
LAYER_TYPES = ("AWS::Serverless::LayerVersion", "AWS::Lambda::LayerVersion")

#: Properties with no local meaning: a warning names each one present, with this reason.
IGNORED = {
    "AutoPublishAlias": "aliases are not published locally; the function runs as $LATEST",
    "AutoPublishCodeSha256": "aliases are not published locally",
    "AutoPublishAliasAllProperties": "aliases are not published locally",
    "DeploymentPreference": "deployments are not simulated locally",
    "VersionDescription": "versions are not published locally",
    "ProvisionedConcurrencyConfig": "needs an alias; set provisioned_concurrency in the "
    "overrides file's functions.<name>.settings",
    "Policies": "IAM policies are not enforced locally",
    "Role": "the function runs with the daemon's credentials (set role_arn in the overrides "
    "file's functions.<name>.settings to assume a role)",
    "RolePath": "IAM is not used locally",
    "PermissionsBoundary": "IAM is not used locally",
    "AssumeRolePolicyDocument": "IAM is not used locally",
    "Tracing": "X-Ray tracing is not configured per function (see [telemetry.otel])",
    "Tags": "tags have no local meaning",
    "PropagateTags": "tags have no local meaning",
    "VpcConfig": "the function uses this machine's network",
    "KmsKeyArn": "environment variables are not encrypted locally",
    "FileSystemConfigs": "EFS is not mounted locally",
    "CodeSigningConfigArn": "code signing is not checked locally",
    "SnapStart": "SnapStart is not simulated",
    "RuntimeManagementConfig": "the local interpreter of the runtime is used",
    "LoggingConfig": "logs go to triggerd's log (START/END/REPORT lines)",
    "EphemeralStorage": "/tmp is not limited locally",
    "FunctionUrlConfig": "function URLs are not served (add a webhook trigger with "
    'payload_format = "url")',
    "ImageConfig": "container images are not run by the local backend",
    "ImageUri": "container images are not run by the local backend",
    "RecursiveLoop": "recursion is not detected locally",
    "Connectors": "connectors are IAM permissions, not used locally",
    "SourceKMSKeyArn": "code is not encrypted locally",
    "CapacityProviderConfig": "no capacity providers locally",
    "FunctionScalingConfig": "no scaling configuration locally",
    "DurableConfig": "not simulated locally",
    "PublishToLatestPublished": "versions are not published locally",
    "TenancyConfig": "not simulated locally",
}

#: Properties carried over (those with events, invoke config and DLQ are read by `sam`).
CARRIED = {
    "Runtime",
    "Handler",
    "CodeUri",
    "InlineCode",
    "MemorySize",
    "Timeout",
    "Environment",
    "Layers",
    "Architectures",
    "ReservedConcurrentExecutions",
    "Description",
    "FunctionName",
    "PackageType",
    "Events",
    "EventInvokeConfig",
    "DeadLetterQueue",
}


@dataclass
class FunctionInfo:
    """What the event translation needs of a translated function."""

    name: str
    where: str
    properties: dict[str, Any]
    table: dict[str, Any] = field(default_factory=dict)


def merge_globals(globals_: dict[str, Any], props: dict[str, Any]) -> dict[str, Any]:
    """SAM's Globals rules: maps are merged (the function's keys win), lists are joined
    (Globals first), any other value of the function replaces the global one."""
    out = dict(globals_)
    for key, value in props.items():
        base = out.get(key)
        if isinstance(base, dict) and isinstance(value, dict) and not _intrinsic(value):
            out[key] = merge_globals(base, value)
        elif isinstance(base, list) and isinstance(value, list):
            out[key] = [*base, *value]
        else:
            out[key] = value
    return out


def runs_elsewhere(settings: Mapping[str, Any]) -> bool:
    """Whether the overrides give the function a backend other than local (http, aws): it
    then needs no local runtime, handler or code."""
    return str(settings.get("backend", "local")) != "local"


def other_backend(
    warn: Callable[[str, str], None], where: str, table: dict[str, Any], settings: Mapping[str, Any]
) -> None:
    """A function the overrides give another backend (http, aws) keeps the settings all
    backends share; the local backend's ones are left out with a warning."""
    if not runs_elsewhere(table):
        return
    for key in sorted(set(table) - SHARED - set(settings)):
        del table[key]
        warn(where, f"{key}: the {table['backend']} backend has no such setting: left out")


def _intrinsic(node: dict[str, Any]) -> bool:
    key = str(next(iter(node))) if len(node) == 1 else ""
    return key == "Ref" or key.startswith("Fn::")


def _host_architecture() -> str:
    machine = platform.machine().lower()
    return "arm64" if machine in ("aarch64", "arm64") else "x86_64"


class FunctionTranslator:
    """Builds one `[functions.NAME]` table; `properties` are already Globals-merged."""

    def __init__(self, tpl: Template, out: Translation, overrides: Overrides) -> None:
        self.tpl = tpl
        self.out = out
        self.overrides = overrides

    def value(self, node: Any, where: str) -> Any:
        """`node` resolved, or None with a warning naming `where`."""
        try:
            value = self.tpl.resolve(node)
            return None if value is NO_VALUE else value
        except Unresolved as exc:
            self.out.warn(where, f"not carried over: {exc}")
            return None

    def translate(self, logical_id: str, props: dict[str, Any]) -> FunctionInfo | None:
        where = f"Resources.{logical_id}.Properties"
        info = FunctionInfo(logical_id, where, props)
        table: dict[str, Any] = {"backend": "local"}
        settings = dict(self._override(logical_id).settings)
        for key in sorted(props):
            if key in IGNORED:
                self.out.warn(f"{where}.{key}", f"ignored: {IGNORED[key]}")
            elif key not in CARRIED:
                self.out.warn(f"{where}.{key}", "not carried over (no local equivalent)")
        if not self._code(logical_id, props, table, settings):
            return None
        self._scalars(where, props, table)
        self._environment(logical_id, where, props, table)
        self._layers(where, props, table)
        arch = self.value(props.get("Architectures"), f"{where}.Architectures")
        if isinstance(arch, list) and arch and str(arch[0]) != _host_architecture():
            self.out.warn(
                f"{where}.Architectures",
                f"the function is built for {arch[0]}; it runs here on {_host_architecture()} "
                "(native dependencies must be built for this machine)",
            )
        table.update(settings)
        other_backend(self.out.warn, where, table, settings)
        info.table = table
        return info

    def _override(self, logical_id: str) -> Any:
        from triggerd.imports.common import FunctionOverride

        return self.overrides.functions.get(logical_id, FunctionOverride())

    def _code(
        self,
        logical_id: str,
        props: dict[str, Any],
        table: dict[str, Any],
        settings: dict[str, Any],
    ) -> bool:
        """Runtime, handler and code; False (with a warning) when the function cannot run
        locally and the overrides give it no other backend or code."""
        where = f"Resources.{logical_id}.Properties"
        if runs_elsewhere(settings):
            return True
        package = self.value(props.get("PackageType", "Zip"), f"{where}.PackageType")
        if package == "Image" and "code" not in settings:
            self.out.warn(
                f"{where}.PackageType",
                "Image functions are not run by the local backend: function not translated "
                f"(give it a backend in the overrides file's functions.{logical_id}.settings)",
            )
            return False
        runtime = self.value(props.get("Runtime"), f"{where}.Runtime")
        handler = self.value(props.get("Handler"), f"{where}.Handler")
        local = PYTHON_RUNTIMES | NODE_RUNTIMES | PROVIDED_RUNTIMES
        if runtime is not None and str(runtime) not in local:
            self.out.warn(
                f"{where}.Runtime",
                f"runtime {runtime} is not run by the local backend: function not translated "
                f"(give it a backend in the overrides file's functions.{logical_id}.settings)",
            )
            return False
        if runtime is not None:
            table["runtime"] = str(runtime)
        elif "Runtime" not in props:
            self.out.warn(f"{where}.Runtime", "none given: python3.11, the local backend's default")
        if handler is not None:
            table["handler"] = str(handler)
        if "code" in settings:
            return True
        if "InlineCode" in props:
            return self._inline(logical_id, props, table)
        code = self.value(props.get("CodeUri", "."), f"{where}.CodeUri")
        if isinstance(code, str) and not code.startswith("s3://"):
            table["code"] = code
            return True
        self.out.warn(
            f"{where}.CodeUri",
            f"code in S3 ({code!r}) is not fetched: function not translated (name a local "
            f"directory in the overrides file's functions.{logical_id}.settings.code)",
        )
        return False

    def _inline(self, logical_id: str, props: dict[str, Any], table: dict[str, Any]) -> bool:
        """InlineCode: written to INLINE_DIR/<function>/<handler module>.py (or .js for
        Node.js), which becomes the function's code directory."""
        where = f"Resources.{logical_id}.Properties.InlineCode"
        code = self.value(props["InlineCode"], where)
        module = str(table.get("handler", "index.handler")).rsplit(".", 1)[0]
        runtime = str(table.get("runtime", "python3.11"))
        suffix = {"python": ".py", "nodejs": ".js"}.get(runtime.rstrip("0123456789.x"))
        if not isinstance(code, str) or suffix is None or not _MODULE.fullmatch(module):
            self.out.warn(
                where,
                "not written out (a Python or Node.js handler module.function is needed): "
                "function not translated",
            )
            return False
        directory = f"{INLINE_DIR}/{logical_id}"
        self.out.files[f"{directory}/{module}{suffix}"] = code
        table["code"] = directory
        self.out.warn(where, f"written to {directory}/{module}{suffix} beside the template")
        return True

    def _scalars(self, where: str, props: dict[str, Any], table: dict[str, Any]) -> None:
        for key, target, cast in (
            ("MemorySize", "memory_mb", int),
            ("Timeout", "timeout_s", float),
            ("ReservedConcurrentExecutions", "reserved_concurrency", int),
            ("Description", "description", str),
        ):
            if key not in props:
                continue
            value = self.value(props[key], f"{where}.{key}")
            if value is None:
                continue
            try:
                table[target] = cast(value)
            except (TypeError, ValueError):
                self.out.warn(
                    f"{where}.{key}", f"not carried over: {value!r} is not a {cast.__name__}"
                )
        if "FunctionName" in props:
            name = self.value(props["FunctionName"], f"{where}.FunctionName")
            self.out.warn(
                f"{where}.FunctionName",
                f"the function is named by its logical id locally, not {name!r}",
            )

    def _environment(
        self, logical_id: str, where: str, props: dict[str, Any], table: dict[str, Any]
    ) -> None:
        env: dict[str, str] = {}
        environment = props.get("Environment") or {}
        for key in environment:
            if key != "Variables":
                self.out.warn(f"{where}.Environment.{key}", "not carried over")
        for name, raw in (environment.get("Variables") or {}).items():
            value = self.value(raw, f"{where}.Environment.Variables.{name}")
            if value is None:
                continue
            if isinstance(value, bool):
                value = "true" if value else "false"
            if isinstance(value, list | dict):
                self.out.warn(f"{where}.Environment.Variables.{name}", "not a string: left out")
                continue
            env[str(name)] = str(value)
        env.update(self._override(logical_id).environment)
        if env:
            table["environment"] = env

    def _layers(self, where: str, props: dict[str, Any], table: dict[str, Any]) -> None:
        layers: list[str] = []
        for i, layer in enumerate(props.get("Layers") or []):
            here = f"{where}.Layers.{i}"
            ref = layer.get("Ref") if isinstance(layer, dict) else None
            if isinstance(ref, str) and self.tpl.resource_type(ref) in LAYER_TYPES:
                path = self._layer_path(ref)
                if path is None:
                    self.out.warn(here, f"layer {ref} has no local ContentUri: left out")
                else:
                    layers.append(path)
                continue
            value = self.value(layer, here)
            if value is not None:
                self.out.warn(
                    here, f"layer {value!r} is not defined in the template: not fetched, left out"
                )
        if layers:
            table["layers"] = layers

    def _layer_path(self, logical_id: str) -> str | None:
        props = self.tpl.resources[logical_id].get("Properties") or {}
        where = f"Resources.{logical_id}.Properties"
        content = props.get("ContentUri", props.get("Content"))
        value = self.value(content, f"{where}.ContentUri")
        if isinstance(value, str) and not value.startswith("s3://"):
            return value
        return None
