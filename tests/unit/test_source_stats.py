"""Lag reported by partitioned sources: the Prometheus metrics, the /statusz endpoint and the
lines `triggerd status` prints."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from triggerd.http.server import status_handler
from triggerd.telemetry.metrics import Metrics
from triggerd.types import PartitionStats, SourceStats

STATS = SourceStats(
    partitions=(
        PartitionStats("orders-0", lag_records=12, lag_seconds=3.5, committed_offset=40),
        PartitionStats("orders-1", lag_records=0, lag_seconds=0.0, committed_offset=None),
    ),
    rebalances=2,
)


def test_metrics_expose_lag_committed_offsets_and_rebalances() -> None:
    metrics = Metrics()
    metrics.sources.register("orders", lambda: STATS)
    text = metrics.exposition().decode()
    assert 'triggerd_source_lag_records{partition="orders-0",trigger="orders"} 12.0' in text
    assert 'triggerd_source_lag_seconds{partition="orders-0",trigger="orders"} 3.5' in text
    assert 'triggerd_source_committed_offset{partition="orders-0",trigger="orders"} 40.0' in text
    assert 'partition="orders-1",trigger="orders"} 40' not in text
    assert 'triggerd_source_rebalances_total{trigger="orders"} 2.0' in text


class _Host:
    def source_stats(self) -> Mapping[str, SourceStats]:
        return {"orders": STATS}

    def readiness(self) -> dict[str, Any]:
        running = {"status": "running", "reasons": []}
        return {"triggers": {"orders": running, "held": {"status": "paused", "reasons": []}}}


async def test_statusz_answers_the_lag_as_json() -> None:
    import json

    handler = status_handler(_Host())  # type: ignore[arg-type]
    resp: Any = await handler(make_mocked_request("GET", "/statusz"))
    body = json.loads(resp.body)
    assert body["triggers"]["orders"]["rebalances"] == 2
    assert body["triggers"]["orders"]["partitions"][0] == {
        "partition": "orders-0",
        "lag_records": 12,
        "lag_seconds": 3.5,
        "committed_offset": 40,
    }
    assert body["paused"] == ["held"]


def test_status_prints_a_line_per_partition(capsys: pytest.CaptureFixture[str]) -> None:
    from triggerd.cli.status import lag_rows, print_lag

    print_lag(
        *lag_rows(
            {
                "orders": {
                    "rebalances": 2,
                    "partitions": [
                        {"partition": "orders-0", "lag_records": 12, "lag_seconds": 3.5,
                         "committed_offset": 40},
                    ],
                }
            }
        )
    )  # fmt: skip
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == [
        "trigger", "partition", "committed_offset", "lag_records", "lag_seconds"
    ]  # fmt: skip
    assert out[1].split() == ["orders", "orders-0", "40", "12", "3.5"]
    assert out[2] == "orders: 2 rebalance(s)"


def test_status_prints_the_records_per_second_of_stream_shards(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from triggerd.cli.status import lag_rows, print_lag
    from triggerd.http.server import _partition

    shard = PartitionStats("shardId-0", None, 0.5, 7, records_per_s=12.5)
    assert _partition(shard)["records_per_s"] == 12.5
    assert "records_per_s" not in _partition(STATS.partitions[0])
    print_lag(*lag_rows({"clicks": {"rebalances": 0, "partitions": [_partition(shard)]}}))
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[-1] == "records_per_s"
    assert out[1].split() == ["clicks", "shardId-0", "7", "-", "0.5", "12.5"]
