"""The PostgreSQL store's writes: how a group of callers' writes is committed in one
transaction (runs of enqueues as one INSERT ... unnest, runs of completions as one DELETE;
a write that fails is retried alone so that it fails only its own caller), which errors mean
a lost connection, and error text without the password."""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from triggerd.state.base import NewEvent
from triggerd.state.pgschema import SCHEMA, PgUrl

if TYPE_CHECKING:
    import asyncpg

T = TypeVar("T")
Conn = Any  # an asyncpg connection proxy from the pool

#: Seconds to wait for a free pooled connection.
ACQUIRE_TIMEOUT_S = 10.0
#: Events are inserted in statements of at most this much payload, or this many rows.
CHUNK_BYTES = 1 << 20
CHUNK_ROWS = 5000

Q = SCHEMA
#: NOTIFY channel of enqueues (payload: the trigger); the queue's rows stay the truth.
ENQUEUED_CHANNEL = "triggerd_enqueued"
INSERT_EVENTS = (
    f"INSERT INTO {Q}.queue (trigger, function, payload, request_id, enqueued_at, "
    "available_at, trace_id) SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], "
    "$4::text[], $5::float8[], $6::float8[], $7::text[]) ON CONFLICT (request_id) DO NOTHING"
)
_UPSERT_CHECKPOINTS = (
    f"INSERT INTO {Q}.checkpoints (scope, key, value, updated_at) "
    "SELECT $1, k, v, $4 FROM unnest($2::text[], $3::text[]) AS t(k, v) "
    "ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value, "
    "updated_at = excluded.updated_at"
)
_DELETE_CHECKPOINTS = f"DELETE FROM {Q}.checkpoints WHERE scope = $1 AND key = ANY($2::text[])"
#: The insert and its notifications in one statement (one round trip): a data-modifying
#: WITH runs whether or not the query reads it.
INSERT_AND_NOTIFY = (
    f"WITH inserted AS ({INSERT_EVENTS}) SELECT pg_notify($8, t) FROM unnest($9::text[]) AS t"
)
COMPLETE = f"DELETE FROM {Q}.queue WHERE id = ANY($1::bigint[]) AND claimed_by = $2"


def connection_lost(exc: BaseException) -> bool:
    """Errors after which the same work may succeed on a new connection."""
    import asyncpg

    return isinstance(
        exc,
        OSError
        | TimeoutError
        | asyncpg.PostgresConnectionError
        | asyncpg.InterfaceError
        | asyncpg.exceptions.InternalClientError  # a protocol state broken by a cut
        | asyncpg.exceptions.OperatorInterventionError  # admin shutdown, terminated backend
        | asyncpg.exceptions.InsufficientResourcesError  # too many connections
        | asyncpg.exceptions.SerializationError
        | asyncpg.exceptions.DeadlockDetectedError,
    )


async def on_connection(pool: asyncpg.Pool, op: Callable[[Conn], Awaitable[T]]) -> T:
    """Run `op` on a pooled connection; a connection that broke under it is terminated, so
    the pool never hands it out again."""
    conn = await pool.acquire(timeout=ACQUIRE_TIMEOUT_S)
    try:
        return await op(conn)
    except Exception as exc:
        if connection_lost(exc):
            conn.terminate()
        raise
    finally:
        await pool.release(conn)


def error_text(exc: BaseException, url: PgUrl) -> str:
    """The error's text, one line, with nothing of the DSN's password in it."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    password = _password(url.dsn)
    if password:
        text = text.replace(password, "***")
    return text


def _password(dsn: str) -> str:
    parts = urllib.parse.urlsplit(dsn)
    return urllib.parse.unquote(parts.password or "")


class Value:
    """A write's result (a wrapper, so that a result can never be mistaken for an error)."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value


NONE = Value(None)


class Write(Generic[T]):
    __slots__ = ("future", "op")

    def __init__(self, op: Callable[[Conn], Awaitable[T]], future: asyncio.Future[T]) -> None:
        self.op = op
        self.future = future


