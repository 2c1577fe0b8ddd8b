"""The PostgreSQL state store: the `StateStore` shared by several daemons.

Connections come from one bounded asyncpg pool per daemon (`pool_size` in the URL).

The async queue is shared: a claim takes free events with `FOR UPDATE SKIP LOCKED` (two
daemons never take the same row, and neither waits for the other's locks) and marks them
`claimed_by` this store's member id until `claimed_until` (the lease). A daemon that dies
leaves its claims, which any daemon takes again once the lease has run out. Extending a
lease, releasing and completing an event are done only by the claim's holder: an event
whose lease ran out and that another daemon claimed since is not deleted by a late
completion (it is invoked again: at least once).

Group commit, as in the SQLite store: writes join the pending group while one group is
being committed, and each caller is answered only after the COMMIT that holds its write
(consecutive enqueues become one INSERT ... unnest, consecutive completions one DELETE).
When the connection is lost (PostgreSQL restarted, a network cut, `pg_terminate_backend`),
the group is committed again on a new connection until `write_retry_s` has passed; every
write is idempotent (events by request id, DLQ entries by a token), so a COMMIT whose answer
was lost is harmless to repeat. After that the callers get `StateStoreUnavailableError`
and `write_error` says why until a write succeeds again. Nothing is answered as stored
before PostgreSQL said COMMIT.

Every enqueue sends a NOTIFY at its COMMIT; `on_enqueued` callbacks hear them (from every
daemon) on a LISTEN connection of the store's own, so idle queues wake at once rather than
at their next look at the queue.

Time in the queue is the callers' clock (`now`), as in the SQLite store: the daemons
sharing a store must keep their clocks in step (NTP), or leases run out early or late.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from triggerd.state import pgleases
from triggerd.state.base import ArchivedEvent, DlqEntry, NewEvent, QueuedEvent
from triggerd.state.leases import Fence, LeaseInfo, LeaseTable
from triggerd.state.pgschema import SCHEMA, PgUrl, existing_schema, migrate, parse_url
from triggerd.state.pgwrites import (
    ACQUIRE_TIMEOUT_S,
    ENQUEUED_CHANNEL,
    Complete,
    Conn,
    Rows,
    Value,
    Write,
    commit_writes,
    connection_lost,
    error_text,
    on_connection,
    write_checkpoints,
)
from triggerd.state.sqlite import (
    StateStoreClosedError,
    StateStoreError,
    StateStoreOpenError,
    StateStoreUnavailableError,
    prefix_upper_bound,
)
from triggerd.types import Clock, ExitCode, OperatorError, SystemClock

if TYPE_CHECKING:
    import asyncpg

log = logging.getLogger(__name__)

T = TypeVar("T")

#: At most this many writes share one transaction.
MAX_GROUP = 1024
#: How long a write (or read) is retried over lost connections before its caller is failed.
WRITE_RETRY_S = 10.0
#: Waiting for a new connection to connect.
CONNECT_TIMEOUT_S = 5.0
#: Backoff between retries over a lost connection.
_RETRY_FIRST_S = 0.05
_RETRY_MAX_S = 1.0

Q = SCHEMA
_CLAIM = (
    f"WITH free AS (SELECT id FROM {Q}.queue WHERE trigger = $1 AND available_at <= $2 "
    "AND (claimed_until IS NULL OR claimed_until <= $2) ORDER BY available_at, id LIMIT $3 "
    f"FOR UPDATE SKIP LOCKED) UPDATE {Q}.queue q SET claimed_by = $4, claimed_until = $5 "
    "FROM free WHERE q.id = free.id RETURNING q.id, q.trigger, q.function, q.payload, "
    "q.request_id, q.enqueued_at, q.attempts, q.trace_id, q.available_at, q.last_result"
)
#: The claim condition's threshold per row (see _CLAIM), its minimum.
_NEXT_DUE = (
    f"SELECT min(greatest(available_at, coalesce(claimed_until, available_at))) FROM {Q}.queue "
    "WHERE trigger = $1"
)
_DLQ_COLUMNS = "id, trigger, function, destination, condition, created_at, record"


def default_member_id() -> str:
    """Who holds a claim: the host, the process and a random part (unique per open)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class PostgresStateStore:
    """The `StateStore` on a PostgreSQL database (tables in its `triggerd` schema)."""

    def __init__(
        self,
        url: str | PgUrl,
        *,
        clock: Clock | None = None,
        member_id: str | None = None,
        write_retry_s: float | None = None,
    ) -> None:
        self._url = url if isinstance(url, PgUrl) else parse_url(url)
        self._clock: Clock = clock if clock is not None else SystemClock()
        self.member_id = member_id or default_member_id()
        self._write_retry_s = WRITE_RETRY_S if write_retry_s is None else write_retry_s
        self._pool: asyncpg.Pool | None = None
        self._closed = False
        self._open_lock = asyncio.Lock()
        self._store_id = ""
        self._write_error: str | None = None
        self._pending: list[Write[Any]] = []
        self._committer: asyncio.Task[None] | None = None
        #: The group commits' connection, kept from the pool between groups (acquiring one
        #: per group costs a reset round trip each time).
        self._writer: Any = None
        #: `on_enqueued` callbacks, the connection that LISTENs for them (outside the pool:
        #: pooled connections are reset between uses, which UNLISTENs), and its reconnection.
        self._enqueued_callbacks: list[Callable[[str], None]] = []
        self._listener: Any = None
        self._relisten: asyncio.Task[None] | None = None
        #: A daemon's heartbeat in `members` (`triggerd status` lists the cluster).
        self._heartbeats: asyncio.Task[None] | None = None
        #: How many group commits ran, and how many writes they held (tests, benchmarks).
        self.groups_committed = 0
        self.writes_committed = 0

    @property
    def display(self) -> str:
        """The URL without its password (for logs and errors)."""
        return self._url.display

    @property
    def store_id(self) -> str:
        return self._store_id

    @property
    def write_error(self) -> str | None:
        """Why the last write failed (PostgreSQL unreachable), None once one succeeds."""
        return self._write_error

    def __repr__(self) -> str:
        return f"PostgresStateStore({self.display!r})"

    # ---- lifecycle ----

    @property
    def application_name(self) -> str:
        """What its connections show in `pg_stat_activity`: which daemon holds them (an
        operator ends one daemon's sessions with `pg_terminate_backend`)."""
        return f"triggerd {self.member_id}"[:63]

    async def open(self) -> None:
        await self._open(migrate_schema=True)

    async def open_without_migrating(self) -> None:
        """Open for commands that only read or change rows (`status`, `dlq`): a database
        without triggerd's schema is refused (STATE_MISSING), never given one."""
        await self._open(migrate_schema=False)

    async def _open(self, *, migrate_schema: bool) -> None:
        async with self._open_lock:
            if self._closed:
                raise StateStoreClosedError("the state store is closed; create a new one")
            if self._pool is not None:
                return
            try:
                import asyncpg
            except ImportError:
                raise StateStoreOpenError(
                    "the postgresql:// state store needs asyncpg: install "
                    "triggerd-daemon[postgres]",
                    ExitCode.CONFIG_INVALID,
                ) from None
            try:
                pool = await asyncpg.create_pool(
                    self._url.dsn,
                    min_size=1,
                    max_size=self._url.pool_size,
                    timeout=CONNECT_TIMEOUT_S,
                    command_timeout=max(30.0, self._write_retry_s),
                    server_settings={"application_name": self.application_name},
                )
            except Exception as exc:
                raise self._open_error(exc) from None
            try:
                async with pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn:
                    if migrate_schema:
                        version, self._store_id = await migrate(conn, self.display)
                        await conn.execute(
                            pgleases.HEARTBEAT, self.member_id, pgleases.MEMBER_FORGET_S
                        )
                    else:
                        version, self._store_id = await existing_schema(conn, self.display)
            except BaseException as exc:
                await pool.close()
                if isinstance(exc, StateStoreOpenError) or not isinstance(exc, Exception):
                    raise
                raise self._open_error(exc) from None
            self._pool = pool
            if migrate_schema:  # a daemon (commands that only read need no wake-ups)
                await self._listen()
                self._heartbeats = asyncio.get_running_loop().create_task(self._heartbeat())
        log.info(
            "state.opened",
            extra={"store": self.display, "schema_version": version, "member": self.member_id},
        )

    def _open_error(self, exc: BaseException) -> StateStoreOpenError:
        """One line naming the store (never its password) and the reason."""
        import asyncpg

        reason = error_text(exc, self._url)
        refused = (
            asyncpg.InvalidAuthorizationSpecificationError
            | asyncpg.InvalidCatalogNameError
            | asyncpg.InsufficientPrivilegeError
        )
        if isinstance(exc, refused):
            return StateStoreOpenError(
                f"the state store {self.display} refused triggerd ({reason}): check the user, "
                "password, database and the user's privileges (see docs/cluster.md)",
                ExitCode.STATE_UNWRITABLE,
            )
        return StateStoreOpenError(
            f"the state store {self.display} cannot be reached ({reason})", ExitCode.FAILURE
        )

    async def close(self) -> None:
        async with self._open_lock:
            if self._closed:
                return
            self._closed = True
            # Writes already accepted are committed (or failed) and answered first.
            while self._committer is not None:
                await asyncio.shield(self._committer)
            if self._relisten is not None:
                await asyncio.shield(self._relisten)
            await self._leave()
            listener, self._listener = self._listener, None
            if listener is not None:
                try:
                    await asyncio.wait_for(listener.close(), 5)
                except (TimeoutError, OSError):
                    listener.terminate()
            pool = self._pool
            if pool is None:
                return
            if self._writer is not None:
                writer, self._writer = self._writer, None
                with contextlib.suppress(Exception):
                    await pool.release(writer)
            self._pool = None
            try:
                await asyncio.wait_for(pool.close(), 10)
            except (TimeoutError, OSError):
                pool.terminate()
        log.info("state.closed", extra={"store": self.display})

    # ---- checkpoints ----

    async def get_checkpoint(self, scope: str, key: str) -> str | None:
        value = await self._read(
            lambda c: c.fetchval(
                f"SELECT value FROM {Q}.checkpoints WHERE scope = $1 AND key = $2", scope, key
            )
        )
        return None if value is None else str(value)

    async def set_checkpoints(self, scope: str, items: Mapping[str, str | None]) -> None:
        if not items:
            return
        now = self._clock.time()
        entries = dict(items)
        await self._write(lambda c: write_checkpoints(c, scope, entries, now))

    async def list_checkpoints(self, scope: str, prefix: str = "") -> dict[str, str]:
        upper = prefix_upper_bound(prefix)
        sql = f"SELECT key, value FROM {Q}.checkpoints WHERE scope = $1 AND key >= $2"
        args: tuple[Any, ...] = (scope, prefix)
        if upper is not None:
            sql += " AND key < $3"
            args += (upper,)
        rows = await self._read(lambda c: c.fetch(sql + " ORDER BY key", *args))
        return {str(r[0]): str(r[1]) for r in rows}

    # ---- the durable async queue ----

    async def enqueue(
        self,
        events: Sequence[NewEvent],
        checkpoints: Mapping[str, Mapping[str, str | None]] | None = None,
    ) -> None:
        rows = Rows.of(events)
        scopes = {scope: dict(items) for scope, items in (checkpoints or {}).items()}
        if not any(scopes.values()):
            if events:
                await self._write(rows)
            return
        now = self._clock.time()

        async def op(conn: Conn) -> None:
            await rows(conn)
            for scope, items in scopes.items():
                await write_checkpoints(conn, scope, items, now)

        await self._write(op)

    async def enqueue_unless_checkpoint(
        self, events: Sequence[NewEvent], scope: str, key: str, value: str
    ) -> bool:
        rows = Rows.of(events)
        now = self._clock.time()

        async def op(conn: Conn) -> bool:
            # The row lock of the inserted checkpoint (or the conflict with a concurrent
            # one) makes this a check-and-mark that two daemons cannot both pass.
            inserted = await conn.fetchval(
                f"INSERT INTO {Q}.checkpoints (scope, key, value, updated_at) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT (scope, key) DO NOTHING RETURNING 1",
                scope,
                key,
                value,
                now,
            )
            if inserted is None:
                # Our own mark, from an attempt whose COMMIT's answer was lost (the group
                # is committed again on a new connection): that attempt passed.
                existing = await conn.fetchval(
                    f"SELECT value FROM {Q}.checkpoints WHERE scope = $1 AND key = $2", scope, key
                )
                if existing != value:
                    return False
            await rows(conn)
            return True

        return await self._write(op)

    async def claim(
        self, trigger: str, limit: int, lease_s: float, now: float
    ) -> list[QueuedEvent]:
        if limit <= 0:
            return []
        # One statement, its own transaction, outside the group: a claim lost with a
        # connection only leaves the events claimable after the lease (as a crash would).
        rows = await self._read(
            lambda c: c.fetch(_CLAIM, trigger, now, limit, self.member_id, now + lease_s)
        )
        rows = sorted(rows, key=lambda r: (r[8], r[0]))
        return [_queued_event(r) for r in rows]

    async def extend_lease(self, event_ids: Sequence[int], lease_s: float, now: float) -> None:
        if not event_ids:
            return
        ids = list(event_ids)
        until = now + lease_s
        await self._write(
            lambda c: c.execute(
                f"UPDATE {Q}.queue SET claimed_until = $1 WHERE id = ANY($2::bigint[]) "
                "AND claimed_by = $3",
                until,
                ids,
                self.member_id,
            )
        )

    async def release(
        self,
        event_id: int,
        *,
        available_at: float,
        attempts: int,
        last_result: bytes | None = None,
    ) -> None:
        """Only the claim's holder releases; unknown ids (completed) are ignored."""
        await self._write(
            lambda c: c.execute(
                f"UPDATE {Q}.queue SET claimed_by = NULL, claimed_until = NULL, "
                "available_at = $1, attempts = $2, last_result = coalesce($5, last_result) "
                "WHERE id = $3 AND claimed_by = $4",
                available_at,
                attempts,
                event_id,
                self.member_id,
                last_result,
            )
        )

    async def complete(self, event_id: int) -> None:
        """Only the claim's holder completes; unknown ids are ignored."""
        await self.complete_later(event_id)

    def complete_later(self, event_id: int) -> asyncio.Future[None]:
        """`complete` without a coroutine to await it (`CompletesLater`): the future is
        answered once the commit that holds the deletion is done."""
        return self._submit(Complete(event_id, self.member_id))

    async def next_due(self, trigger: str) -> float | None:
        value = await self._read(lambda c: c.fetchval(_NEXT_DUE, trigger))
        return None if value is None else float(value)

    async def queue_depth(self, trigger: str | None = None) -> int:
        """All queued events (claimed or not), of one trigger or of all."""
        if trigger is None:
            count = await self._read(lambda c: c.fetchval(f"SELECT count(*) FROM {Q}.queue"))
        else:
            count = await self._read(
                lambda c: c.fetchval(f"SELECT count(*) FROM {Q}.queue WHERE trigger = $1", trigger)
            )
        return int(count)

    async def recover_leases(self) -> int:
        """Free the claims this store's member holds. Other daemons' claims are theirs: a
        dead daemon's come back when their lease runs out."""

        async def op(conn: Conn) -> int:
            status = await conn.execute(
                f"UPDATE {Q}.queue SET claimed_by = NULL, claimed_until = NULL "
                "WHERE claimed_by = $1",
                self.member_id,
            )
            return int(status.rsplit(" ", 1)[-1])

        count = await self._write(op)
        if count:
            log.info("state.leases_recovered", extra={"store": self.display, "count": count})
        return count

    # ---- the DLQ index ----

    async def dlq_add(
        self,
        *,
        trigger: str,
        function: str,
        destination: str,
        condition: str,
        created_at: float,
        record: bytes,
    ) -> int:
        # The token makes a retried INSERT (its COMMIT's answer lost) find the first one.
        token = uuid.uuid4().hex
        params = (token, trigger, function, destination, condition, created_at, record)

        async def op(conn: Conn) -> int:
            entry_id = await conn.fetchval(
                f"INSERT INTO {Q}.dlq (token, trigger, function, destination, condition, "
                "created_at, record) VALUES ($1, $2, $3, $4, $5, $6, $7) "
                "ON CONFLICT (token) DO UPDATE SET token = excluded.token RETURNING id",
                *params,
            )
            return int(entry_id)

        return await self._write(op)

    async def dlq_list(self, trigger: str | None = None, limit: int = 100) -> list[DlqEntry]:
        """Newest first (by created_at, then by insertion order)."""
        order = "ORDER BY created_at DESC, id DESC"
        if trigger is None:
            rows = await self._read(
                lambda c: c.fetch(f"SELECT {_DLQ_COLUMNS} FROM {Q}.dlq {order} LIMIT $1", limit)
            )
        else:
            rows = await self._read(
                lambda c: c.fetch(
                    f"SELECT {_DLQ_COLUMNS} FROM {Q}.dlq WHERE trigger = $1 {order} LIMIT $2",
                    trigger,
                    limit,
                )
            )
        return [_dlq_entry(r) for r in rows]

    async def dlq_get(self, entry_id: int) -> DlqEntry | None:
        row = await self._read(
            lambda c: c.fetchrow(f"SELECT {_DLQ_COLUMNS} FROM {Q}.dlq WHERE id = $1", entry_id)
        )
        return None if row is None else _dlq_entry(row)

    async def dlq_delete(self, entry_id: int) -> None:
        await self._write(lambda c: c.execute(f"DELETE FROM {Q}.dlq WHERE id = $1", entry_id))

    # ---- paused triggers ----

    async def set_paused(self, trigger: str, paused: bool) -> None:
        now = self._clock.time()
        if paused:
            await self._write(
                lambda c: c.execute(
                    f"INSERT INTO {Q}.paused_triggers (trigger, paused_at) VALUES ($1, $2) "
                    "ON CONFLICT (trigger) DO NOTHING",
                    trigger,
                    now,
                )
            )
        else:
            await self._write(
                lambda c: c.execute(f"DELETE FROM {Q}.paused_triggers WHERE trigger = $1", trigger)
            )

    async def paused_triggers(self) -> set[str]:
        rows = await self._read(lambda c: c.fetch(f"SELECT trigger FROM {Q}.paused_triggers"))
        return {str(r[0]) for r in rows}

    # ---- SNS topics and subscriptions created through the API ----

    async def sns_put(self, arn: str, kind: str, doc: bytes) -> None:
        now = self._clock.time()
        await self._write(
            lambda c: c.execute(
                f"INSERT INTO {Q}.sns_resources (arn, kind, doc, created_at) "
                "VALUES ($1, $2, $3, $4) "
                "ON CONFLICT (arn) DO UPDATE SET kind = excluded.kind, doc = excluded.doc",
                arn,
                kind,
                doc,
                now,
            )
        )

    async def sns_delete(self, arn: str) -> None:
        await self._write(lambda c: c.execute(f"DELETE FROM {Q}.sns_resources WHERE arn = $1", arn))

    async def sns_list(self) -> list[tuple[str, str, bytes]]:
        rows = await self._read(
            lambda c: c.fetch(
                f"SELECT arn, kind, doc FROM {Q}.sns_resources ORDER BY created_at, arn"
            )
        )
        return [(str(r[0]), str(r[1]), bytes(r[2])) for r in rows]

    async def queued(self, request_ids: Sequence[str]) -> set[str]:
        ids = list(request_ids)
        if not ids:
            return set()
        rows = await self._read(
            lambda c: c.fetch(
                f"SELECT request_id FROM {Q}.queue WHERE request_id = ANY($1::text[])", ids
            )
        )
        return {str(r[0]) for r in rows}

    # ---- event bus archives ----

    async def archive_events(self, bus: str, events: Sequence[ArchivedEvent]) -> None:
        rows = [(bus, e.event_id, e.ingested_at, e.event) for e in events]
        if rows:
            await self._write(
                lambda c: c.executemany(
                    f"INSERT INTO {Q}.event_archive (bus, event_id, ingested_at, event) "
                    "VALUES ($1, $2, $3, $4)",
                    rows,
                )
            )

    async def archived_events(
        self, bus: str, *, since: float, until: float, after_id: int = 0, limit: int = 500
    ) -> list[ArchivedEvent]:
        rows = await self._read(
            lambda c: c.fetch(
                f"SELECT id, event_id, ingested_at, event FROM {Q}.event_archive "
                "WHERE bus = $1 AND ingested_at >= $2 AND ingested_at < $3 AND id > $4 "
                "ORDER BY id LIMIT $5",
                bus,
                since,
                until,
                after_id,
                limit,
            )
        )
        return [ArchivedEvent(str(r[1]), float(r[2]), bytes(r[3]), int(r[0])) for r in rows]

    async def prune_archive(self, bus: str, before: float) -> int:
        async def op(conn: Conn) -> int:
            status = await conn.execute(
                f"DELETE FROM {Q}.event_archive WHERE bus = $1 AND ingested_at < $2", bus, before
            )
            return int(status.rsplit(" ", 1)[-1])

        return await self._write(op)

    # ---- wake-ups across daemons ----

    def on_enqueued(self, callback: Callable[[str], None]) -> None:
        """Call `callback(trigger)` when events of `trigger` were enqueued, by this daemon or
        another one (a NOTIFY sent at the enqueue's COMMIT): a hint that wakes an idle queue.
        Lost hints (a reconnection) cost a wait until the queue's safety poll (a minute)."""
        self._enqueued_callbacks.append(callback)

    async def _listen(self) -> None:
        """LISTEN on a connection of its own; a failure costs only the wake-ups."""
        import asyncpg

        try:
            conn = await asyncpg.connect(
                self._url.dsn,
                timeout=CONNECT_TIMEOUT_S,
                server_settings={"application_name": self.application_name},
            )
        except Exception as exc:
            log.warning(
                "state.listen_failed",
                extra={"store": self.display, "error": error_text(exc, self._url)},
            )
            return
        try:
            await conn.add_listener(ENQUEUED_CHANNEL, self._notified)
        except Exception as exc:
            conn.terminate()
            log.warning(
                "state.listen_failed",
                extra={"store": self.display, "error": error_text(exc, self._url)},
            )
            return
        if self._closed:
            conn.terminate()
            return
        conn.add_termination_listener(self._listener_lost)
        self._listener = conn

    async def _listen_again(self) -> None:
        try:
            await self._listen()
        finally:
            self._relisten = None

    def _notified(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        for callback in list(self._enqueued_callbacks):
            try:
                callback(payload)
            except Exception:  # a callback's bug must not stop the others
                log.exception("state.enqueued_callback_failed", extra={"trigger": payload})

    def _listener_lost(self, conn: Any) -> None:
        """The LISTEN connection closed (a restart, a cut): listen again after the next
        write that succeeds (PostgreSQL is back then)."""
        if self._listener is conn:
            self._listener = None

    # ---- leases of singleton sources (triggerd.state.leases) ----

    async def acquire_lease(self, name: str, timeout_s: float) -> int | None:
        epoch = await self.run_on_connection(
            lambda c: c.fetchval(pgleases.ACQUIRE, name, self.member_id, timeout_s)
        )
        return None if epoch is None else int(epoch)

    async def renew_lease(self, name: str, epoch: int, timeout_s: float) -> bool:
        renewed = await self.run_on_connection(
            lambda c: c.fetchval(pgleases.RENEW, name, self.member_id, epoch, timeout_s)
        )
        return renewed is not None

    async def release_lease(self, name: str, epoch: int) -> None:
        await self.run_on_connection(
            lambda c: c.execute(pgleases.RELEASE, name, self.member_id, epoch)
        )

    async def enqueue_fenced(
        self,
        fence: Fence,
        events: Sequence[NewEvent],
        checkpoints: Mapping[str, Mapping[str, str | None]] | None = None,
    ) -> None:
        rows = Rows.of(events)
        scopes = {scope: dict(items) for scope, items in (checkpoints or {}).items()}
        now = self._clock.time()
        member = self.member_id

        async def op(conn: Conn) -> None:
            await pgleases.check_fence(conn, fence, member)
            if events:
                await rows(conn)
            for scope, items in scopes.items():
                await write_checkpoints(conn, scope, items, now)

        await self._write(op)

    async def leases(self) -> list[LeaseInfo]:
        rows = await self._read(lambda c: c.fetch(pgleases.LIST))
        return [pgleases.lease_info(tuple(r)) for r in rows]

    async def lease_table(self, prefix: str) -> LeaseTable:
        """BalancesLeases: the live members and the leases named `prefix...`, read once."""

        async def op(conn: Conn) -> tuple[Any, Any]:
            rows = await conn.fetch(pgleases.PREFIX_LEASES, prefix)
            live = await conn.fetchrow(pgleases.LIVE_MEMBERS, pgleases.MEMBER_LIVE_S)
            return rows, live

        rows, live = await self.run_on_connection(op)
        members = {str(m) for m in live[1]} | {self.member_id}
        return LeaseTable(
            member=self.member_id,
            members=tuple(sorted(members)),
            leases=tuple(pgleases.lease_info(tuple(r)) for r in rows),
            now=float(live[0]),
        )

    async def steal_lease(self, name: str, epoch: int, timeout_s: float) -> int | None:
        new = await self.run_on_connection(
            lambda c: c.fetchval(pgleases.STEAL, name, self.member_id, epoch, timeout_s)
        )
        return None if new is None else int(new)

    async def _heartbeat(self) -> None:
        """While the daemon runs: its row in `members`, renewed every few seconds."""
        while True:
            await asyncio.sleep(pgleases.MEMBER_HEARTBEAT_S)
            try:
                await self.run_on_connection(
                    lambda c: c.execute(
                        pgleases.HEARTBEAT, self.member_id, pgleases.MEMBER_FORGET_S
                    )
                )
            except StateStoreError as exc:  # unreachable: one line, the next one may pass
                log.warning(
                    "state.heartbeat_failed", extra={"store": self.display, "error": str(exc)}
                )

    async def _leave(self) -> None:
        """Stop the heartbeat and delete this daemon's row (best effort: a row left behind
        shows its age in `status` and is forgotten after an hour)."""
        task, self._heartbeats = self._heartbeats, None
        if task is None or self._pool is None:
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await on_connection(self._pool, lambda c: c.execute(pgleases.LEAVE, self.member_id))

    # ---- administration (`triggerd state migrate`, `status`) ----

    async def run_on_connection(self, op: Callable[[Conn], Awaitable[T]]) -> T:
        """Run `op` on one pooled connection, once (its own transactions are its business);
        a database error becomes a StateStoreError without the password."""
        pool = self._require_pool()
        try:
            return await on_connection(pool, op)
        except StateStoreError:
            raise
        except Exception as exc:
            if isinstance(exc, OperatorError):
                raise
            if connection_lost(exc):
                raise self._unavailable(exc) from None
            raise StateStoreError(
                f"state store {self.display}: {error_text(exc, self._url)}"
            ) from None

    # ---- plumbing ----

    def _require_pool(self) -> asyncpg.Pool:
        if self._closed:
            raise StateStoreClosedError(f"the state store {self.display} is closed")
        if self._pool is None:
            raise StateStoreClosedError(f"the state store {self.display} is not open")
        return self._pool

    async def _read(self, op: Callable[[Conn], Awaitable[T]]) -> T:
        """Run `op` on a pooled connection, again on a new one if the connection is lost
        (until `write_retry_s`)."""
        pool = self._require_pool()
        deadline = time.monotonic() + self._write_retry_s
        delay = _RETRY_FIRST_S
        while True:
            try:
                return await on_connection(pool, op)
            except Exception as exc:
                if not connection_lost(exc):
                    raise StateStoreError(
                        f"state store {self.display}: {error_text(exc, self._url)}"
                    ) from None
                if time.monotonic() + delay >= deadline or self._closed:
                    raise self._unavailable(exc) from None
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX_S)

    def _unavailable(self, exc: BaseException) -> StateStoreUnavailableError:
        return StateStoreUnavailableError(
            f"the state store {self.display} is unavailable ({error_text(exc, self._url)})"
        )

    async def _write(self, op: Callable[[Conn], Awaitable[T]]) -> T:
        """Run `op` in the next group commit; returns (or raises) once that group is
        committed. If the caller is cancelled, the write is still committed (or not) with its
        group."""
        return await self._submit(op)

    def _submit(self, op: Callable[[Conn], Awaitable[T]]) -> asyncio.Future[T]:
        """`_write`'s work, without awaiting: the write joins the pending group and the future
        is answered once that group is committed (cancelling the future does not take the
        write back)."""
        self._require_pool()
        loop = asyncio.get_running_loop()
        write: Write[T] = Write(op, loop.create_future())
        self._pending.append(write)
        if self._committer is None:
            self._committer = loop.create_task(self._commit_pending())
        return write.future

    async def _commit_pending(self) -> None:
        """Commit the pending writes group by group until none is left. The writes of callers
        already runnable join the first group (one turn of the loop first)."""
        try:
            await asyncio.sleep(0)
            while self._pending:
                group, self._pending = self._pending[:MAX_GROUP], self._pending[MAX_GROUP:]
                try:
                    outcomes = await self._commit_group(group)
                except Exception as exc:  # task boundary: no caller is left waiting
                    log.exception("state.commit_failed", extra={"store": self.display})
                    outcomes = [exc] * len(group)
                except BaseException as exc:
                    self._answer(group, [exc] * len(group))
                    raise
                self._answer(group, outcomes)
        finally:
            self._committer = None

    async def _commit_group(self, group: list[Write[Any]]) -> list[Value | BaseException]:
        pool = self._pool
        deadline = time.monotonic() + self._write_retry_s
        delay = _RETRY_FIRST_S
        while True:
            if pool is None:
                return [StateStoreClosedError(f"the state store {self.display} is closed")] * len(
                    group
                )
            try:
                if self._writer is None:
                    self._writer = await pool.acquire(timeout=ACQUIRE_TIMEOUT_S)
                return await commit_writes(self._writer, group)
            except Exception as exc:
                if not connection_lost(exc):
                    return [exc] * len(group)
                await self._drop_writer()
                self._write_error = f"PostgreSQL unavailable: {error_text(exc, self._url)}"
                log.warning(
                    "state.write_retry",
                    extra={"store": self.display, "error": error_text(exc, self._url)},
                )
                if time.monotonic() + delay >= deadline:
                    return [self._unavailable(exc)] * len(group)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX_S)

    async def _drop_writer(self) -> None:
        """Give the writer's connection back, terminated (it broke): the next group takes a
        new one from the pool."""
        writer, self._writer = self._writer, None
        if writer is not None and self._pool is not None:
            # The pool may have taken a connection that closed back already (both raise).
            with contextlib.suppress(Exception):
                writer.terminate()
            with contextlib.suppress(Exception):
                await self._pool.release(writer)

    def _ensure_listening(self) -> None:
        if self._listener is None and self._relisten is None and not self._closed:
            self._relisten = asyncio.get_running_loop().create_task(self._listen_again())

    def _answer(self, group: list[Write[Any]], outcomes: list[Value | BaseException]) -> None:
        self.groups_committed += 1
        for write, outcome in zip(group, outcomes, strict=True):
            if isinstance(outcome, Value):
                self._write_error = None
                self._ensure_listening()
                self.writes_committed += 1
                if not write.future.done():
                    write.future.set_result(outcome.value)
                continue
            if isinstance(outcome, StateStoreUnavailableError):
                error: BaseException = outcome
            elif isinstance(outcome, StateStoreError):
                error = outcome
            else:
                reason = error_text(outcome, self._url)
                self._write_error = reason
                error = StateStoreError(f"state store {self.display}: {reason}")
            if isinstance(outcome, StateStoreUnavailableError):
                self._write_error = str(outcome)
            if not write.future.done():
                write.future.set_exception(error)


def _queued_event(row: Sequence[Any]) -> QueuedEvent:
    return QueuedEvent(
        id=int(row[0]),
        trigger=str(row[1]),
        function=str(row[2]),
        payload=bytes(row[3]),
        request_id=str(row[4]),
        enqueued_at=float(row[5]),
        attempts=int(row[6]),
        trace_id=None if row[7] is None else str(row[7]),
        last_result=None if row[9] is None else bytes(row[9]),
    )


def _dlq_entry(row: Sequence[Any]) -> DlqEntry:
    return DlqEntry(
        id=int(row[0]),
        trigger=str(row[1]),
        function=str(row[2]),
        destination=str(row[3]),
        condition=str(row[4]),
        created_at=float(row[5]),
        record=bytes(row[6]),
    )
