"""Two daemons (subprocesses) with the same S3 poll trigger (moto_server) on one PostgreSQL
state store (a fresh database): only the holder of the lease `s3poll:<trigger>` lists the
bucket; the leader is killed (kill -9) with objects put just before and after; the other
daemon takes over and every object is delivered (at least once), none lost. The killed
daemon, restarted, stands by without listing. A 2 s lease keeps it short."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.pg_state import fresh_database
from tests.system.conftest import FUNCTIONS, wait_for
from tests.system.pg_cluster import Member as ClusterMember
from tests.system.pg_cluster import daemon_table, json_lines

pytestmark = [pytest.mark.system, pytest.mark.integration, pytest.mark.usefixtures("aws_env")]

LEASE = "s3poll:bucket"


def config(url: str, name: str, tmp: Path, endpoint: str, bucket: str) -> str:
    daemon = daemon_table(
        url, tmp / name / "work", lease_timeout_s=2, singleton_lease_timeout_s=2, log_level="debug"
    )
    return f"""
{daemon}

[functions.recorder]
handler = "app.handler"
code = "{FUNCTIONS / "recorder"}"
timeout_s = 10
environment = {{ RECORD_FILE = "${{CALLS_FILE}}" }}

[[triggers]]
name = "bucket"
function = "recorder"

[triggers.source]
type = "s3"
mode = "poll"
bucket = "{bucket}"
endpoint_url = "{endpoint}"
poll_interval_s = 0.2
starting_position = "TRIM_HORIZON"
"""


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_database("triggerd_s3poll") as url:
        yield url


class Member(ClusterMember):
    def __init__(self, name: str, url: str, tmp: Path, endpoint: str, bucket: str) -> None:
        super().__init__(name, tmp, config(url, name, tmp, endpoint, bucket), "CALLS_FILE")

    def leads(self) -> bool:
        return self.logged("lease.acquired", lease=LEASE)

    def scans(self) -> int:
        return sum(e.get("event") == "s3.scanned" for e in self.daemon.events())


def delivered(tmp: Path) -> list[str]:
    keys: list[str] = []
    for path in sorted(tmp.glob("*.jsonl")):
        for call in json_lines(path):
            keys += [r["s3"]["object"]["key"] for r in call["event"]["Records"]]
    return keys


def test_only_the_leader_lists_and_a_kill9_loses_no_object(
    tmp_path: Path, pg_url: str, moto_server: str
) -> None:
    s3: Any = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    bucket = f"failover-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    put: list[str] = []

    def put_objects(prefix: str, count: int) -> None:
        for i in range(count):
            key = f"{prefix}-{i:02d}.txt"
            s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
            put.append(key)

    def all_delivered() -> bool:
        return set(delivered(tmp_path)) >= set(put)

    put_objects("before-start", 5)
    members = {n: Member(n, pg_url, tmp_path, moto_server, bucket) for n in "ab"}
    try:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda m: m.start(), members.values()))
        wait_for(lambda: any(m.leads() for m in members.values()), 30, "a leader")
        leader = next(m for m in members.values() if m.leads())
        other = next(m for m in members.values() if m is not leader)
        wait_for(all_delivered, 30, "the first objects")
        wait_for(lambda: leader.scans() >= 5, 30, "the leader to list several times")
        assert not other.leads() and other.scans() == 0

        put_objects("before-kill", 4)
        leader.daemon.kill9()
        put_objects("after-kill", 4)
        wait_for(other.leads, 30, "the standby to take the lease")
        wait_for(all_delivered, 60, "every object after the kill")

        # The killed daemon comes back as a standby: it never lists while the other leads.
        leader.start()
        put_objects("after-restart", 3)
        wait_for(all_delivered, 60, "the objects put after the restart")
        scans = other.scans()
        wait_for(lambda: other.scans() >= scans + 5, 30, "the new leader to list on")
        assert not leader.leads() and leader.scans() == 0
    finally:
        for m in members.values():
            m.daemon.stop()
    keys = delivered(tmp_path)
    assert set(keys) == set(put), sorted(set(put) - set(keys))
    for m in members.values():
        assert "Traceback" not in m.daemon.stderr()
