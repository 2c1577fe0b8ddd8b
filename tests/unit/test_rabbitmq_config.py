"""Config of the rabbitmq source and destination: url or parts, masking, validation."""

from __future__ import annotations

from typing import Any

import pytest

import triggerd_rabbitmq as rmq
from tests.fakes import connector_registry, one_trigger
from triggerd.types import ConfigError


def trigger(source: dict[str, Any], **extra: Any) -> Any:
    registry = connector_registry({"rabbitmq": rmq.plugin}, {"rabbitmq": rmq.destination_plugin})
    return one_trigger(registry, {"type": "rabbitmq", **source}, **extra)


def source(**cfg: Any) -> rmq.RabbitMQSourceConfig:
    out = trigger({"queue": "q", **cfg}).source_config
    assert isinstance(out, rmq.RabbitMQSourceConfig)
    return out


def test_defaults_follow_amazon_mq() -> None:
    t = trigger({"queue": "q"})
    assert t.effective_batch_size == 100
    assert t.effective_window_s == 0.5
    assert not t.is_async
    assert t.source_config.retry_owner == "source"
    cfg = source()
    assert cfg.amqp_url() == "amqp://guest:guest@localhost:5672/"
    assert cfg.prefetch_count == 1000
    assert cfg.declare is False


def test_parts_build_a_quoted_url_and_the_display_url_masks_the_password() -> None:
    cfg = source(
        host="mq", port=5673, username="app user", password="p@ss/w:rd", virtual_host="prod"
    )
    assert cfg.amqp_url() == "amqp://app%20user:p%40ss%2Fw%3Ard@mq:5673/prod"
    assert cfg.display_url() == "amqp://app%20user:***@mq:5673/prod"
    assert cfg.vhost == "prod"
    assert cfg.endpoint == "mq:5673"


def test_url_form_gives_vhost_port_and_masking() -> None:
    cfg = source(url="amqps://u:s3cret@broker.example:5671/%2Fv?heartbeat=30")
    assert cfg.vhost == "/v"
    assert cfg.endpoint == "broker.example:5671"
    assert cfg.display_url() == "amqps://u:***@broker.example:5671/%2Fv?heartbeat=30"
    assert source(url="amqp://u:p@h").vhost == "/"
    assert source(url="amqp://u:p@h/").vhost == "/"
    assert source(url="amqps://u:p@h").endpoint == "h:5671"


def test_secrets_never_show_in_repr_or_dump() -> None:
    cfg = source(url="amqp://u:Hidden123@h/")
    parts = source(password="Hidden456")
    for text in (repr(cfg), str(cfg.model_dump()), repr(parts), str(parts.model_dump())):
        assert "Hidden123" not in text and "Hidden456" not in text


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"url": "http://u:Secret99@h/"}, "must start with amqp://"),
        ({"url": "amqp://u:Secret99@h:notaport/"}, "not a valid amqp:// URL"),
        ({"url": "amqp://u:Secret99@h/", "username": "x"}, "set either url or username"),
        ({"queue_arguments": {"x-queue-type": "quorum"}}, "queue_arguments needs declare"),
        (
            {"declare": True, "durable": False, "queue_arguments": {"x-queue-type": "quorum"}},
            "quorum queue must be durable",
        ),
        ({"broker_arn": "broker-1"}, "broker_arn must be an ARN"),
        ({"prefetch_count": 0}, "prefetch_count"),
        ({"dead_letter_after_attempts": 0}, "dead_letter_after_attempts"),
        ({"queu": "x"}, "unknown key"),
    ],
)
def test_bad_source_config_is_reported_without_the_secret(
    cfg: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        source(**cfg)
    assert message in str(err.value)
    assert "Secret99" not in str(err.value)


def test_batch_size_is_capped_at_ten_thousand() -> None:
    with pytest.raises(ConfigError, match="over this source's maximum 10000"):
        trigger({"queue": "q"}, batch_size=10_001)


def test_destination_needs_a_routing_key_and_defaults_to_persistent_mandatory() -> None:
    t = trigger({"queue": "q"}, on_failure={"type": "rabbitmq", "routing_key": "dlq"})
    dest = t.on_failure_config
    assert isinstance(dest, rmq.RabbitMQDestinationConfig)
    assert (dest.exchange, dest.routing_key, dest.persistent, dest.mandatory) == (
        "",
        "dlq",
        True,
        True,
    )
    with pytest.raises(ConfigError, match="routing_key"):
        trigger({"queue": "q"}, on_failure={"type": "rabbitmq"})


def test_destination_refuses_the_source_only_reconnect_backoff() -> None:
    assert source(reconnect_base_delay_s=0.1).reconnect_base_delay_s == 0.1
    for key in ("reconnect_base_delay_s", "reconnect_max_delay_s"):
        dest = {"type": "rabbitmq", "routing_key": "dlq", key: 1.0}
        with pytest.raises(ConfigError, match=f"{key}: only the rabbitmq source uses this"):
            trigger({"queue": "q"}, maximum_retry_attempts=1, on_failure=dest)


def test_importing_the_package_does_not_import_aio_pika() -> None:
    import subprocess
    import sys

    code = "import sys, triggerd_rabbitmq; print('aio_pika' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
