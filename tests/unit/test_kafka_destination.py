"""The kafka on-failure destination against a fake producer: a record the broker refuses as too
large is sent again without its payload (as AWS drops a payload that does not fit), the
default request size is Kafka's 1 MiB, and a compression codec whose library is missing is a
config error naming the option and the package."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from aiokafka import codec, errors

import triggerd_kafka as tk
from tests.unit.test_kafka_config import problems
from triggerd.types import DestinationContext, JSONDict, SystemClock
from triggerd_kafka.destination import KafkaDestination


class SizeLimitedProducer:
    """Stores what fits under `limit` bytes; refuses the rest as a broker does (its
    message.max.bytes can be lower than the producer's max_request_size)."""

    limit = 10_000

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.stored: list[JSONDict] = []

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def send_and_wait(self, topic: str, value: bytes, **kw: Any) -> None:
        if len(value) > self.limit:
            raise errors.MessageSizeTooLargeError()
        self.stored.append(orjson.loads(value))


def destination(**cfg: Any) -> tuple[KafkaDestination, list[SizeLimitedProducer]]:
    made: list[SizeLimitedProducer] = []

    def factory(**kwargs: Any) -> SizeLimitedProducer:
        made.append(SizeLimitedProducer(**kwargs))
        return made[-1]

    aiokafka: Any = SimpleNamespace(AIOKafkaProducer=factory, errors=errors)
    config = tk.KafkaDestinationConfig(type="kafka", bootstrap_servers=["b:1"], topic="dlt", **cfg)
    ctx = DestinationContext(trigger="t", clock=SystemClock(), log=logging.getLogger("k"))
    return KafkaDestination(config, ctx, aiokafka), made


def failure_record(payload_bytes: int) -> JSONDict:
    return {
        "requestContext": {"condition": "RetryAttemptsExhausted"},
        "KafkaBatchInfo": {"recordsInfo": {"orders-0": {"firstRecordOffset": "0"}}},
        "payload": {"records": {"orders-0": [{"value": "x" * payload_bytes}]}},
    }


async def test_a_record_the_broker_refuses_as_too_large_is_resent_without_its_payload(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dest, made = destination()
    await dest.send(failure_record(50_000))  # under max_request_size, over the broker's limit
    [producer] = made
    [stored] = producer.stored
    assert "payload" not in stored
    assert stored["KafkaBatchInfo"] == failure_record(0)["KafkaBatchInfo"]
    assert "destination.kafka.payload_dropped" in caplog.text
    await dest.send(failure_record(100))
    assert "payload" in producer.stored[-1], "records that fit keep their payload"


async def test_a_record_too_large_even_without_payload_fails_for_the_retry() -> None:
    dest, made = destination()
    await dest.send(failure_record(0))
    made[0].limit = 10
    with pytest.raises(RuntimeError, match="MessageSizeTooLargeError"):
        await dest.send(failure_record(50_000))


async def test_the_default_request_size_is_kafkas_one_mib() -> None:
    dest, made = destination()
    await dest.start()
    assert made[0].kwargs["max_request_size"] == 1_048_576
    body = dest.encode(failure_record(2_000_000))
    assert b"payload" not in body, "over max_request_size: dropped before producing"


@pytest.mark.parametrize("codec_name", ["snappy", "lz4", "zstd"])
def test_a_compression_codec_without_its_library_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, codec_name: str
) -> None:
    monkeypatch.setattr(codec, f"has_{codec_name}", lambda: False)
    dest = {"type": "kafka", "bootstrap_servers": "b:1", "topic": "dlt"}
    text = problems({"topics": ["t"]}, on_failure={**dest, "compression_type": codec_name})
    assert "on_failure.compression_type" in text
    assert f"'{codec_name}'" in text and f"pip install 'aiokafka[{codec_name}]'" in text
    monkeypatch.setattr(codec, f"has_{codec_name}", lambda: True)
    cfg = tk.KafkaDestinationConfig(
        type="kafka", bootstrap_servers=["b:1"], topic="dlt", compression_type=codec_name
    )
    assert cfg.compression_type == codec_name
