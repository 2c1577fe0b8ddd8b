"""Trigger options a source would accept and then ignore are config errors: one line from
`triggerd validate`, naming the key and what to use instead."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import triggerd_rabbitmq as rmq
import triggerd_sqs as sqs
import triggerd_webhook as webhook
from tests.fakes import connector_registry, one_trigger
from triggerd.cli.main import main
from triggerd.types import ConfigError

QUEUE = "http://localhost:1/123456789012/q"
SOURCES: dict[str, dict[str, Any]] = {
    "sqs": {"type": "sqs", "queue_url": QUEUE, "region": "us-east-1"},
    "rabbitmq": {"type": "rabbitmq", "queue": "q"},
}
FILE_DEST = {"type": "file", "path": "dlq.jsonl"}


def registry() -> Any:
    from triggerd.delivery.destinations import file_plugin

    return connector_registry(
        {"sqs": sqs.plugin, "rabbitmq": rmq.plugin, "webhook": webhook.plugin},
        {"file": file_plugin},
    )


def refusal(source: dict[str, Any], **trigger: Any) -> str:
    with pytest.raises(ConfigError) as info:
        one_trigger(registry(), source, **trigger)
    [problem] = info.value.problems
    return problem


@pytest.mark.parametrize("kind", sorted(SOURCES))
@pytest.mark.parametrize(
    ("trigger", "fragment"),
    [
        ({"maximum_record_age_s": 120}, "maximum_record_age_s: queue sources have no record age"),
        ({"retry_base_delay_s": 5}, "retry_base_delay_s: queue sources retry by redelivery"),
        ({"retry_max_delay_s": 60}, "retry_max_delay_s: queue sources retry by redelivery"),
        (
            {"maximum_retry_attempts": 3},
            "maximum_retry_attempts: on a queue source it only ends retries into on_failure",
        ),
    ],
)
def test_queue_sources_refuse_in_place_retry_settings(
    kind: str, trigger: dict[str, Any], fragment: str
) -> None:
    assert fragment in refusal(SOURCES[kind], **trigger)


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_queue_sources_accept_the_isolation_switch_and_retry_limit(kind: str) -> None:
    t = one_trigger(
        registry(),
        SOURCES[kind],
        maximum_retry_attempts=3,
        on_failure=FILE_DEST,
        bisect_batch_on_function_error=False,
    )
    assert t.effective_bisect is False
    t = one_trigger(registry(), SOURCES[kind], maximum_retry_attempts=3, on_failure=FILE_DEST)
    assert t.effective_bisect is True


def test_rabbitmq_dead_lettering_turns_isolation_on() -> None:
    source = {**SOURCES["rabbitmq"], "dead_letter_after_attempts": 3}
    assert one_trigger(registry(), source).effective_bisect is True
    assert one_trigger(registry(), SOURCES["rabbitmq"]).effective_bisect is False


@pytest.mark.parametrize(
    "trigger",
    [
        {"filters": [{"body": {"a": [1]}}]},
        {"maximum_concurrency": 2},
        {"maximum_retry_attempts": 1},
        {"maximum_event_age_s": 600},
        {"retry_base_delay_s": 1},
        {"on_failure": FILE_DEST},
    ],
)
def test_a_sync_webhook_refuses_what_only_event_mode_uses(trigger: dict[str, Any]) -> None:
    source = {"type": "webhook", "path": "/hook"}
    [key] = trigger
    assert refusal(source, **trigger).startswith(f"triggers.0: {key}: a sync-mode webhook ")
    one_trigger(registry(), {**source, "invocation": "event"}, **trigger)  # accepted there


def test_validate_names_the_refused_option_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "fn").mkdir()
    config = tmp_path / "t.toml"
    config.write_text(
        f"""
[functions.f]
handler = "app.handler"
code = "fn"

[[triggers]]
name = "orders"
function = "f"
source = {{ type = "sqs", queue_url = "{QUEUE}", region = "us-east-1" }}
retry_base_delay_s = 5
"""
    )
    result = CliRunner().invoke(main, ["validate", str(config)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if "retry_base_delay_s" in line]
    assert len(lines) == 1 and "queue sources retry by redelivery" in lines[0], result.output
    assert "nack_visibility_timeout_s" in lines[0]
    assert "Traceback" not in result.output


def test_rabbitmq_durable_without_declare_is_refused() -> None:
    problem = refusal({**SOURCES["rabbitmq"], "durable": False})
    assert "durable needs declare = true" in problem
    one_trigger(registry(), {**SOURCES["rabbitmq"], "durable": False, "declare": True})


def connector_refusal(name: str, source: dict[str, Any]) -> str:
    import importlib

    module = importlib.import_module(f"triggerd_{name}")
    reg = connector_registry({name: module.plugin}, {})
    with pytest.raises(ConfigError) as info:
        one_trigger(reg, {"type": name, **source})
    [problem] = info.value.problems
    return problem


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ({"bucket": "b-1", "wait_time_s": 5}, "wait_time_s: only used in notifications mode"),
        ({"bucket": "b-1", "sqs_endpoint_url": "http://h:1"}, "only used in notifications mode"),
        (
            {"bucket": "b-1", "mode": "notifications", "queue_url": QUEUE, "page_size": 10},
            "page_size: only used in poll mode",
        ),
        (
            {"bucket": "b-1", "mode": "notifications", "queue_url": QUEUE, "poll_interval_s": 5},
            "poll_interval_s: only used in poll mode",
        ),
    ],
)
def test_s3_keys_of_the_other_mode_are_refused(source: dict[str, Any], fragment: str) -> None:
    assert fragment in connector_refusal("s3", source)


def test_schedule_max_catch_up_needs_catch_up_all() -> None:
    source = {"expression": "rate(1 minute)", "max_catch_up": 5}
    assert 'max_catch_up: only used with catch_up = "all"' in connector_refusal("schedule", source)


def test_kafka_tls_settings_need_a_tls_protocol() -> None:
    source = {"topics": ["t"], "bootstrap_servers": "h:9092", "ssl_check_hostname": False}
    problem = connector_refusal("kafka", source)
    assert "ssl_check_hostname: needs security_protocol SSL or SASL_SSL" in problem


@pytest.mark.parametrize(
    "function",
    [
        {"backend": "http", "url": "http://127.0.0.1:1/invoke", "memory_mb": 512},
        {"backend": "aws", "function": "billing", "memory_mb": 512},
    ],
)
def test_remote_backends_refuse_memory_mb(function: dict[str, Any]) -> None:
    from triggerd.config.load import validate_data
    from triggerd.config.plugins import Registry

    with pytest.raises(ConfigError) as info:
        validate_data({"functions": {"f": function}}, Registry.discover(), base_dir=Path("."))
    [problem] = info.value.problems
    assert "memory_mb: this backend does not run the function" in problem


def test_dynamodb_streams_refuses_more_records_per_call_than_getrecords_returns() -> None:
    source = {"stream": "orders", "records_per_call": 5000}
    problem = connector_refusal("dynamodb_streams", source)
    assert "records_per_call: DynamoDB Streams' GetRecords returns at most 1000" in problem
