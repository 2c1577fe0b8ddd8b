"""The PostgreSQL store's lease statements (triggerd.state.leases): one statement per
acquire, renew and release, with the time taken from the database's clock, and the fence
check that runs first in a fenced write's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from triggerd.state.leases import Fence, LeaseInfo, LeaseLostError
from triggerd.state.pgschema import SCHEMA
from triggerd.state.pgwrites import Conn

Q = SCHEMA
_NOW = "extract(epoch FROM clock_timestamp())::float8"

#: Take the lease when it is free, expired or already ours; the epoch grows only when the
#: holder changes. Concurrent acquirers serialise on the row (or on the primary key).
ACQUIRE = (
    f"WITH t AS (SELECT {_NOW} AS now) "
    f"INSERT INTO {Q}.leases AS l (name, holder, epoch, expires_at, heartbeat) "
    "SELECT $1, $2, 1, t.now + $3, t.now FROM t "
    "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
    "epoch = l.epoch + CASE WHEN l.holder IS NOT DISTINCT FROM excluded.holder THEN 0 ELSE 1 END, "
    "expires_at = excluded.expires_at, heartbeat = excluded.heartbeat "
    "WHERE l.holder IS NULL OR l.holder = excluded.holder OR l.expires_at <= excluded.heartbeat "
    "RETURNING l.epoch"
)
RENEW = (
    f"WITH t AS (SELECT {_NOW} AS now) UPDATE {Q}.leases AS l "
    "SET expires_at = t.now + $4, heartbeat = t.now FROM t "
    "WHERE l.name = $1 AND l.holder = $2 AND l.epoch = $3 AND l.expires_at > t.now "
    "RETURNING l.epoch"
)
RELEASE = (
    f"UPDATE {Q}.leases SET holder = NULL, expires_at = {_NOW} "
    "WHERE name = $1 AND holder = $2 AND epoch = $3"
)
#: FOR SHARE: an acquirer taking the lease over waits for this transaction to end, so it
#: reads the checkpoints this write leaves (or this write sees its new epoch and is refused).
FENCE = f"SELECT holder, epoch FROM {Q}.leases WHERE name = $1 FOR SHARE"
LIST = f"SELECT name, holder, epoch, expires_at, heartbeat FROM {Q}.leases ORDER BY name"


async def check_fence(conn: Conn, fence: Fence, member: str) -> None:
    """In the caller's transaction: LeaseLostError unless `member` holds the lease at the
    fence's epoch."""
    row = await conn.fetchrow(FENCE, fence.lease)
    if row is None or row[0] != member or int(row[1]) != fence.epoch:
        now = "released" if row is None or row[0] is None else f"at epoch {int(row[1])}"
        raise LeaseLostError(
            f"the lease {fence.lease!r} moved on (held at epoch {fence.epoch}, {now}): "
            "the write was refused"
        )


def lease_info(row: Sequence[Any]) -> LeaseInfo:
    name, holder, epoch, expires_at, heartbeat = row
    return LeaseInfo(
        name=str(name),
        holder=None if holder is None else str(holder),
        epoch=int(epoch),
        expires_at=float(expires_at),
        heartbeat=float(heartbeat),
    )
