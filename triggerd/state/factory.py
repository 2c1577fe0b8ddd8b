"""Build the state store named by the `[daemon] state` setting.

Accepted forms (as SQLAlchemy spells SQLite URLs):

- `sqlite:///relative/path.db`  three slashes: relative to the current directory
- `sqlite:////absolute/path.db` four slashes: an absolute path
- `sqlite://` or `sqlite:///:memory:`  an in-memory database (tests only: nothing persists)
- `/some/path.db`, `state.db`, `~/state.db`  a plain filesystem path

- `postgresql://user:password@host:port/database[?pool_size=N&sslmode=...]` (also
  `postgres://`, `postgresql+asyncpg://`): the PostgreSQL store shared by several daemons
  (`state/postgres.py`; needs the `postgres` extra)

Error messages never repeat the URL, which may hold a password.
"""

from __future__ import annotations

import importlib.util
import os
import re
from typing import TYPE_CHECKING

from triggerd.state import MEMORY_PATH
from triggerd.types import Clock, ConfigError

if TYPE_CHECKING:
    from triggerd.state.base import StateStore
    from triggerd.state.postgres import PostgresStateStore

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_POSTGRES_SCHEMES = frozenset({"postgresql", "postgres"})
SUPPORTED_FORMS = (
    "sqlite:///relative/path.db, sqlite:////absolute/path.db, a plain file path or "
    "postgresql://user@host:port/database"
)


def create_state_store(url: str, *, clock: Clock | None = None) -> StateStore:
    """Return an unopened store for `url`; raises ConfigError for a URL it cannot serve."""
    if is_postgres_url(url):
        return postgres_store(url, clock=clock)
    from triggerd.state.sqlite import SQLiteStateStore  # sqlite3: not for reading a config

    return SQLiteStateStore(sqlite_path(url), clock=clock)


def check_state_url(url: str) -> None:
    """Raise ConfigError when `url` names no store this build can open (what
    `create_state_store` refuses), without building one: a config is read by commands that
    never open the store, and the SQLite store's module costs them sqlite3 and its thread."""
    if is_postgres_url(url):
        postgres_store(url)
    else:
        sqlite_path(url)


def is_postgres_url(url: str) -> bool:
    """Whether `url` names the PostgreSQL store (also importable from `pgschema`, whose
    imports a config's check of an SQLite URL does without)."""
    scheme = url.strip().split("://", 1)[0].lower() if "://" in url else ""
    return scheme.split("+", 1)[0] in _POSTGRES_SCHEMES


def postgres_store(url: str, *, clock: Clock | None = None) -> PostgresStateStore:
    """An unopened PostgreSQL store; ConfigError when asyncpg is missing or the URL is
    unusable (without the URL in the message)."""
    if importlib.util.find_spec("asyncpg") is None:
        raise _error("a postgresql:// state store needs asyncpg: install triggerd-daemon[postgres]")
    from triggerd.state.pgschema import parse_url
    from triggerd.state.postgres import PostgresStateStore

    return PostgresStateStore(parse_url(url), clock=clock)


def sqlite_path(url: str) -> str:
    """The SQLite file path `url` names (absolute), or ":memory:"."""
    url = url.strip()
    if not url:
        raise _error("it is empty; use " + SUPPORTED_FORMS)
    match = _SCHEME.match(url)
    if match is None:
        return os.path.abspath(os.path.expanduser(url))
    scheme = match.group(1).lower()
    base_scheme = scheme.split("+", 1)[0]  # "postgresql+asyncpg" -> "postgresql"
    if base_scheme in _POSTGRES_SCHEMES:
        raise _error("this is a PostgreSQL store, not an SQLite file")
    if scheme != "sqlite":
        raise _error(f"the scheme {scheme!r} is not supported; use " + SUPPORTED_FORMS)
    rest = url[match.end() :]
    if rest in ("", "/" + MEMORY_PATH):
        return MEMORY_PATH
    if not rest.startswith("/"):
        raise _error(
            "a sqlite URL takes no host: write sqlite:///relative.db or sqlite:////absolute.db"
        )
    if "?" in rest or "#" in rest:
        raise _error("a sqlite URL takes no query parameters or fragment")
    path = rest[1:]
    if not path:
        raise _error("the sqlite URL names no file")
    return os.path.abspath(path)


def _error(reason: str) -> ConfigError:
    return ConfigError([f"daemon.state: {reason}"])
