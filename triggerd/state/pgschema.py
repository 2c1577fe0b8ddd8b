"""The PostgreSQL state store's URL and schema: parsing `postgresql://` URLs (the password
never leaves this module's DSN), the tables, and their migration under an advisory lock.

Every table lives in the `triggerd` schema of the database the URL names, so the store
shares a database with other applications without name clashes. `triggerd.schema_version`
holds one row per applied migration; a database migrated by a newer triggerd is refused.
"""

from __future__ import annotations

import logging
import urllib.parse
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from triggerd.state.factory import is_postgres_url as is_postgres_url
from triggerd.types import ConfigError, ExitCode

if TYPE_CHECKING:
    import asyncpg

log = logging.getLogger(__name__)

SCHEMA = "triggerd"
#: pg_advisory_xact_lock key of migrations ("triggerd" in ASCII, as a bigint).
MIGRATION_LOCK = 0x7472696767657264 & 0x7FFFFFFFFFFFFFFF
#: Connections per daemon unless the URL says `pool_size=N`.
DEFAULT_POOL_SIZE = 4
MIN_POOL_SIZE = 2
MAX_POOL_SIZE = 100

#: Each entry migrates the schema from version i to i + 1.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        f"""CREATE TABLE {SCHEMA}.meta (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        )""",
        # Keys compare by code point (COLLATE "C"), so a prefix is a primary-key range.
        f"""CREATE TABLE {SCHEMA}.checkpoints (
            scope TEXT COLLATE "C" NOT NULL,
            key TEXT COLLATE "C" NOT NULL,
            value TEXT NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (scope, key)
        )""",
        f"""CREATE TABLE {SCHEMA}.queue (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            trigger TEXT NOT NULL,
            function TEXT NOT NULL,
            payload BYTEA NOT NULL,
            request_id TEXT NOT NULL UNIQUE,
            enqueued_at DOUBLE PRECISION NOT NULL,
            available_at DOUBLE PRECISION NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            trace_id TEXT,
            claimed_by TEXT,
            claimed_until DOUBLE PRECISION
        )""",
        f"CREATE INDEX queue_claim ON {SCHEMA}.queue (trigger, available_at, id)",
        f"""CREATE TABLE {SCHEMA}.dlq (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            token TEXT NOT NULL UNIQUE,
            trigger TEXT NOT NULL,
            function TEXT NOT NULL,
            destination TEXT NOT NULL,
            condition TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            record BYTEA NOT NULL
        )""",
        f"CREATE INDEX dlq_trigger ON {SCHEMA}.dlq (trigger, created_at)",
        f"""CREATE TABLE {SCHEMA}.paused_triggers (
            trigger TEXT PRIMARY KEY,
            paused_at DOUBLE PRECISION NOT NULL
        )""",
    ),
    (
        # An event bus's archive (`[event_buses.archive]`), replayed by `triggerd events
        # replay`: each event as it was put on the bus, by ingestion time.
        f"""CREATE TABLE {SCHEMA}.event_archive (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            bus TEXT NOT NULL,
            event_id TEXT NOT NULL,
            ingested_at DOUBLE PRECISION NOT NULL,
            event BYTEA NOT NULL
        )""",
        f"CREATE INDEX event_archive_time ON {SCHEMA}.event_archive (bus, ingested_at)",
        # Topics and subscriptions created through the SNS API (triggerd.fanout.sns).
        f"""CREATE TABLE {SCHEMA}.sns_resources (
            arn TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            doc BYTEA NOT NULL,
            created_at DOUBLE PRECISION NOT NULL
        )""",
    ),
    (
        # Leases of the sources that run once across the cluster (triggerd.state.leases):
        # the epoch grows on every change of holder and fences the holder's checkpoint
        # writes; times are epoch seconds of the database's clock. A released lease keeps
        # its row (holder NULL) so that its epoch never goes back.
        f"""CREATE TABLE {SCHEMA}.leases (
            name TEXT PRIMARY KEY,
            holder TEXT,
            epoch BIGINT NOT NULL,
            expires_at DOUBLE PRECISION NOT NULL,
            heartbeat DOUBLE PRECISION NOT NULL
        )""",
        # The daemons using the store (`triggerd status`): each updates its heartbeat
        # (database clock) while it runs and deletes its row when it stops.
        f"""CREATE TABLE {SCHEMA}.members (
            member TEXT PRIMARY KEY,
            started_at DOUBLE PRECISION NOT NULL,
            heartbeat DOUBLE PRECISION NOT NULL
        )""",
    ),
    # The last failed attempt's outcome of a released event (QueuedEvent.last_result).
    (f"ALTER TABLE {SCHEMA}.queue ADD COLUMN last_result BYTEA",),
)

#: The schema version this code writes.
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True, slots=True)
class PgUrl:
    """A parsed state URL: `dsn` (with the password: for asyncpg only), `display` (without
    it: for logs and errors) and triggerd's own options."""

    dsn: str
    display: str
    pool_size: int

    def __repr__(self) -> str:  # never the DSN, which may hold the password
        return f"PgUrl({self.display!r}, pool_size={self.pool_size})"


