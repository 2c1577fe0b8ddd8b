"""Loading the config file: TOML (or YAML), `${VAR}` interpolation, validation against the
models built from the installed plugins (`model`), errors as one line per problem with its key
path, and the JSON Schema."""

from __future__ import annotations

import os
import re
import tomllib
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, Tag, ValidationError

from triggerd.config.model import (
    OPTIONAL_SECTIONS,
    ConfigBase,
    _did_you_mean,
    build_config_model,
    wire_problems,
)
from triggerd.config.plugins import Kind, Registry, install_hint
from triggerd.types import ConfigError

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def read_file(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        import yaml  # for YAML configs only: a TOML config's start-up need not import it

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError([f"{path}: invalid YAML: {exc}"]) from exc
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"{path}: invalid TOML: {exc}"]) from exc
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: the top level must be a table"])
    return data


def interpolate(data: Any, env: Mapping[str, str], path: str = "") -> tuple[Any, list[str]]:
    """Replace ${VAR} and ${VAR:-default} in every string; `$$` is a literal `$`."""
    problems: list[str] = []

    def sub(value: str, where: str) -> str:
        def one(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            var, default = m.group(1), m.group(2)
            if var in env and (env[var] != "" or default is None):
                return env[var]
            if default is not None:
                return default
            problems.append(f"{where or '<root>'}: environment variable {var} is not set")
            return ""

        return _VAR.sub(one, value)

    def walk(node: Any, where: str) -> Any:
        if isinstance(node, str):
            return sub(node, where)
        if isinstance(node, dict):
            return {k: walk(v, f"{where}.{k}" if where else str(k)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, f"{where}.{i}") for i, v in enumerate(node)]
        return node

    return walk(data, path), problems


def load_config(
    path: str | Path,
    registry: Registry,
    env: Mapping[str, str] | None = None,
) -> ConfigBase:
    """Read, interpolate and validate a config file; raises ConfigError with one line per
    problem, each naming the key path."""
    file = Path(path)
    try:
        raw = read_file(file)
    except OSError as exc:
        raise ConfigError([f"{file}: {exc.strerror or exc}"]) from exc
    data, problems = interpolate(raw, os.environ if env is None else env)
    problems += _check_plugin_types(data, registry)
    if problems:
        raise ConfigError(problems)
    return validate_data(data, registry, base_dir=file.resolve().parent)


def validate_data(data: dict[str, Any], registry: Registry, base_dir: Path) -> ConfigBase:
    model = model_for(data, registry)
    try:
        return model.model_validate(data, context={"base_dir": str(base_dir)})
    except ValidationError as exc:
        problems = format_errors(exc, model)
        # The model checks cross-references only once every field is valid: name the
        # broken ones now too, so one run reports every problem.
        problems += [p for p in _raw_wire_problems(data) if p not in problems]
        raise ConfigError(problems) from None


def model_for(data: dict[str, Any], registry: Registry) -> type[ConfigBase]:
    """The config model `data` is validated with: the plugins and optional sections it uses
    (what it does not use would be imported and built for nothing)."""
    sections = [key for key in OPTIONAL_SECTIONS if key in data]
    return build_config_model(registry, used_plugins(data, registry), sections)


def _raw_wire_problems(data: dict[str, Any]) -> list[str]:
    functions = data.get("functions")
    triggers = data.get("triggers")
    if not isinstance(functions, dict) or not isinstance(triggers, list):
        return []
    pairs = [
        (t.get("function"), t.get("name")) if isinstance(t, dict) else (None, None)
        for t in triggers
    ]
    return wire_problems([str(k) for k in functions], pairs)


def _plugin_tags(data: dict[str, Any]) -> list[tuple[Kind, Any]]:
    """The (kind, type) of every function, source and on-failure destination in `data`."""
    tags: list[tuple[Kind, Any]] = []
    for fn in (data.get("functions") or {}).values():
        if isinstance(fn, dict):
            tags.append(("backend", fn.get("backend", "local")))
    for trig in data.get("triggers") or []:
        if not isinstance(trig, dict):
            continue
        if isinstance(trig.get("source"), dict):
            tags.append(("source", trig["source"].get("type")))
        if isinstance(trig.get("on_failure"), dict):
            tags.append(("destination", trig["on_failure"].get("type")))
    for settings in (data.get("async_invocation") or {}).values():
        if isinstance(settings, dict) and isinstance(settings.get("on_failure"), dict):
            tags.append(("destination", settings["on_failure"].get("type")))
    return tags


def used_plugins(data: dict[str, Any], registry: Registry) -> dict[Kind, set[str]] | None:
    """The plugins `data` uses, by kind, when each is installed and loads: the config model
    needs only those (loading every connector to build it costs most of a command's start-up).
    None when one is missing, unknown or not a name: the model of every available plugin then
    gives the error its usual text."""
    used: dict[Kind, set[str]] = {"source": set(), "destination": set(), "backend": set()}
    for kind, tag in _plugin_tags(data):
        if not isinstance(tag, str) or not registry.is_available(kind, tag):
            return None
        used[kind].add(tag)
    return used


def _check_plugin_types(data: dict[str, Any], registry: Registry) -> list[str]:
    """Name a missing extra or an unknown type before pydantic's generic union message."""
    problems: list[str] = []

    def check(kind: Kind, value: Any, where: str, key: str, default: str | None) -> None:
        if not isinstance(value, dict):
            return
        tag = value.get(key, default)
        if not isinstance(tag, str):
            problems.append(f"{where}.{key}: required, one of: {', '.join(registry.names(kind))}")
            return
        if not registry.knows(kind, tag):
            hint = _did_you_mean(tag, registry.names(kind))
            problems.append(f"{where}.{key}: unknown {kind} type {tag!r}{hint}")
        elif not registry.is_available(kind, tag):
            problems.append(
                f"{where}.{key}: {kind} type {tag!r} is not installed: {install_hint(tag)}"
            )

    for name, fn in (data.get("functions") or {}).items():
        check("backend", fn, f"functions.{name}", "backend", "local")
    for i, trig in enumerate(data.get("triggers") or []):
        if isinstance(trig, dict):
            check("source", trig.get("source"), f"triggers.{i}.source", "type", None)
            if trig.get("on_failure") is not None:
                check("destination", trig["on_failure"], f"triggers.{i}.on_failure", "type", None)
    for name, settings in (data.get("async_invocation") or {}).items():
        if isinstance(settings, dict) and settings.get("on_failure") is not None:
            where = f"async_invocation.{name}.on_failure"
            check("destination", settings["on_failure"], where, "type", None)
    return problems


# --------------------------------------------------------------------------------------------
# Error messages


def _step(tp: Any, part: str | int) -> tuple[Any, bool]:
    """Follow one loc element through a type; returns (next type, shown in the path)."""
    origin = get_origin(tp)
    if origin is Annotated:
        inner, *meta = get_args(tp)
        if any(isinstance(m, Tag) and m.tag == part for m in meta):
            return inner, False
        return _step(inner, part)
    if origin in (Union, types.UnionType):
        for arm in get_args(tp):
            inner = arm
            if get_origin(arm) is Annotated:
                inner, *meta = get_args(arm)
                if any(isinstance(m, Tag) and m.tag == part for m in meta):
                    return inner, False
            if inner is type(None):
                continue
        non_none = [a for a in get_args(tp) if a is not type(None)]
        if len(non_none) == 1:
            return _step(non_none[0], part)
        return Any, True
    if origin is list and isinstance(part, int):
        return get_args(tp)[0], True
    if origin is dict:
        return get_args(tp)[1], True
    if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(part, str):
        field = tp.model_fields.get(part)
        return (field.annotation if field else Any), True
    return Any, True


def _fields_of(tp: Any) -> list[str]:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    non_none = [a for a in get_args(tp) if a is not type(None)] if get_origin(tp) else []
    if len(non_none) == 1:
        return _fields_of(non_none[0])
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return list(tp.model_fields)
    return []


def format_errors(exc: ValidationError, model: type[BaseModel]) -> list[str]:
    lines: list[str] = []
    for err in exc.errors(include_url=False):
        tp: Any = model
        shown: list[str] = []
        parent: Any = model
        for part in err["loc"]:
            parent = tp
            tp, visible = _step(tp, part)
            if visible:
                shown.append(str(part))
        where = ".".join(shown) or "<root>"
        msg = err["msg"]
        if err["type"] == "extra_forbidden" and shown:
            msg = "unknown key" + _did_you_mean(shown[-1], _fields_of(parent))
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        parts = msg.split("; ")
        if where == "<root>" or (err["type"] == "value_error" and not shown):
            lines.extend(parts)
        elif err["type"] == "value_error" and all(p.startswith(f"{where}.") for p in parts):
            lines.extend(parts)  # a model's own check naming its keys, one line per problem
        else:
            lines.append(f"{where}: {msg}")
    return lines


def json_schema(registry: Registry) -> dict[str, Any]:
    schema = build_config_model(registry).model_json_schema()
    schema["title"] = "triggerd configuration"
    return schema
