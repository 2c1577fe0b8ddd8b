"""A daemon cut off from PostgreSQL while it holds a schedule's lease: two daemons (subprocesses)
log in as two roles of one group (the group owns the fresh database and the schema), so one
daemon alone can be kept out: its role loses LOGIN and its sessions (found by their
application_name, `triggerd <member id>`) are terminated from the server side. It stops
firing (`lease.lost`) before its lease can expire in PostgreSQL, the other daemon takes the
schedule over, no tick is fired twice or skipped, and the cut-off daemon neither exits nor
prints a traceback: given its login back it stands by, and takes over when the other stops."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from tests.pg_state import HOST, PORT, _admin, fresh_database
from tests.system.conftest import Daemon, wait_for
from tests.system.pg_cluster import SECOND_RATES, every_second_config

pytestmark = [pytest.mark.system, pytest.mark.integration]

LEASE_S = 2
LEASE = "schedule:every-second"
ENV = SECOND_RATES


def config(url: str, tmp: Path) -> str:
    return every_second_config(url, tmp / "work", LEASE_S)


@contextlib.contextmanager
def roles_and_database() -> Iterator[tuple[str, list[str]]]:
    """A database owned by a group role, and two login roles that act as the group (objects
    they create belong to it): the database's name and the login roles."""
    tag = uuid.uuid4().hex[:8]
    group, logins = f"triggerd_grp_{tag}", [f"triggerd_{n}_{tag}" for n in "ab"]
    _admin(f'CREATE ROLE "{group}" NOLOGIN')
    try:
        for login in logins:
            _admin(f'CREATE ROLE "{login}" LOGIN IN ROLE "{group}"')
            _admin(f'ALTER ROLE "{login}" SET role = "{group}"')
        with fresh_database("triggerd_cutoff") as url:
            name = url.rsplit("/", 1)[1]
            _admin(f'ALTER DATABASE "{name}" OWNER TO "{group}"')
            yield name, logins
    finally:
        for role in [*logins, group]:
            _admin(f'DROP ROLE IF EXISTS "{role}"')


class Member:
    def __init__(self, name: str, role: str, database: str, tmp: Path) -> None:
        (tmp / name).mkdir()
        self.name = name
        self.role = role
        self.tmp = tmp
        url = f"postgresql://{role}@{HOST}:{PORT}/{database}"
        self.daemon = Daemon(tmp / name, config(url, tmp / name))

    def start(self) -> None:
        env = dict(ENV, TICK_FILE=str(self.tmp / f"{self.name}.{self.daemon.runs + 1}.jsonl"))
        self.daemon.start(ready_timeout=120, env=env)

    def count(self, event: str) -> int:
        return sum(e.get("event") == event for e in self.daemon.events())

    def first(self, event: str) -> dict[str, object]:
        return next(e for e in self.daemon.events() if e.get("event") == event)

    def fired(self) -> list[str]:
        return [t for t, runs in ticks(self.tmp).items() if any(r[0] == self.name for r in runs)]


