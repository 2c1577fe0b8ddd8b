"""Two daemons (subprocesses) with one Kinesis trigger (moto_server, a stream of 4 shards) on
one PostgreSQL state store (a fresh database on the machine's server): the shard leases
spread 2/2, then one daemon is killed (kill -9) and the other takes its shards over once
their leases expired (`singleton_lease_timeout_s` = 2 s). Every record put before and after
the kill is delivered at least once."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.kinesis_support import kinesis_client, make_stream, put_json
from tests.pg_state import fresh_database
from tests.system.conftest import Daemon, wait_for
from tests.system.pg_cluster import daemon_table, json_lines, member_id, status

pytestmark = [pytest.mark.system, pytest.mark.integration, pytest.mark.usefixtures("aws_env")]

FUNCTION_DIR = Path(__file__).parent / "functions" / "kinesis_ids"
PREFIX = "shard:clicks/"


def config(url: str, tmp: Path, name: str, stream: str, endpoint: str) -> str:
    daemon = daemon_table(url, tmp / name / "work", singleton_lease_timeout_s=2)
    return f"""
{daemon}

[functions.ids]
handler = "app.handler"
code = "{FUNCTION_DIR}"
timeout_s = 10
environment = {{ RECORD_FILE = "{tmp / (name + ".jsonl")}" }}

[[triggers]]
name = "clicks"
function = "ids"
batch_size = 5
source.type = "kinesis"
source.stream = "{stream}"
source.endpoint_url = "{endpoint}"
source.poll_interval_s = 0.2
source.shard_refresh_s = 5
"""


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_database("triggerd_shards") as url:
        yield url


def delivered(tmp: Path) -> Counter[int]:
    seen: Counter[int] = Counter()
    for path in tmp.glob("*.jsonl"):
        for batch in json_lines(path, "]"):
            seen.update(batch)
    return seen


def shard_leases(d: Daemon) -> dict[str, str | None]:
    """Shard lease -> holder (None: free or expired), from `triggerd status -o json`."""
    leases: list[dict[str, Any]] = status(d)["leases"]
    return {
        lease["lease"]: lease["holder"] for lease in leases if lease["lease"].startswith(PREFIX)
    }


async def _put(endpoint: str, stream: str, ids: range) -> None:
    async with kinesis_client(endpoint) as client:
        await put_json(client, stream, [(f"key-{i}", {"id": i}) for i in ids])


async def _stream(endpoint: str) -> str:
    async with kinesis_client(endpoint) as client:
        return await make_stream(client, shards=4)


def test_shards_spread_over_two_daemons_and_a_killed_ones_are_taken_over(
    tmp_path: Path, moto_server: str, pg_url: str
) -> None:
    stream = asyncio.run(_stream(moto_server))
    daemons = {}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        daemons[name] = Daemon(tmp_path / name, config(pg_url, tmp_path, name, stream, moto_server))
    a, b = daemons["a"], daemons["b"]
    try:
        a.start(ready_timeout=120)
        b.start(ready_timeout=120)
        ids = {member_id(a), member_id(b)}

        def spread() -> bool:
            held = Counter(shard_leases(a).values())
            return len(held) == 2 and set(held) == ids and set(held.values()) == {2}

        wait_for(spread, 30, "the 4 shard leases spread 2/2 over the two daemons")
        asyncio.run(_put(moto_server, stream, range(40)))
        wait_for(lambda: set(delivered(tmp_path)) == set(range(40)), 30, "the first 40 records")
        # Both daemons read (40 partition keys over 4 shards): each delivered its shards'.
        assert (tmp_path / "a.jsonl").exists() and (tmp_path / "b.jsonl").exists()

        a.kill9()
        asyncio.run(_put(moto_server, stream, range(40, 80)))
        survivor = member_id(b)
        wait_for(
            lambda: set(shard_leases(b).values()) == {survivor} and len(shard_leases(b)) == 4,
            30,
            "the survivor to hold all 4 shard leases",
        )
        wait_for(lambda: set(delivered(tmp_path)) == set(range(80)), 30, "all 80 records")
        taken = [e for e in b.events() if e.get("event") == "stream.shard_leased"]
        assert len(taken) >= 4  # its own 2, then the killed daemon's 2
        assert b.terminate() == 0
    finally:
        for d in daemons.values():
            d.stop()
    # Released at a clean stop: free at once for another daemon.
    assert set(shard_leases(b).values()) == {None}
