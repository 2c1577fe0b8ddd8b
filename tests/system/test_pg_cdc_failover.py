"""Two daemons (subprocesses) with one PostgreSQL CDC trigger on one PostgreSQL state store (a
fresh database on the machine's server), reading the session's throwaway `wal_level=logical`
cluster: only the holder of the slot's lease reads the slot (the standby never resumes, never
delivers, and neither logs the slot as in use), then the leader is killed (kill -9) mid-stream
and the standby takes over: every row inserted, before and after the kill, is delivered at
least once. A 2 s lease keeps it short."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.integration.postgres_support import unique
from tests.pg_state import fresh_database
from tests.system.conftest import FUNCTIONS, wait_for
from tests.system.pg_cluster import Member as ClusterMember
from tests.system.pg_cluster import daemon_table, json_lines

pytestmark = [pytest.mark.system, pytest.mark.integration]

LEASE_S = 2
ROWS_BEFORE, ROWS_AFTER = 200, 100


def config(state: str, name: str, tmp: Path, dsn: str, table: str, slot: str) -> str:
    daemon = daemon_table(state, tmp / name / "work", singleton_lease_timeout_s=LEASE_S)
    return f"""
{daemon}

[functions.rows]
handler = "app.handler"
code = "{FUNCTIONS / "row_ids"}"
timeout_s = 30
environment = {{ RECORD_FILE = "${{ROWS_FILE}}", SLEEP_S = "0.05" }}

[[triggers]]
name = "orders"
function = "rows"
batch_size = 10
maximum_concurrency = 2
source = {{ type = "postgres", dsn = "{dsn}", tables = ["{table}"], slot = "{slot}", \
publication = "{slot}", poll_interval_s = 0.02, max_poll_interval_s = 0.2 }}
"""


@pytest.fixture
def state_url() -> Iterator[str]:
    with fresh_database("triggerd_cdc") as url:
        yield url


class Member(ClusterMember):
    """One daemon of the cluster; each run records the row ids it delivered in its own file."""

    def __init__(self, name: str, tmp: Path, text: str) -> None:
        super().__init__(name, tmp, text, "ROWS_FILE")

    def leads(self) -> bool:
        return "source.leading" in self.event_names()

    def delivered(self) -> list[int]:
        return ids_in(self.current_file)


def ids_in(path: Path) -> list[int]:
    return [i for batch in json_lines(path, "]") for i in batch]


def all_delivered(tmp: Path) -> set[int]:
    return {i for path in tmp.glob("*.jsonl") for i in ids_in(path)}


def insert(cluster: Any, table: str, first: int, last: int, per_txn: int = 10) -> None:
    """Rows first..last, `per_txn` a transaction (one `psql -c` is one transaction unless
    it says BEGIN/COMMIT)."""
    cluster.psql(
        "".join(
            f"BEGIN; INSERT INTO {table} SELECT g, 'x' FROM generate_series({lo}, "
            f"{min(lo + per_txn - 1, last)}) g; COMMIT;"
            for lo in range(first, last + 1, per_txn)
        )
    )


def slot_fights(m: Member) -> list[str]:
    text = m.daemon.stderr()
    return [line for line in text.splitlines() if "is active for PID" in line or "in use" in line]


@pytest.mark.timeout(150)
def test_one_reader_per_slot_and_the_standby_takes_over_from_a_killed_leader(
    tmp_path: Path, pg_cluster: Any, state_url: str
) -> None:
    table, slot = unique("orders"), unique("cdc")
    pg_cluster.psql(f"CREATE TABLE {table} (id int PRIMARY KEY, v text)")
    members = {
        n: Member(n, tmp_path, config(state_url, n, tmp_path, pg_cluster.dsn, table, slot))
        for n in "ab"
    }
    try:
        with ThreadPoolExecutor(2) as pool:  # at once, as a cluster's hosts boot
            list(pool.map(lambda m: m.start(), members.values()))
        wait_for(lambda: any(m.leads() for m in members.values()), 30, "a leader")
        leader = next(m for m in members.values() if m.leads())
        standby = next(m for m in members.values() if m is not leader)
        insert(pg_cluster, table, 1, ROWS_BEFORE)
        wait_for(lambda: len(set(leader.delivered())) >= 40, 30, "the leader to deliver")
        # While both run, only the lease holder reads the slot.
        assert not standby.leads() and "postgres.resumed" not in standby.event_names()
        assert standby.delivered() == []
        assert slot_fights(leader) == [] and slot_fights(standby) == []
        # Two daemons connected to the cluster, and one connection that reads the slot.
        apps = pg_cluster.psql(
            "SELECT application_name FROM pg_stat_activity WHERE application_name LIKE "
            "'triggerd:orders:%' ORDER BY 1"
        ).split()
        assert apps.count("triggerd:orders:control") == 2, apps
        assert apps.count("triggerd:orders:reader") == 1, apps
        leader.daemon.kill9()
        assert len(set(leader.delivered())) < ROWS_BEFORE, "killed mid-stream"
        insert(pg_cluster, table, ROWS_BEFORE + 1, ROWS_BEFORE + ROWS_AFTER)
        wanted = set(range(1, ROWS_BEFORE + ROWS_AFTER + 1))
        wait_for(lambda: all_delivered(tmp_path) >= wanted, 60, "every row")
        assert standby.leads() and "postgres.resumed" in standby.event_names()
        # The successor went on from what the leader had acknowledged, not from the start.
        assert min(standby.delivered()) > 1
        assert all_delivered(tmp_path) == wanted, "nothing invented"
    finally:
        for m in members.values():
            m.daemon.stop()
        pg_cluster.psql(
            f"SELECT pg_drop_replication_slot('{slot}') FROM pg_replication_slots "
            f"WHERE slot_name = '{slot}'; DROP PUBLICATION IF EXISTS {slot}; DROP TABLE {table}"
        )