def ticks(tmp: Path) -> dict[str, list[str]]:
    """Each invocation's tick time -> the daemon runs that invoked it ("a.1", ...)."""
    seen: dict[str, list[str]] = {}
    for path in sorted(tmp.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            if line.endswith("}"):
                seen.setdefault(json.loads(line)["event"]["time"], []).append(path.stem)
    return seen


def stamp(text: object) -> float:
    return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()


def test_a_leader_cut_off_from_postgresql_stops_before_its_lease_expires(tmp_path: Path) -> None:
    with roles_and_database() as (database, (role_a, role_b)):
        a, b = Member("a", role_a, database, tmp_path), Member("b", role_b, database, tmp_path)
        try:
            a.start()
            wait_for(lambda: a.count("lease.acquired") == 1, 30, "a to take the lease")
            b.start()
            wait_for(lambda: len(a.fired()) >= 2, 60, "a to fire")
            member = str(a.first("state.opened")["member"])
            # Cut a off: no new login, and its sessions ended (found by application_name).
            _admin(f'ALTER ROLE "{role_a}" NOLOGIN')
            cut_at = time.time()
            assert _terminate(database, f"triggerd {member}"[:63]) >= 1
            # a cannot renew now. The expiry lies between these two (the query's own time,
            # which a loaded machine stretches, must not decide either assertion).
            asked = time.time()
            left = _lease_left(role_b, database)
            expires_at, expires_by = asked + left, time.time() + left
            wait_for(lambda: a.count("lease.lost") == 1, 60, "a to stop firing")
            lost = a.first("lease.lost")
            assert stamp(lost["ts"]) < expires_by, (lost, expires_by)
            wait_for(lambda: b.count("lease.acquired") == 1, 60, "b to take the lease")
            assert stamp(b.first("lease.acquired")["ts"]) >= expires_at - 0.05
            took = stamp(b.first("lease.acquired")["ts"])
            print(  # the figures docs/cluster.md quotes (pytest -s shows them)
                f"cut -> lease.lost {stamp(lost['ts']) - cut_at:.2f} s, "
                f"{expires_at - stamp(lost['ts']):.2f} s before the expiry; "
                f"cut -> taken over {took - cut_at:.2f} s"
            )
            fired_by_b = len(b.fired())
            wait_for(lambda: len(b.fired()) >= fired_by_b + 2, 60, "b to fire")
            # PostgreSQL comes back for a: it stands by while b leads ...
            _admin(f'ALTER ROLE "{role_a}" LOGIN')
            time.sleep(LEASE_S)  # it reconnects and tries the lease every 0.4 s meanwhile
            assert a.daemon.proc is not None and a.daemon.proc.poll() is None
            assert a.count("lease.acquired") == 1
            # ... and takes the schedule over when b stops (b gives the lease up).
            assert b.daemon.terminate() == 0
            fired_by_a = len(a.fired())
            wait_for(lambda: len(a.fired()) >= fired_by_a + 2, 60, "a to fire again")
            assert a.count("lease.acquired") == 2
        finally:
            for m in (a, b):
                m.daemon.stop()
            _admin(f'ALTER ROLE "{role_a}" LOGIN')
    for m in (a, b):
        assert "Traceback" not in m.daemon.stderr(), m.daemon.stderr()[-3000:]
    seen = ticks(tmp_path)
    times = sorted(datetime.fromisoformat(t.replace("Z", "+00:00")) for t in seen)
    expected = [
        times[0] + timedelta(seconds=i)
        for i in range(int((times[-1] - times[0]).total_seconds()) + 1)
    ]
    assert [t for t in expected if t not in times] == [], "ticks never fired"
    # Invoked twice only when a had claimed it before the cut and could not complete it (b
    # invoked it again after the claim's lease): never a tick fired after the cut by both.
    twice = {t: runs for t, runs in seen.items() if len(runs) > 1}
    assert all(stamp(t) <= cut_at + 1 for t in twice), twice


def _lease_left(role: str, database: str) -> float:
    """Seconds until the schedule's lease expires, on PostgreSQL's clock."""

    async def read() -> float:
        conn = await asyncpg.connect(f"postgresql://{role}@{HOST}:{PORT}/{database}")
        try:
            left = await conn.fetchval(
                "SELECT expires_at - extract(epoch FROM clock_timestamp()) "
                "FROM triggerd.leases WHERE name = $1",
                LEASE,
            )
        finally:
            await conn.close()
        return float(left)

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, read()).result()


def _terminate(database: str, application_name: str) -> int:
    """End the sessions of one daemon (its application_name) on `database`."""

    async def run() -> int:
        conn = await asyncpg.connect(f"postgresql://postgres@{HOST}:{PORT}/postgres")
        try:
            return int(
                await conn.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = $1 AND application_name = $2",
                    database,
                    application_name,
                )
            )
        finally:
            await conn.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()
