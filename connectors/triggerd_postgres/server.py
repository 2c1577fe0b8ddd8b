"""Talking to the server about everything but the changes themselves: connecting (errors
classified), the preconditions (wal_level, REPLICATION, encoding, replica identities), the
publication and the slot (created, or reused after checking them), catalog look-ups, slot lag,
and dropping the slot and publication on request.

Every problem the operator must fix is a `ConfigError` with one line naming the setting and
the fix; a server that cannot be reached is a `RetryableError`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from triggerd.config.plugins import import_extra
from triggerd.types import ConfigError, RetryableError

from .config import Connection, PostgresSourceConfig

if TYPE_CHECKING:
    import asyncpg

__all__ = [
    "SlotLag",
    "check_server",
    "check_tables",
    "connect",
    "drop_slot_and_publication",
    "ensure_publication",
    "ensure_slot",
    "invalidated_message",
    "primary_key",
    "quote_ident",
    "slot_lag",
]

#: How long a daemon waits for a slot another daemon is creating (the server waits out the
#: transactions running when a slot is created) before its start is retried.
SLOT_CREATION_WAIT_S = 30.0

#: Session settings under which pgoutput's text values have the forms pgtypes.py expects.
SESSION_SETTINGS = {
    "DateStyle": "ISO, YMD",
    "TimeZone": "UTC",
    "IntervalStyle": "iso_8601",
    "bytea_output": "hex",
    "extra_float_digits": "1",
}


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _qualified(schema: str, table: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(table)}"


async def connect(cfg: Connection, trigger: str, purpose: str) -> asyncpg.Connection:
    """A connection with the session settings above; errors become ConfigError (credentials,
    database) or RetryableError (server unreachable)."""
    import_extra("asyncpg", "postgres", "the postgres source")
    import asyncpg

    kwargs: dict[str, Any] = {
        "timeout": cfg.connect_timeout_s,
        "server_settings": {
            **SESSION_SETTINGS,
            "application_name": f"triggerd:{trigger}:{purpose}",
        },
        "statement_cache_size": 0,
    }
    if cfg.dsn is not None:
        kwargs["dsn"] = cfg.dsn.get_secret_value()
    else:
        kwargs.update(host=cfg.host, port=cfg.port, user=cfg.user, database=cfg.database)
        if cfg.password is not None:
            kwargs["password"] = cfg.password.get_secret_value()
    where = cfg.display()
    try:
        conn: asyncpg.Connection = await asyncpg.connect(**kwargs)
    except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError) as exc:
        raise ConfigError([f"trigger {trigger!r}: {where}: login refused: {exc}"]) from None
    except asyncpg.InvalidCatalogNameError:
        raise ConfigError(
            [f"trigger {trigger!r}: {where}: database {cfg.database_name!r} does not exist"]
        ) from None
    except (OSError, TimeoutError, asyncpg.CannotConnectNowError) as exc:
        raise RetryableError(f"{where}: cannot connect: {exc}") from None
    return conn


async def check_server(conn: asyncpg.Connection, cfg: PostgresSourceConfig, trigger: str) -> int:
    """wal_level, the REPLICATION attribute, the encoding; returns the server version."""
    where = f"trigger {trigger!r}: {cfg.display()}"
    wal_level = await conn.fetchval("SHOW wal_level")
    if wal_level != "logical":
        raise ConfigError(
            [
                f"{where}: wal_level is {wal_level!r}, logical decoding needs wal_level = logical "
                "(ALTER SYSTEM SET wal_level = logical, then restart PostgreSQL)"
            ]
        )
    row = await conn.fetchrow(
        "SELECT rolname, rolreplication OR rolsuper AS ok FROM pg_roles "
        "WHERE rolname = current_user"
    )
    if row is None or not row["ok"]:
        role = row["rolname"] if row is not None else cfg.user_name
        raise ConfigError(
            [
                f"{where}: role {role!r} lacks the REPLICATION attribute, needed for replication "
                f"slots (ALTER ROLE {quote_ident(role)} REPLICATION)"
            ]
        )
    encoding = await conn.fetchval("SHOW server_encoding")
    if encoding not in ("UTF8", "SQL_ASCII"):
        raise ConfigError([f"{where}: server_encoding {encoding!r} is not supported (only UTF8)"])
    version = int(await conn.fetchval("SHOW server_version_num"))
    if cfg.schemas and version < 150000:
        raise ConfigError(
            [f"{where}: schemas needs PostgreSQL 15 or later (TABLES IN SCHEMA); list tables"]
        )
    return version


@dataclass(frozen=True, slots=True)
class TableInfo:
    schema: str
    name: str
    identity: str
    has_pk: bool


_TABLES_SQL = """
SELECT n.nspname AS schema, c.relname AS name, c.relreplident::text AS identity,
       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) AS has_pk
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
  AND ((n.nspname, c.relname) IN (SELECT s, t FROM unnest($1::text[], $2::text[]) AS u(s, t))
       OR n.nspname = ANY($3::text[]))
