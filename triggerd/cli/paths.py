"""`triggerd validate`: the paths in a config that must exist on this machine (function
code, watched directories, certificate files) or that the daemon must be able to write
(destination files, the state store), found from the `PathCheck` metadata of the models'
fields (types.py), so a plugin's paths are checked without the CLI knowing the plugin."""

from __future__ import annotations

import os
import re
import ssl
import types
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel

from triggerd.config.model import ConfigBase
from triggerd.state.factory import sqlite_path
from triggerd.state.sqlite import MEMORY_PATH
from triggerd.types import ConfigError, PathCheck

__all__ = ["path_problems"]


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
