"""/metrics of a real `triggerd run`, parsed with prometheus_client's parser: names, types and
labels as docs/metrics.md says, no `_created` series, the standard collectors, and one
invocation counted exactly once; a Kafka trigger with lag publishes it as gauges."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.system.conftest import FUNCTIONS, Daemon, free_port, wait_for

pytestmark = pytest.mark.system


def directory_config(tmp: Path, port: int) -> str:
    return f"""
[daemon]
state = "sqlite:///state/state.db"
listen = "127.0.0.1:{port}"
control_listen = ""
control_on_public = true
shutdown_timeout_s = 5
log_format = "json"

[functions.recorder]
handler = "app.handler"
code = "{FUNCTIONS / "recorder"}"
timeout_s = 10
environment = {{ RECORD_FILE = "{tmp / "calls.jsonl"}", SLEEP_S = "0" }}

[[triggers]]
name = "inbox"
function = "recorder"
source = {{ type = "directory", path = "inbox", bucket = "inbox", stable_s = 0.1 }}
"""


class Scrape:
    def __init__(self, port: int) -> None:
        self.text = urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        self.families = {f.name: f for f in text_string_to_metric_families(self.text)}

    def value(self, sample: str, **labels: str) -> float:
        for family in self.families.values():
            for s in family.samples:
                if s.name == sample and s.labels == labels:
                    return float(s.value)
        return 0.0

    def labels(self, family: str) -> set[str]:
        return {k for s in self.families[family].samples for k in s.labels} - {"le"}


def calls(tmp: Path) -> int:
    path = tmp / "calls.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_scraped_metrics_have_their_types_and_labels_and_count_an_invocation_once(
    tmp_path: Path, daemon_factory: Any
) -> None:
    (tmp_path / "inbox").mkdir()
    port = free_port()
    d: Daemon = daemon_factory(directory_config(tmp_path, port))
    d.start()
    before = Scrape(port)
    (tmp_path / "inbox" / "one.txt").write_text("1")
    wait_for(lambda: calls(tmp_path) == 1, 60, "the invocation")
    wait_for(
        lambda: Scrape(port).value("triggerd_records_succeeded_total", trigger="inbox") == 1,
        60,
        "the event's completion",
    )
    after = Scrape(port)

    assert "_created" not in after.text
    expected = {
        "triggerd_build_info": ("gauge", {"version", "python"}),
        "triggerd_invocations": ("counter", {"function", "outcome"}),
        "triggerd_invoke_duration_seconds": ("histogram", {"function"}),
        "triggerd_concurrent_executions": ("gauge", {"function"}),
        "triggerd_async_event_age_seconds": ("histogram", {"trigger"}),
        "triggerd_async_queue_depth": ("gauge", {"trigger"}),
        "triggerd_records_received": ("counter", {"trigger"}),
        "triggerd_records_succeeded": ("counter", {"trigger"}),
        "triggerd_function_duration_seconds": ("histogram", {"function"}),
        "python_info": ("gauge", {"implementation", "major", "minor", "patchlevel", "version"}),
        "python_gc_collections": ("counter", {"generation"}),
        "process_resident_memory_bytes": ("gauge", set()),
        "process_cpu_seconds": ("counter", set()),
    }
    for name, (kind, labels) in expected.items():
        assert after.families[name].type == kind, name
        assert after.labels(name) == labels, name
    assert after.value("triggerd_build_info", version="0.1.0", python=after_python(after)) == 1

    ok = {"function": "recorder", "outcome": "ok"}
    assert (
        after.value("triggerd_invocations_total", **ok)
        - before.value("triggerd_invocations_total", **ok)
        == 1
    )
    assert after.value("triggerd_invocations_total", function="recorder", outcome="ok") == 1
    assert after.value("triggerd_async_event_age_seconds_count", trigger="inbox") == 1
    assert after.value("triggerd_concurrent_executions", function="recorder") == 0
    assert after.value("triggerd_async_queue_depth", trigger="inbox") == 0
    assert after.value("triggerd_function_duration_seconds_count", function="recorder") == 1

    ready = json.loads(urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5).read())
    assert ready == {
        "status": "ready",
        "state_store": {"status": "ok"},
        "triggers": {"inbox": {"status": "running", "reasons": []}},
    }
    assert d.terminate() == 0


def after_python(scrape: Scrape) -> str:
    [sample] = scrape.families["python_info"].samples
    return str(sample.labels["version"])


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_kafka_consumer_lag_is_published_per_trigger_and_partition(
    tmp_path: Path, kafka_broker: Any
) -> None:
    from tests.integration.kafka_support import create_topic
    from tests.system.test_kafka_daemon import config, delivered, send

    bootstrap = kafka_broker.bootstrap
    topic = asyncio.run(create_topic(bootstrap, partitions=2))
    sent = send(bootstrap, topic, 0, 40, 2)
    calls_file = tmp_path / "calls.jsonl"
    text = config(calls_file, bootstrap, topic, "lag-group", sleep_s=0.3)
    port = int(text.split('listen = "127.0.0.1:')[1].split('"')[0])
    d = Daemon(tmp_path, text)
    try:
        d.start()

        def lagging() -> bool:
            scrape = Scrape(port)
            return any(
                scrape.value("triggerd_source_lag_records", trigger="orders", partition=p) > 0
                for p in (f"{topic}-0", f"{topic}-1")
            )

        wait_for(lagging, 40, "a partition with lag in /metrics")
        scrape = Scrape(port)
        assert scrape.families["triggerd_source_lag_records"].type == "gauge"
        assert scrape.labels("triggerd_source_lag_records") == {"trigger", "partition"}
        assert scrape.families["triggerd_source_iterator_age_seconds"].type == "gauge"
        assert scrape.labels("triggerd_source_iterator_age_seconds") == {"trigger"}
        assert scrape.value("triggerd_source_offset_lag_records", trigger="orders") > 0
        wait_for(lambda: set(delivered(calls_file)) >= set(sent), 60, "every record")
        wait_for(
            lambda: Scrape(port).value("triggerd_source_offset_lag_records", trigger="orders") == 0,
            60,
            "the lag to reach 0",
        )
        assert d.terminate() == 0
    finally:
        d.stop()
