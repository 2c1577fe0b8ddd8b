"""Config of the kafka source and destination: AWS-like defaults, ranges, SASL/TLS rules,
secrets never shown, clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import triggerd_kafka as tk
from tests.fakes import connector_registry, one_trigger
from triggerd.types import ConfigError


def trigger(source: dict[str, Any], **extra: Any) -> Any:
    registry = connector_registry({"kafka": tk.plugin}, {"kafka": tk.destination_plugin})
    source = {"type": "kafka", "bootstrap_servers": "b:9092", **source}
    return one_trigger(registry, source, base_dir=Path("/cfg"), **extra)


def problems(source: dict[str, Any], **extra: Any) -> str:
    with pytest.raises(ConfigError) as info:
        trigger(source, **extra)
    return "\n".join(info.value.problems)


def test_defaults_follow_aws_kafka_mappings() -> None:
    t = trigger({"topics": ["orders"]})
    cfg = t.source_config
    assert isinstance(cfg, tk.KafkaSourceConfig)
    assert t.effective_batch_size == 100 and t.effective_window_s == 0.5
    assert t.effective_retry_attempts == -1
    assert cfg.starting_position == "LATEST" and cfg.group_id is None
    assert cfg.bootstrap_servers == ["b:9092"] and cfg.security_protocol == "PLAINTEXT"
    assert cfg.batch_per_key and cfg.retry_owner == "pipeline"
    assert cfg.rebalance_timeout == cfg.session_timeout_ms
    assert cfg.commit_interval_s == 0.1


@pytest.mark.parametrize("interval", [0, 60])
def test_commit_interval_accepts_its_documented_range(interval: float) -> None:
    cfg = trigger({"topics": ["t"], "commit_interval_s": interval}).source_config
    assert isinstance(cfg, tk.KafkaSourceConfig) and cfg.commit_interval_s == interval


def test_infinite_retries_with_an_on_failure_destination_become_ten() -> None:
    dest = {"type": "kafka", "bootstrap_servers": "b:9092", "topic": "dlt"}
    assert trigger({"topics": ["t"]}, on_failure=dest).effective_retry_attempts == 10
    t = trigger({"topics": ["t"]}, on_failure=dest, maximum_retry_attempts=3)
    assert t.effective_retry_attempts == 3


def test_bootstrap_servers_as_a_comma_string_or_a_list() -> None:
    cfg = trigger({"topics": ["t"], "bootstrap_servers": "a:1, b:2"}).source_config
    assert cfg.bootstrap_servers == ["a:1", "b:2"] and cfg.bootstrap == "a:1,b:2"
    assert "is not host:port" in problems({"topics": ["t"], "bootstrap_servers": ["a"]})
    assert "is not host:port" in problems({"topics": ["t"], "bootstrap_servers": "a:99999"})


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"topics": []}, "topics"),
        ({"topics": ["bad topic"]}, "not a valid Kafka topic name"),
        ({"topics": ["a", "a"]}, "listed twice"),
        (
            {"topics": ["t"], "starting_position": "AT_TIMESTAMP"},
            "needs starting_position_timestamp",
        ),
        (
            {"topics": ["t"], "starting_position_timestamp": 5},
            "needs starting_position AT_TIMESTAMP",
        ),
        ({"topics": ["t"], "starting_position": "EARLIEST"}, "starting_position"),
        ({"topics": ["t"], "session_timeout_ms": 3000, "heartbeat_interval_ms": 3000}, "a third"),
        ({"topics": ["t"], "session_timeout_ms": 100}, "session_timeout_ms"),
        ({"topics": ["t"], "security_protocol": "SASL_SSL"}, "needs sasl_mechanism"),
        ({"topics": ["t"], "sasl_username": "u"}, "need security_protocol SASL"),
        ({"topics": ["t"], "ssl_cafile": "ca.pem"}, "needs security_protocol SSL"),
        ({"topics": ["t"], "commit_interval_s": -0.1}, "commit_interval_s"),
        ({"topics": ["t"], "commit_interval_s": 61}, "commit_interval_s"),
        ({"topics": ["t"], "typo": 1}, "unknown key"),
    ],
)
def test_bad_source_config_names_the_problem(source: dict[str, Any], message: str) -> None:
    assert message in problems(source)


def test_batch_size_up_to_ten_thousand() -> None:
    assert trigger({"topics": ["t"]}, batch_size=10_000).effective_batch_size == 10_000
    assert "maximum 10000" in problems({"topics": ["t"]}, batch_size=10_001)


def test_sasl_password_is_a_secret_and_tls_paths_are_relative_to_the_config() -> None:
    cfg = trigger(
        {
            "topics": ["t"],
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "svc",
            "sasl_password": "s3cr3t-pw",
            "ssl_cafile": "certs/ca.pem",
        }
    ).source_config
    assert "s3cr3t-pw" not in repr(cfg) and "s3cr3t-pw" not in str(cfg.model_dump())
    assert cfg.ssl_cafile == "/cfg/certs/ca.pem"
    assert cfg.secrets() == ["s3cr3t-pw"]


def test_client_settings_carry_sasl_and_tls() -> None:
    from triggerd_kafka.client import client_kwargs

    cfg = trigger(
        {
            "topics": ["t"],
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "PLAIN",
            "sasl_username": "svc",
            "sasl_password": "pw1",
            "ssl_check_hostname": False,
        }
    ).source_config
    kwargs = client_kwargs(cfg, "triggerd-x")
    assert kwargs["sasl_mechanism"] == "PLAIN" and kwargs["sasl_plain_password"] == "pw1"
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["ssl_context"].check_hostname is False
    assert kwargs["client_id"] == "triggerd-x"


@pytest.mark.parametrize(
    ("protocol", "mechanism"),
    [
        ("SASL_PLAINTEXT", "PLAIN"),
        ("SASL_SSL", "PLAIN"),
        ("SASL_SSL", "SCRAM-SHA-256"),
        ("SASL_PLAINTEXT", "SCRAM-SHA-512"),
        ("SSL", None),
    ],
)
async def test_aiokafkas_clients_accept_the_sasl_and_tls_settings(
    protocol: str, mechanism: str | None
) -> None:
    """The test broker (tansu 0.6) serves neither SASL nor TLS (docs/kafka.md), so the exact
    arguments are checked here: aiokafka's consumer and producer are built with them, which
    validates the protocol, mechanism, credentials and SSL context together."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from triggerd_kafka.client import client_kwargs

    source: dict[str, Any] = {"topics": ["t"], "security_protocol": protocol}
    if mechanism:
        source |= {"sasl_mechanism": mechanism, "sasl_username": "svc", "sasl_password": "pw1"}
    kwargs = client_kwargs(trigger(source).source_config, "triggerd-x")
    assert kwargs["security_protocol"] == protocol
    assert ("ssl_context" in kwargs) == protocol.endswith("SSL")
    if mechanism:
        assert kwargs["sasl_mechanism"] == mechanism
        assert (kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == ("svc", "pw1")
    # aiokafka refuses a TLS protocol without an SSL context and unknown mechanisms here.
    consumer = AIOKafkaConsumer(**kwargs, group_id="g", enable_auto_commit=False)
    producer = AIOKafkaProducer(**kwargs, enable_idempotence=False)
    await consumer.stop()
    await producer.stop()


def test_a_missing_tls_file_is_a_config_error_at_start() -> None:
    import asyncio
    import logging

    from triggerd.types import SourceContext, SystemClock

    cfg = trigger(
        {"topics": ["t"], "security_protocol": "SSL", "ssl_cafile": "/nonexistent/ca.pem"}
    ).source_config
    ctx = SourceContext(trigger="t", state=None, clock=SystemClock(), log=logging.getLogger("x"))  # type: ignore[arg-type]
    source = tk.plugin.create(cfg, ctx)
    with pytest.raises(ConfigError, match=r"triggers\.t\.source"):
        asyncio.run(source.start())


def test_destination_config() -> None:
    dest = {"type": "kafka", "bootstrap_servers": "b:9092", "topic": "dlt"}
    cfg = trigger({"topics": ["t"]}, on_failure=dest).on_failure_config
    assert isinstance(cfg, tk.KafkaDestinationConfig)
    assert cfg.acks == "all" and cfg.enable_idempotence is False
    bad = {**dest, "enable_idempotence": True, "acks": "1"}
    assert "needs acks" in problems({"topics": ["t"]}, on_failure=bad)
    assert "topic" in problems({"topics": ["t"]}, on_failure={**dest, "topic": "a b"})
