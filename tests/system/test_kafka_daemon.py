"""`triggerd run` on Kafka topics (tansu broker), as subprocesses: kill -9 mid-batch loses
nothing and the restart resumes from the committed offsets; two daemons in one group share
six partitions and every record is delivered when one is stopped and when one is killed."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bench.harness import TansuBroker
from tests.integration.kafka_support import committed, create_topic, producer, unique
from tests.system.conftest import FUNCTIONS, Daemon, free_port, wait_for

pytestmark = [pytest.mark.system, pytest.mark.integration, pytest.mark.timeout(120)]


def config(record_file: Path, bootstrap: str, topic: str, group: str, sleep_s: float) -> str:
    return f"""
[daemon]
state = "sqlite:///state/state.db"
listen = "127.0.0.1:{free_port()}"
control_listen = ""
control_on_public = true
shutdown_timeout_s = 10
log_format = "json"

[functions.recorder]
handler = "app.handler"
code = "{FUNCTIONS / "recorder"}"
timeout_s = 10
reserved_concurrency = 2
environment = {{ RECORD_FILE = "{record_file}", SLEEP_S = "{sleep_s}" }}

[[triggers]]
name = "orders"
function = "recorder"
batch_size = 5
batching_window_s = 0
maximum_concurrency = 2

[triggers.source]
type = "kafka"
bootstrap_servers = "{bootstrap}"
topics = ["{topic}"]
group_id = "{group}"
starting_position = "TRIM_HORIZON"
session_timeout_ms = 1000
heartbeat_interval_ms = 300
"""


def delivered(*files: Path) -> list[str]:
    out: list[str] = []
    for path in files:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            if not line.endswith("}"):
                continue
            event: dict[str, Any] = json.loads(line)["event"]
            for records in event["records"].values():
                out += [base64.b64decode(r["value"]).decode() for r in records]
    return out


def offsets_by_partition(path: Path, skip_lines: int) -> dict[int, list[int]]:
    """The offsets delivered per partition, in delivery order, after the first `skip_lines`
    lines of the record file."""
    out: dict[int, list[int]] = {}
    for line in path.read_text().splitlines()[skip_lines:]:
        if not line.endswith("}"):
            continue
        for records in json.loads(line)["event"]["records"].values():
            for r in records:
                out.setdefault(r["partition"], []).append(r["offset"])
    return out


def send(bootstrap: str, topic: str, start: int, count: int, partitions: int) -> list[str]:
    values = [f"m{i:04}" for i in range(start, start + count)]

    async def go() -> None:
        async with producer(bootstrap) as p:
            futures = [
                await p.send(topic, v.encode(), partition=i % partitions)
                for i, v in enumerate(values)
            ]
            await asyncio.gather(*futures)

    asyncio.run(go())
    return values


def test_kill9_mid_batch_then_restart_resumes_from_the_committed_offsets(
    tmp_path: Path, kafka_broker: TansuBroker
) -> None:
    bootstrap = kafka_broker.bootstrap
    topic = asyncio.run(create_topic(bootstrap, partitions=2))
    group = unique("g")
    sent = send(bootstrap, topic, 0, 60, 2)
    calls = tmp_path / "calls.jsonl"
    d = Daemon(tmp_path, config(calls, bootstrap, topic, group, sleep_s=0.2))
    try:
        d.start()
        wait_for(lambda: len(delivered(calls)) >= 15, 40, "some batches")
        d.kill9()
        # A worker busy at the kill may still finish its invocation: wait until the calls
        # file has not grown for a second (not a fixed pause a loaded machine may outrun).
        wait_for(lambda: _settled(calls), 30, "the killed daemon's workers to finish")
        first_run = delivered(calls)
        first_lines = len(calls.read_text().splitlines())
        assert len(set(first_run)) < len(sent), "killed while work was pending"
        before = asyncio.run(committed(bootstrap, group, topic, 2))
        d.start()
        wait_for(lambda: set(delivered(calls)) >= set(sent), 60, "every record")
        resumed = offsets_by_partition(calls, first_lines)
        for partition, offset in enumerate(before):
            start = offset or 0
            if start == 30:
                assert partition not in resumed, (partition, resumed)
                continue
            # The restart starts at the committed offset: nothing skipped, nothing before it.
            assert resumed[partition][0] == start, (partition, before, resumed)
            assert set(resumed[partition]) == set(range(start, 30)), (partition, resumed)
        status = _status(d)
        assert f"{topic}-0" in status and f"{topic}-1" in status, status
        assert "orders: " in status and "rebalance(s)" in status
        assert d.terminate() == 0
    finally:
        d.stop()
    counts = Counter(delivered(calls))
    duplicates = sum(n - 1 for n in counts.values())
    assert duplicates <= 20, f"the restart resumed near the committed offsets ({before})"
    assert asyncio.run(committed(bootstrap, group, topic, 2)) == [30, 30]


def test_two_daemons_share_six_partitions_through_a_stop_and_a_kill(
    tmp_path: Path, kafka_broker: TansuBroker
) -> None:
    bootstrap = kafka_broker.bootstrap
    topic = asyncio.run(create_topic(bootstrap, partitions=6))
    group = unique("g")
    files = (tmp_path / "a.jsonl", tmp_path / "b.jsonl")
    daemons = []
    for name, path in zip("ab", files, strict=True):
        (tmp_path / name).mkdir()
        daemons.append(Daemon(tmp_path / name, config(path, bootstrap, topic, group, 0.02)))
    a, b = daemons
    try:
        a.start()
        b.start()
        sent = send(bootstrap, topic, 0, 300, 6)
        wait_for(lambda: set(delivered(*files)) >= set(sent), 60, "the first 300 records")
        assert delivered(files[0]) and delivered(files[1]), "both daemons had partitions"
        assert b.terminate() == 0  # stopped: commits and leaves the group
        sent += send(bootstrap, topic, 300, 300, 6)
        wait_for(lambda: set(delivered(*files)) >= set(sent), 60, "records after the stop")
        b.start()
        wait_for(lambda: _assigned(b), 30, "b to get partitions back")
        a.kill9()  # killed: the group notices after the session timeout
        sent += send(bootstrap, topic, 600, 300, 6)
        wait_for(lambda: set(delivered(*files)) >= set(sent), 60, "records after the kill")
        assert b.terminate() == 0
    finally:
        for d in daemons:
            d.stop()
    assert asyncio.run(committed(bootstrap, group, topic, 6)) == [150] * 6


_last_size: dict[Path, tuple[int, float]] = {}


def _settled(path: Path, quiet_s: float = 1.0) -> bool:
    """True once `path` kept its size for `quiet_s` (polled by wait_for)."""
    size = path.stat().st_size if path.exists() else 0
    now = time.monotonic()
    seen, since = _last_size.get(path, (-1, now))
    if size != seen:
        _last_size[path] = (size, now)
        return False
    return now - since >= quiet_s


def _status(d: Daemon) -> str:
    """`triggerd status` against the running daemon: a line per partition with its lag."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "triggerd", "status", "-c", str(d.config)],
        cwd=d.workdir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def _assigned(d: Daemon) -> bool:
    return any(
        e.get("event") == "kafka.partitions_assigned" and e.get("partitions") for e in d.events()
    )


def test_bad_kafka_config_exits_2_naming_each_key(tmp_path: Path) -> None:
    import subprocess
    import sys

    cfg = tmp_path / "triggerd.toml"
    cfg.write_text(
        config(tmp_path / "x.jsonl", "127.0.0.1:9092", "bad topic!", "g", 0).replace(
            "heartbeat_interval_ms = 300", "heartbeat_interval_ms = 300\nfetch_max_wait_ms = -1"
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "triggerd", "validate", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert any("triggers.0.source.topics: " in line and "'bad topic!'" in line for line in lines)
    assert any("triggers.0.source.fetch_max_wait_ms: " in line for line in lines)


def test_an_unreachable_broker_defers_the_trigger_and_the_daemon_keeps_running(
    tmp_path: Path,
) -> None:
    calls = tmp_path / "calls.jsonl"
    d = Daemon(tmp_path, config(calls, f"127.0.0.1:{free_port()}", "orders", "g", 0))
    try:
        d.start()
        wait_for(
            lambda: any(e.get("event") == "source.start_deferred" for e in d.events()),
            30,
            "the deferred start",
        )
        assert d.terminate() == 0
    finally:
        d.stop()
