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

#: Take the lease when it is free, expired or already ours. Every acquisition starts a new
#: epoch, even by the same holder (one that had given the lease up locally, whose writes of
#: that earlier tenure may still be in flight); renewals keep it. Concurrent acquirers
#: serialise on the row (or on the primary key).
ACQUIRE = (
    f"WITH t AS (SELECT {_NOW} AS now) "
    f"INSERT INTO {Q}.leases AS l (name, holder, epoch, expires_at, heartbeat) "
    "SELECT $1, $2, 1, t.now + $3, t.now FROM t "
    "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, epoch = l.epoch + 1, "
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
#: Take the lease from its holder at the epoch given (a steal, for balancing).
STEAL = (
    f"WITH t AS (SELECT {_NOW} AS now) UPDATE {Q}.leases AS l "
    "SET holder = $2, epoch = l.epoch + 1, expires_at = t.now + $4, heartbeat = t.now FROM t "
    "WHERE l.name = $1 AND l.epoch = $3 RETURNING l.epoch"
)
RELEASE = (
    f"UPDATE {Q}.leases SET holder = NULL, expires_at = {_NOW} "
    "WHERE name = $1 AND holder = $2 AND epoch = $3"
)
#: FOR SHARE: an acquirer taking the lease over waits for this transaction to end, so it
#: reads the checkpoints this write leaves (or this write sees its new epoch and is refused).
FENCE = f"SELECT holder, epoch FROM {Q}.leases WHERE name = $1 FOR SHARE"
LIST = f"SELECT name, holder, epoch, expires_at, heartbeat FROM {Q}.leases ORDER BY name"
#: The same with the database's time, for ages (`triggerd status`).
LIST_WITH_NOW = (
    f"SELECT name, holder, epoch, expires_at, heartbeat, {_NOW} FROM {Q}.leases ORDER BY name"
)
#: A daemon's heartbeat; rows of daemons silent for MEMBER_FORGET_S go (killed ones).
HEARTBEAT = (
    f"WITH t AS (SELECT {_NOW} AS now), gone AS (DELETE FROM {Q}.members USING t "
    "WHERE heartbeat < t.now - $2) "
    f"INSERT INTO {Q}.members AS m (member, started_at, heartbeat) "
    "SELECT $1, t.now, t.now FROM t "
    "ON CONFLICT (member) DO UPDATE SET heartbeat = excluded.heartbeat"
)
LEAVE = f"DELETE FROM {Q}.members WHERE member = $1"
MEMBERS = (
    f"SELECT member, started_at, heartbeat, {_NOW} FROM {Q}.members ORDER BY started_at, member"
)
#: The leases of a prefix, and the members heard from within MEMBER_LIVE_S, with the time.
PREFIX_LEASES = (
    f"SELECT name, holder, epoch, expires_at, heartbeat FROM {Q}.leases "
    "WHERE starts_with(name, $1) ORDER BY name"
)
LIVE_MEMBERS = (
    f"SELECT {_NOW}, coalesce(array_agg(member ORDER BY member) "
    f"FILTER (WHERE heartbeat >= {_NOW} - $1), '{{}}') FROM {Q}.members"
)
#: Seconds between a daemon's heartbeats, and after which a silent member is forgotten.
MEMBER_HEARTBEAT_S = 5.0
MEMBER_FORGET_S = 3600.0
#: A member heard from within this long counts as alive (shard leases are balanced over
#: the live members).
MEMBER_LIVE_S = 3 * MEMBER_HEARTBEAT_S


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