class Rows:
    """Events to insert; consecutive enqueues of a group become one INSERT ... unnest."""

    __slots__ = ("columns",)

    def __init__(self, columns: tuple[list[Any], ...]) -> None:
        self.columns = columns

    @classmethod
    def of(cls, events: Sequence[NewEvent]) -> Rows:
        return cls(
            (
                [e.trigger for e in events],
                [e.function for e in events],
                [e.payload for e in events],
                [e.request_id for e in events],
                [e.enqueued_at for e in events],
                [e.available_at for e in events],
                [e.trace_id for e in events],
            )
        )

    def extend(self, other: Rows) -> None:
        for mine, theirs in zip(self.columns, other.columns, strict=True):
            mine.extend(theirs)

    async def __call__(self, conn: Conn) -> None:
        # In statements of at most CHUNK_BYTES of payload: asyncpg encodes the arguments on
        # the event loop, and a 30 MB statement would hold the loop for a third of a second.
        payloads = self.columns[2]
        start, size = 0, 0
        # Each statement also NOTIFYs (delivered at COMMIT to every daemon listening, once
        # per trigger and transaction: PostgreSQL folds repeats): a wake-up hint, no more.
        triggers = sorted(set(self.columns[0]))
        for i, payload in enumerate(payloads):
            size += len(payload) if isinstance(payload, bytes | bytearray) else 0
            if size >= CHUNK_BYTES or i + 1 - start >= CHUNK_ROWS:
                chunk = (c[start : i + 1] for c in self.columns)
                await conn.execute(INSERT_AND_NOTIFY, *chunk, ENQUEUED_CHANNEL, triggers)
                start, size = i + 1, 0
        if start < len(payloads):
            chunk = (c[start:] for c in self.columns)
            await conn.execute(INSERT_AND_NOTIFY, *chunk, ENQUEUED_CHANNEL, triggers)


class Complete:
    """A completion by the claim's holder; consecutive completions of a group become one
    DELETE."""

    __slots__ = ("ids", "member")

    def __init__(self, event_id: int, member: str) -> None:
        self.ids = [event_id]
        self.member = member

    async def __call__(self, conn: Conn) -> None:
        await conn.execute(COMPLETE, self.ids, self.member)


async def commit_writes(conn: Conn, group: Sequence[Write[Any]]) -> list[Value | BaseException]:
    """Commit every write of `group` in one transaction; if a write fails (not the
    connection), each write alone, so that it fails only its own caller. A lost connection
    propagates: the caller commits the group again on a new one."""
    try:
        async with conn.transaction():
            return list(await apply_writes(conn, group))
    except Exception as exc:
        if connection_lost(exc):
            raise
        if len(group) == 1:
            return [exc]
    outcomes: list[Value | BaseException] = []
    for write in group:
        try:
            async with conn.transaction():
                outcomes.append(Value(await write.op(conn)))
        except Exception as exc:
            if connection_lost(exc):
                raise
            outcomes.append(exc)
    return outcomes


async def apply_writes(conn: Conn, group: Sequence[Write[Any]]) -> list[Value]:
    """Run the writes in order: runs of enqueues as one INSERT, of completions as one
    DELETE."""
    outcomes: list[Value] = []
    rows: Rows | None = None
    done: Complete | None = None
    for write in group:
        op = write.op
        if type(op) is Rows:
            if done is not None:
                await done(conn)
                done = None
            if rows is None:
                rows = Rows(tuple([] for _ in op.columns))
            rows.extend(op)
            outcomes.append(NONE)
            continue
        if rows is not None:
            await rows(conn)
            rows = None
        if type(op) is Complete:
            if done is None:
                done = Complete(0, op.member)
                done.ids = []
            done.ids.extend(op.ids)
            outcomes.append(NONE)
            continue
        if done is not None:
            await done(conn)
            done = None
        outcomes.append(Value(await op(conn)))
    if rows is not None:
        await rows(conn)
    if done is not None:
        await done(conn)
    return outcomes


async def write_checkpoints(
    conn: Conn, scope: str, items: Mapping[str, str | None], now: float
) -> None:
    keys = [k for k, v in items.items() if v is not None]
    values = [v for v in items.values() if v is not None]
    deletes = [k for k, v in items.items() if v is None]
    if keys:
        await conn.execute(_UPSERT_CHECKPOINTS, scope, keys, values, now)
    if deletes:
        await conn.execute(_DELETE_CHECKPOINTS, scope, deletes)
