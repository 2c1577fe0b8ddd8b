"""`triggerd validate`: the paths in a config that must exist on this machine (function
code, watched directories, certificate files) or that the daemon must be able to write
(destination files, the state store), found from the `PathCheck` metadata of the models'
fields (types.py), so a plugin's paths are checked without the CLI knowing the plugin."""

from __future__ import annotations

import os
import re
import types
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, Tag

from triggerd.config.model import ConfigBase
from triggerd.config.plugins import Registry
from triggerd.state import MEMORY_PATH
from triggerd.state.factory import sqlite_path
from triggerd.types import ConfigError, PathCheck

__all__ = ["path_problems", "raw_path_problems", "tls_problems"]


def path_problems(cfg: ConfigBase, *, state: bool = True) -> list[str]:
    """One line per path that is missing, of the wrong kind, or not writable (blocking file
    system calls: run it off the event loop). `state=False` leaves out the state store,
    which `run` opens itself (with its own exit statuses)."""
    problems: list[str] = []
    _walk(cfg.daemon, "daemon", problems)
    for name, fn in cfg.functions.items():
        _walk(fn, f"functions.{name}", problems)
    for i, trig in enumerate(cfg.trigger_list):
        _walk(trig, f"triggers.{i}", problems)
    problems += tls_problems(cfg)
    if not state:
        return problems
    try:
        db = sqlite_path(cfg.daemon.state)
    except ConfigError:
        db = MEMORY_PATH  # reported by the model already
    if db != MEMORY_PATH:
        problems += _check("writable", db, "daemon.state")
    return problems


def raw_path_problems(path: str, registry: Registry) -> list[str]:
    """The path problems of a config that does not validate: its values are walked beside
    the model's types, so a missing code directory is named in the same run as a field
    error elsewhere (fields that are not valid strings are left to the field errors)."""
    from triggerd.config.load import interpolate, model_for, read_file

    file = Path(path)
    try:
        raw = read_file(file)
    except (OSError, ValueError, ConfigError):
        return []
    data, _ = interpolate(raw, os.environ)
    model = model_for(data, registry)
    problems: list[str] = []
    _walk_raw(model, data, "", file.resolve().parent, problems)
    return problems


def _walk_raw(tp: Any, value: Any, where: str, base: Path, problems: list[str]) -> None:
    origin = get_origin(tp)
    if origin is Annotated:
        inner, *meta = get_args(tp)
        kind = next((m.kind for m in meta if isinstance(m, PathCheck)), None)
        if kind is not None and isinstance(value, str):
            problems.extend(_check(kind, str(base / Path(value).expanduser()), where))
            return
        _walk_raw(inner, value, where, base, problems)
    elif origin in (Union, types.UnionType):
        arms = [a for a in get_args(tp) if a is not type(None)]
        arm = arms[0] if len(arms) == 1 else _tagged_arm(arms, value)
        if arm is not None:
            _walk_raw(arm, value, where, base, problems)
    elif origin is list and isinstance(value, list):
        for i, item in enumerate(value):
            _walk_raw(get_args(tp)[0], item, f"{where}.{i}", base, problems)
    elif origin is dict and isinstance(value, dict):
        for key, item in value.items():
            _walk_raw(get_args(tp)[1], item, f"{where}.{key}", base, problems)
    elif isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(value, dict):
        _walk_raw_model(tp, value, where, base, problems)


def _walk_raw_model(
    tp: type[BaseModel], value: dict[str, Any], where: str, base: Path, problems: list[str]
) -> None:
    for name, info in tp.model_fields.items():
        if name not in value:
            continue
        here = f"{where}.{name}" if where else name
        kind = next((m.kind for m in info.metadata if isinstance(m, PathCheck)), None)
        if kind is not None and isinstance(value[name], str):
            problems.extend(_check(kind, str(base / Path(value[name]).expanduser()), here))
        else:
            _walk_raw(info.annotation, value[name], here, base, problems)


def _tagged_arm(arms: list[Any], value: Any) -> Any:
    """The plugin model a dict names by its `type` (sources, destinations) or `backend`
    (functions, "local" when absent)."""
    if not isinstance(value, dict):
        return None
    for arm in arms:
        if get_origin(arm) is Annotated:
            inner, *meta = get_args(arm)
            for m in meta:
                tags = (value.get("type"), value.get("backend", "local"))
                if isinstance(m, Tag) and m.tag in tags:
                    return inner
    return None