"""

_IDENTITY_NAMES = {"d": "DEFAULT", "n": "NOTHING", "f": "FULL", "i": "USING INDEX"}


async def check_tables(
    conn: asyncpg.Connection, cfg: PostgresSourceConfig, trigger: str
) -> list[TableInfo]:
    """The captured tables; ConfigError (one line per table) when one is missing, has no
    replica identity, or lacks REPLICA IDENTITY FULL that the stream view type needs."""
    names = cfg.table_names
    rows = await conn.fetch(
        _TABLES_SQL, [s for s, _ in names], [t for _, t in names], list(cfg.schemas)
    )
    tables = [TableInfo(r["schema"], r["name"], r["identity"], r["has_pk"]) for r in rows]
    found = {(t.schema, t.name) for t in tables}
    where = f"trigger {trigger!r}: source"
    problems = [
        f"{where}.tables: table {s}.{t} does not exist" for s, t in names if (s, t) not in found
    ]
    for t in sorted(tables, key=lambda t: (t.schema, t.name)):
        qualified = f"{t.schema}.{t.name}"
        if t.identity == "n" or (t.identity == "d" and not t.has_pk):
            problems.append(
                f"{where}.tables: {qualified} has no replica identity (no primary key): once "
                "published, UPDATE and DELETE on it fail; add a primary key or "
                f"ALTER TABLE {_qualified(t.schema, t.name)} REPLICA IDENTITY FULL"
            )
        elif cfg.needs_old_image and t.identity != "f":
            problems.append(
                f"{where}.stream_view_type: {cfg.stream_view_type} needs REPLICA IDENTITY FULL "
                f"on {qualified} (it is {_IDENTITY_NAMES.get(t.identity, t.identity)}): "
                f"ALTER TABLE {_qualified(t.schema, t.name)} REPLICA IDENTITY FULL"
            )
    if problems:
        raise ConfigError(problems)
    return tables


#: Why a recording refuses a trigger whose slot or publication does not exist yet.
NOT_CREATED_BY_RECORD = (
    "does not exist, and `triggerd record` creates nothing (a slot it left behind would keep "
    "WAL on the server): run the trigger once (triggerd run) to create it, then record"
)


async def ensure_publication(
    conn: asyncpg.Connection,
    cfg: PostgresSourceConfig,
    name: str,
    trigger: str,
    version: int,
    *,
    create: bool = True,
) -> bool:
    """Create the publication (unless not `create`: ConfigError), or check that an existing
    one publishes what the config asks for. Returns True when it was created."""
    where = f"trigger {trigger!r}: source.publication"
    pub = await conn.fetchrow(
        "SELECT oid, pubinsert, pubupdate, pubdelete, pubtruncate, puballtables "
        "FROM pg_publication WHERE pubname = $1",
        name,
    )
    wanted_tables = {f"{s}.{t}" for s, t in cfg.table_names}
    wanted_schemas = set(cfg.schemas)
    if pub is None and not create:
        raise ConfigError([f"{where}: publication {name} {NOT_CREATED_BY_RECORD}"])
    if pub is None:
        parts = []
        if cfg.tables:
            parts.append("TABLE " + ", ".join(_qualified(s, t) for s, t in cfg.table_names))
        if cfg.schemas:
            parts.append("TABLES IN SCHEMA " + ", ".join(quote_ident(s) for s in cfg.schemas))
        import asyncpg

        try:
            await conn.execute(f"CREATE PUBLICATION {quote_ident(name)} FOR {', '.join(parts)}")
        except (asyncpg.DuplicateObjectError, asyncpg.UniqueViolationError):
            # Another daemon of the cluster created it at the same moment: check theirs.
            return await ensure_publication(conn, cfg, name, trigger, version, create=False)
        return True
    missing = [op for op in ("insert", "update", "delete", "truncate") if not pub[f"pub{op}"]]
    problems = []
    if missing:
        problems.append(
            f"{where}: {name} does not publish {', '.join(missing)} "
            f"(ALTER PUBLICATION {quote_ident(name)} SET (publish = "
            "'insert, update, delete, truncate'))"
        )
    if pub["puballtables"]:
        problems.append(f"{where}: {name} is FOR ALL TABLES; triggerd needs one for its tables")
    else:
        rows = await conn.fetch(
            "SELECT n.nspname || '.' || c.relname AS t FROM pg_publication_rel r "
            "JOIN pg_class c ON c.oid = r.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE r.prpubid = $1",
            pub["oid"],
        )
        has_tables = {r["t"] for r in rows}
        has_schemas: set[str] = set()
        if version >= 150000:
            rows = await conn.fetch(
                "SELECT n.nspname AS s FROM pg_publication_namespace p "
                "JOIN pg_namespace n ON n.oid = p.pnnspid WHERE p.pnpubid = $1",
                pub["oid"],
            )
            has_schemas = {r["s"] for r in rows}
        if has_tables != wanted_tables or has_schemas != wanted_schemas:
            problems.append(
                f"{where}: {name} exists but captures tables {sorted(has_tables)} and schemas "
                f"{sorted(has_schemas)}, not the configured {sorted(wanted_tables)} and "
                f"{sorted(wanted_schemas)}: change the config, ALTER PUBLICATION, or drop it "
                "(triggerd postgres drop-slot)"
            )
    if problems:
        raise ConfigError(problems)
    return False


async def ensure_slot(
    conn: asyncpg.Connection, slot: str, database: str, trigger: str, *, create: bool = True
) -> int:
    """Create the logical slot (pgoutput; unless not `create`: ConfigError), or check an
    existing one; returns its confirmed position (LSN)."""
    where = f"trigger {trigger!r}: source.slot"
    row = await conn.fetchrow(
        "SELECT plugin, slot_type, database, temporary, confirmed_flush_lsn "
        "FROM pg_replication_slots WHERE slot_name = $1",
        slot,
    )
    if row is None and not create:
        raise ConfigError([f"{where}: slot {slot} {NOT_CREATED_BY_RECORD}"])
    if row is None:
        import asyncpg

        try:
            created = await conn.fetchrow(
                "SELECT lsn FROM pg_create_logical_replication_slot($1, 'pgoutput')", slot
            )
        except asyncpg.DuplicateObjectError:
            # Another daemon of the cluster created it at the same moment: check theirs.
            return await ensure_slot(conn, slot, database, trigger, create=False)
        assert created is not None
        return int(created["lsn"])
    if row["slot_type"] != "logical" or row["plugin"] != "pgoutput":
        raise ConfigError(
            [
                f"{where}: slot {slot} exists but is a {row['slot_type']} slot with plugin "
                f"{row['plugin']!r}; triggerd needs a logical pgoutput slot (choose another name)"
            ]
        )
    if row["database"] != database:
        raise ConfigError(
            [f"{where}: slot {slot} belongs to database {row['database']!r}, not {database!r}"]
        )
    if row["confirmed_flush_lsn"] is None:
        return await _created_position(conn, slot)
    return int(row["confirmed_flush_lsn"])


async def _created_position(conn: asyncpg.Connection, slot: str) -> int:
    """The confirmed position of a slot that another daemon is creating right now (it has
    none until the server has waited out the transactions running at its creation)."""
    for _ in range(round(SLOT_CREATION_WAIT_S / 0.1)):
        await asyncio.sleep(0.1)
        confirmed = await conn.fetchval(
            "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $1", slot
        )
        if confirmed is not None:
            return int(confirmed)
    raise RetryableError(f"slot {slot} is still being created elsewhere")


@dataclass(frozen=True, slots=True)
class SlotLag:
    #: WAL written since the slot's confirmed position.
    lag_bytes: int
    #: WAL the server keeps for the slot (since its restart position).
    retained_bytes: int
    active: bool
    confirmed_lsn: int
    #: `wal_status` (PostgreSQL 13+; None before): `reserved`, `extended`, `unreserved` (the
    #: next checkpoint invalidates the slot unless it catches up) or `lost`.
    wal_status: str | None = None
    #: Why the server invalidated the slot (`invalidation_reason` of PostgreSQL 17+, or
    #: `wal_removed` for a `lost` slot before 17); None while the slot can be read.
    invalidation: str | None = None


#: The causes behind a slot's `invalidation_reason`, as one clause each.
INVALIDATION_CAUSES = {
    "wal_removed": "the WAL it had not delivered was removed: it fell further behind than "
    "max_slot_wal_keep_size",
    "rows_removed": "rows it still needed were removed (a standby's conflict with its primary)",
    "wal_level_insufficient": "wal_level was set below logical",
    "idle_timeout": "it was inactive longer than idle_replication_slot_timeout",
}


def invalidated_message(trigger: str, slot: str, reason: str) -> str:
    """The error of a trigger whose slot the server invalidated: what was lost, what to do."""
    cause = INVALIDATION_CAUSES.get(reason, reason)
    return (
        f"trigger {trigger!r}: slot {slot} was invalidated by the server ({cause}); the changes "
        "it had not delivered cannot be read any more. Stop the daemon and run `triggerd "
        f"postgres drop-slot {trigger}`: the next start creates a new slot, which delivers "
        "the changes made from then on"
    )


async def slot_lag(conn: asyncpg.Connection, slot: str) -> SlotLag | None:
    # The row as JSON: `wal_status` (13+) and `invalidation_reason` (17+) read as NULL where
    # the server's view has no such column, without asking for its version.
    row = await conn.fetchrow(
        "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint AS lag, "
        "(pg_current_wal_lsn() - restart_lsn)::bigint AS retained, active, "
        "confirmed_flush_lsn AS confirmed, to_jsonb(s) ->> 'wal_status' AS wal_status, "
        "to_jsonb(s) ->> 'invalidation_reason' AS reason "
        "FROM pg_replication_slots s WHERE slot_name = $1",
        slot,
    )
    if row is None:
        return None
    wal_status = row["wal_status"]
    invalidation = row["reason"] or ("wal_removed" if wal_status == "lost" else None)
    return SlotLag(
        max(0, int(row["lag"] or 0)),
        max(0, int(row["retained"] or 0)),
        bool(row["active"]),
        int(row["confirmed"] or 0),
        wal_status,
        invalidation,
    )


async def primary_key(conn: asyncpg.Connection, relid: int) -> list[str]:
    rows = await conn.fetch(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a "
        "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE i.indrelid = $1 AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)",
        relid,
    )
    return [r["attname"] for r in rows]


async def describe_types(conn: asyncpg.Connection, oids: list[int]) -> dict[int, Any]:
    """pg_type rows (typtype, typcategory, typelem, typbasetype, typdelim) by OID."""
    rows = await conn.fetch(
        "SELECT oid::int AS oid, typtype::text, typcategory::text, typelem::int AS elem, "
        "typbasetype::int AS base, typdelim::text FROM pg_type WHERE oid = ANY($1::oid[])",
        oids,
    )
    return {r["oid"]: r for r in rows}


async def drop_slot_and_publication(
    conn: asyncpg.Connection, slot: str, publication: str
) -> list[str]:
    """Drop both when they exist; returns what was dropped."""
    done = []
    row = await conn.fetchrow(
        "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1", slot
    )
    if row is not None:
        if row["active_pid"] is not None:
            raise RetryableError(
                f"slot {slot} is in use by PID {row['active_pid']}: stop the daemon first"
            )
        await conn.execute("SELECT pg_drop_replication_slot($1)", slot)
        done.append(f"slot {slot}")
    exists = await conn.fetchval("SELECT 1 FROM pg_publication WHERE pubname = $1", publication)
    if exists:
        await conn.execute(f"DROP PUBLICATION {quote_ident(publication)}")
        done.append(f"publication {publication}")
    return done
