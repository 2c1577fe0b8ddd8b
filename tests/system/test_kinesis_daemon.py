"""The daemon as a subprocess on a Kinesis stream (moto_server): kill -9 mid-batch, then a
restart resumes from the checkpoints and every record is delivered, each shard in order."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.kinesis_support import kinesis_client, make_stream, put_json
from tests.system.conftest import Daemon, wait_for

pytestmark = [pytest.mark.system, pytest.mark.usefixtures("aws_env")]

FUNCTION_DIR = Path(__file__).parent / "functions" / "kinesis_ids"


def config(tmp: Path, stream: str, endpoint: str) -> str:
    return f"""
[daemon]
state = "sqlite:///state/state.db"
listen = ""
control_listen = ""
shutdown_timeout_s = 5
log_format = "json"

[functions.ids]
handler = "app.handler"
code = "{FUNCTION_DIR}"
timeout_s = 10
environment = {{ RECORD_FILE = "{tmp / "calls.jsonl"}", SLEEP_S = "0.2" }}

[[triggers]]
name = "clicks"
function = "ids"
batch_size = 5
maximum_concurrency = 2
source.type = "kinesis"
source.stream = "{stream}"
source.endpoint_url = "{endpoint}"
source.poll_interval_s = 0.1
"""


def batches(tmp: Path) -> list[list[int]]:
    path = tmp / "calls.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("]")]


def ids(tmp: Path) -> list[int]:
    return [i for b in batches(tmp) for i in b]


async def _setup(endpoint: str, count: int) -> str:
    async with kinesis_client(endpoint) as client:
        stream = await make_stream(client, shards=2)
        # Ids increase per partition key; each key is in one shard.
        await put_json(client, stream, [(f"p{i % 2}", {"id": i}) for i in range(count)])
        return stream


def test_kill9_mid_batch_resumes_from_the_checkpoint_and_loses_nothing(
    tmp_path: Path, moto_server: str, daemon_factory: Any
) -> None:
    stream = asyncio.run(_setup(moto_server, 60))
    d: Daemon = daemon_factory(config(tmp_path, stream, moto_server))
    d.start()
    wait_for(lambda: len(ids(tmp_path)) >= 10, 30, "some invocations")
    d.kill9()
    before = len(ids(tmp_path))
    assert len(set(ids(tmp_path))) < 60, "killed while work was still pending"
    d.start()
    wait_for(lambda: set(ids(tmp_path)) == set(range(60)), 60, "every record")
    assert d.terminate() == 0
    # Resumed from the checkpoints: per shard, at most the batch in flight at the kill and
    # one acknowledged before it whose checkpoint was not written yet come again.
    assert len(ids(tmp_path)) - 60 <= 2 * 2 * 5, (before, len(ids(tmp_path)))
    for key in (0, 1):  # each partition key (one shard each) in order, across the restart
        seen = [i for i in ids(tmp_path) if i % 2 == key]
        firsts = sorted(set(seen), key=seen.index)
        assert firsts == sorted(firsts)