def _walk(model: Any, where: str, problems: list[str]) -> None:
    if not isinstance(model, BaseModel):
        return
    for name, info in type(model).model_fields.items():
        value = getattr(model, name, None)
        kind = _kind(info.annotation, info.metadata)
        here = f"{where}.{name}"
        if kind is not None:
            values = value if isinstance(value, list) else [value]
            for i, item in enumerate(values):
                if isinstance(item, str):
                    at = f"{here}.{i}" if isinstance(value, list) else here
                    problems += _check(kind, item, at)
        elif isinstance(value, BaseModel):
            _walk(value, here, problems)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                _walk(item, f"{here}.{i}", problems)


def _kind(annotation: Any, metadata: list[Any]) -> str | None:
    """The PathCheck kind on a field: in its own metadata or inside `X | None`, `list[X]`."""
    for meta in metadata:
        if isinstance(meta, PathCheck):
            return meta.kind
    origin = get_origin(annotation)
    if origin is Annotated:
        inner, *meta = get_args(annotation)
        return _kind(inner, meta)
    if origin in (Union, types.UnionType, list):
        for arg in get_args(annotation):
            found = _kind(arg, [])
            if found is not None:
                return found
    return None


def _check(kind: str, path: str, where: str) -> list[str]:
    p = Path(path)
    if kind == "file":
        if not p.is_file():
            return [
                f"{where}: {path} does not exist"
                if not p.exists()
                else f"{where}: {path} is not a file"
            ]
        if not os.access(p, os.R_OK):
            return [f"{where}: {path} cannot be read (permissions)"]
    elif kind == "dir":
        if not p.is_dir():
            return [
                f"{where}: {path} is not a directory"
                if p.exists()
                else f"{where}: {path} does not exist"
            ]
    elif kind == "code":
        if path.lower().endswith(".zip"):
            if not p.is_file():
                return [f"{where}: {path} does not exist"]
        elif not p.is_dir():
            return [f"{where}: {path} is not a directory or a .zip file"]
    elif kind == "writable":
        return _writable(p, where)
    elif kind == "writable_dir":
        return _writable_dir(p, where)
    return []


def _writable_dir(p: Path, where: str) -> list[str]:
    if p.exists():
        if not p.is_dir():
            return [f"{where}: {p} is not a directory"]
        if not os.access(p, os.W_OK | os.X_OK):
            return [f"{where}: {p} cannot be written (permissions)"]
        return []
    return _writable(p, where)


def tls_problems(cfg: ConfigBase) -> list[str]:
    """The certificate and key load as the listeners will load them (a file that exists
    but holds no certificate, a key that does not match, a passphrase-protected key)."""
    cert, key = cfg.daemon.tls_cert_file, cfg.daemon.tls_key_file
    if not cert or not os.access(cert, os.R_OK) or (key and not os.access(key, os.R_OK)):
        return []  # missing or unreadable: the path checks said so
    import ssl  # for a config that serves TLS only

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # A password callback that gives none: an encrypted key fails here instead of
        # prompting on the terminal.
        context.load_cert_chain(cert, key, password=lambda: b"")
    except (ssl.SSLError, OSError) as exc:
        where = "daemon.tls_cert_file" if key is None else "daemon.tls_cert_file/tls_key_file"
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        reason = re.sub(r" \(_ssl\.c:\d+\)$", "", reason)  # where in CPython: not for people
        return [f"{where}: {cert} cannot be loaded as a PEM certificate and key: {reason}"]
    return []


def _writable(p: Path, where: str) -> list[str]:
    if p.exists():
        if p.is_dir():
            return [f"{where}: {p} is a directory, not a file"]
        if not os.access(p, os.W_OK):
            return [f"{where}: {p} cannot be written (permissions)"]
        return []
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return [f"{where}: {parent} is not a directory, so {p} cannot be created"]
    if not os.access(parent, os.W_OK | os.X_OK):
        return [f"{where}: {p} cannot be created: {parent} is not writable"]
    return []
