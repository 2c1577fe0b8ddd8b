"""Serverless Framework (v3, v4) files as triggerd config: `translate_serverless`.

The file is read safely (`serverless_yaml`), its variables resolved (`serverless_vars`), each
function of `functions` becomes a local function (`serverless_functions`) and each of its
events a trigger (`serverless_events`, `serverless_streams`). Every property that is not
carried over is a warning naming its path; docs/serverless.md lists what maps to what."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from triggerd.imports.common import Translation, apply_trigger_overrides
from triggerd.imports.serverless_context import SlsContext
from triggerd.imports.serverless_events import translate_events
from triggerd.imports.serverless_functions import PROVIDER_KEYS, translate_function
from triggerd.imports.serverless_refs import OverridesLike
from triggerd.imports.serverless_vars import DEFAULT_ACCOUNT, Resolver
from triggerd.imports.serverless_yaml import read_yaml
from triggerd.types import ConfigError

__all__ = ["OverridesLike", "translate_serverless"]

#: Top-level keys read (or deliberately left: `custom` and `params` feed variables).
_TOP_KEYS = frozenset(
    {
        "service",
        "frameworkVersion",
        "provider",
        "functions",
        "layers",
        "custom",
        "params",
        "resources",
        "package",
        "plugins",
        "useDotenv",
    }
)


def translate_serverless(
    path: Path,
    *,
    overrides: OverridesLike | None,
    options: Mapping[str, str],
    environ: Mapping[str, str],
) -> Translation:
    """The triggerd config equivalent to the serverless.yml at `path`, and its warnings.
    `options` are the framework's CLI options (`stage`, `region`, any `${opt:X}`;
    `accountId` for `${aws:accountId}`); `environ` feeds `${env:X}`. Raises ConfigError
    (one line each) for a file that cannot be translated."""
    out = Translation()
    raw = read_yaml(path, str(path))
    resolver = Resolver(raw, path.parent, options, environ, out.warn)
    data = resolver.resolve_all()
    version = _version(data, out)
    provider = data.get("provider")
    if not isinstance(provider, dict) or provider.get("name", "aws") != "aws":
        raise ConfigError([f"{path}: provider.name must be aws (the only provider triggerd reads)"])
    region = resolver.region()
    ctx = SlsContext(
        data=data,
        service_dir=path.parent,
        overrides=overrides,
        region=region if isinstance(region, str) else "us-east-1",
        account=str(options.get("accountId", DEFAULT_ACCOUNT)),
        stage=str(resolver.stage()),
        out=out,
    )
    out.config = {"daemon": {"region": ctx.region}, "functions": {}, "triggers": []}
    if "accountId" in options:
        out.config["daemon"]["account_id"] = ctx.account
    _notes(ctx, data)
    functions = data.get("functions")
    if not isinstance(functions, dict):
        raise ConfigError([f"{path}: functions: required (a mapping of functions)"])
    for name, fn in functions.items():
        if not isinstance(fn, dict):
            out.warn(f"functions.{name}", "must be a mapping: skipped")
            continue
        plan = translate_function(ctx, name, fn, version)
        if plan is None:
            continue
        out.config["functions"][name] = plan.table
        out.config["triggers"].extend(translate_events(ctx, plan, fn.get("events")))
    if overrides is not None:
        _apply_overrides(ctx, overrides)
    out.fanout.apply(out.config, out.warn)
    return out


def _apply_overrides(ctx: SlsContext, overrides: OverridesLike) -> None:
    """The overrides file's keys set over the daemon table, functions (`settings`) and
    triggers (by name); a name that matches nothing is a warning."""
    config = ctx.out.config
    config["daemon"].update(overrides.daemon)
    for name, entry in overrides.functions.items():
        table = config["functions"].get(name)
        if table is None:
            ctx.warn(f"overrides.functions.{name}", "no function of that name was translated")
        else:
            table.update(entry.settings)
    names = [str(t["name"]) for t in config["triggers"]]
    for name in apply_trigger_overrides(config["triggers"], overrides.triggers):
        ctx.warn(
            f"overrides.triggers.{name}",
            f"no trigger of that name (the translated ones: {', '.join(names) or 'none'})",
        )


def _version(data: dict[str, Any], out: Translation) -> str:
    """The major version frameworkVersion names (3 or 4; read as 4 when absent)."""
    given = str(data.get("frameworkVersion", "4")).lstrip("^~>=< ")
    major = given.split(".")[0]
    if major not in ("3", "4"):
        out.warn("frameworkVersion", f"{given!r}: read as a v4 file (v3 and v4 are supported)")
        return "4"
    return major


def _notes(ctx: SlsContext, data: dict[str, Any]) -> None:
    """Warnings for what a local run leaves out: deployment settings and the like."""
    ctx.rest(ctx.provider, PROVIDER_KEYS, "provider")
    http_api = ctx.provider.get("httpApi")
    if isinstance(http_api, dict):
        ctx.rest(http_api, ("payload", "cors"), "provider.httpApi")
    for key in data:
        if key not in _TOP_KEYS:
            ctx.warn(key, "has no local equivalent and is not carried over")
    if "resources" in data:
        ctx.warn(
            "resources",
            "CloudFormation resources are not created; events that name them are mapped "
            "through the overrides file (or their declared names)",
        )
    if "useDotenv" in data:
        ctx.warn(
            "useDotenv",
            ".env files are not read: export their variables in the environment of the "
            "command (they feed ${env:...}), or set them in the overrides file",
        )
    if "plugins" in data:
        ctx.warn("plugins", "plugins are not run (serverless-offline's job is triggerd's here)")
    package = data.get("package")
    if isinstance(package, dict):
        for key in package:
            ctx.warn(f"package.{key}", "noted: functions run from the service directory as is")