def parse_url(url: str) -> PgUrl:
    """Parse `postgresql://user:password@host:port/db?pool_size=N&...`; query parameters
    other than pool_size go to asyncpg (sslmode, connect_timeout, ...). ConfigError (never
    naming the password) for a URL that cannot be used."""
    parts = urllib.parse.urlsplit(url.strip())
    try:
        port = parts.port
    except ValueError:
        raise _error("the port of the postgresql URL is not a number") from None
    host = parts.hostname or ""
    database = urllib.parse.unquote(parts.path.lstrip("/"))
    user = urllib.parse.unquote(parts.username or "")
    display_host = f"[{host}]" if ":" in host else host
    display = f"postgresql://{user + '@' if user else ''}{display_host}"
    display += f":{port}" if port else ""
    display += f"/{database}" if database else ""
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    pool_size = DEFAULT_POOL_SIZE
    rest: list[tuple[str, str]] = []
    for key, value in query:
        if key != "pool_size":
            rest.append((key, value))
            continue
        if not value.isdigit() or not MIN_POOL_SIZE <= int(value) <= MAX_POOL_SIZE:
            raise _error(
                f"pool_size in the postgresql URL must be a whole number from {MIN_POOL_SIZE} "
                f"to {MAX_POOL_SIZE}"
            )
        pool_size = int(value)
    if parts.fragment:
        raise _error("a postgresql URL takes no fragment (#...)")
    dsn = urllib.parse.urlunsplit(
        ("postgresql", parts.netloc, parts.path, urllib.parse.urlencode(rest), "")
    )
    return PgUrl(dsn=dsn, display=display, pool_size=pool_size)


def redact_state_url(url: str) -> str:
    """The state URL as it may be shown: a postgresql:// URL without its password (and
    without query parameters, which may hold key passphrases); anything else as it is."""
    if not is_postgres_url(url):
        return url
    try:
        return parse_url(url).display
    except ConfigError:
        return "postgresql://..."


def _error(reason: str) -> ConfigError:
    return ConfigError([f"daemon.state: {reason}"])


async def migrate(conn: asyncpg.Connection, display: str) -> tuple[int, str]:
    """Create or migrate the schema; two daemons starting at once are serialised by a
    transaction-level advisory lock, so the second finds the work done. Returns the schema
    version and the store's identity."""
    from triggerd.state.sqlite import StateStoreOpenError  # not for reading a config

    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        await conn.execute(
            f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.schema_version (
                version INTEGER PRIMARY KEY,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )"""
        )
        current = int(
            await conn.fetchval(f"SELECT coalesce(max(version), 0) FROM {SCHEMA}.schema_version")
        )
        if current > SCHEMA_VERSION:
            raise StateStoreOpenError(
                f"the state store {display} has schema version {current}, newer than this "
                f"triggerd supports ({SCHEMA_VERSION}): upgrade triggerd"
            )
        for version in range(current, SCHEMA_VERSION):
            for statement in MIGRATIONS[version]:
                await conn.execute(statement)
            await conn.execute(
                f"INSERT INTO {SCHEMA}.schema_version (version) VALUES ($1)", version + 1
            )
            log.info("state.migrated", extra={"store": display, "schema_version": version + 1})
        await conn.execute(
            f"INSERT INTO {SCHEMA}.meta (key, value) VALUES ('store_id', $1) "
            "ON CONFLICT (key) DO NOTHING",
            str(uuid.uuid4()),
        )
        store_id = await conn.fetchval(f"SELECT value FROM {SCHEMA}.meta WHERE key = 'store_id'")
    return SCHEMA_VERSION, str(store_id)


async def existing_schema(conn: asyncpg.Connection, display: str) -> tuple[int, str]:
    """The version and identity of a store triggerd created, without changing anything;
    StateStoreOpenError (STATE_MISSING) for a database without it, or one of another
    version."""
    from triggerd.state.sqlite import StateStoreOpenError  # not for reading a config

    exists = await conn.fetchval(f"SELECT to_regclass('{SCHEMA}.schema_version') IS NOT NULL")
    if not exists:
        raise StateStoreOpenError(
            f"the state store {display} holds no triggerd state (the daemon has not run "
            "with it yet)",
            ExitCode.STATE_MISSING,
        )
    current = int(
        await conn.fetchval(f"SELECT coalesce(max(version), 0) FROM {SCHEMA}.schema_version")
    )
    if current != SCHEMA_VERSION:
        raise StateStoreOpenError(
            f"the state store {display} has schema version {current}, this triggerd "
            f"uses {SCHEMA_VERSION}: run the daemon of the matching version"
        )
    store_id = await conn.fetchval(f"SELECT value FROM {SCHEMA}.meta WHERE key = 'store_id'")
    return current, str(store_id)
