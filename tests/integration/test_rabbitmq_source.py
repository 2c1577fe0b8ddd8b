"""The rabbitmq source against the machine's broker, through the real poll pipeline: event
shape, acks after success, requeue on failure, poison messages, quorum queues, filters and bad
inputs."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from tests.fakes import FakeBackend
from tests.integration.rabbitmq_support import (
    bodies,
    broker,
    harness,
    poison,
    queue_counts,
    registry,
    unique,
)
from triggerd.config.load import validate_data
from triggerd.delivery.destinations import read_jsonl
from triggerd.types import ConfigError, SourceContext, SystemClock

pytestmark = pytest.mark.integration


def src(url: str, queue: str, **extra: Any) -> dict[str, Any]:
    return {"url": url, "queue": queue, "reconnect_base_delay_s": 0.1, **extra}


def all_bodies(backend: FakeBackend) -> list[bytes]:
    return [b for call in backend.calls for b in bodies(call)]


def entries(backend: FakeBackend) -> list[dict[str, Any]]:
    return [m for call in backend.calls for ms in call["rmqMessagesByQueue"].values() for m in ms]


async def test_event_has_the_amazon_mq_shape_field_by_field(
    rabbitmq_url: str, tmp_path: Path
) -> None:
    async with broker(rabbitmq_url) as b:
        q = await b.queue()
        await b.publish(
            q,
            b'{"order": 42}',
            content_type="application/json",
            content_encoding="utf-8",
            headers={"s": "value1", "n": 10, "flag": True, "ratio": 1.5, "u": "é"},
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            priority=5,
            correlation_id="corr-1",
            reply_to="replies",
            expiration=60,
            message_id="m-1",
            timestamp=datetime(1970, 1, 1, 0, 33, 41, tzinfo=UTC),
            type="order.created",
            user_id="guest",
            app_id="shop",
        )
        await b.publish_bare(q, b"plain")
        backend = FakeBackend()
        async with harness(tmp_path, src(rabbitmq_url, q), backend, batching_window_s=0.2) as h:
            await h.run_until(lambda: len(entries(backend)) == 2)
    event = backend.calls[0]
    assert list(event) == ["eventSource", "eventSourceArn", "rmqMessagesByQueue"]
    assert event["eventSource"] == "aws:rmq"
    assert event["eventSourceArn"].startswith(
        "arn:aws:mq:us-east-1:123456789012:broker:127.0.0.1:b-"
    )
    assert list(event["rmqMessagesByQueue"]) == [f"{q}::/"]
    full, bare = entries(backend)
    assert full["redelivered"] is False
    assert base64.b64decode(full["data"]) == b'{"order": 42}'
    assert full["basicProperties"] == {
        "contentType": "application/json",
        "contentEncoding": "utf-8",
        "headers": {
            "s": {"bytes": list(b"value1")},
            "n": 10,
            "flag": True,
            "ratio": 1.5,
            "u": {"bytes": [-61, -87]},
        },
        "deliveryMode": 2,
        "priority": 5,
        "correlationId": "corr-1",
        "replyTo": "replies",
        "expiration": "60000",
        "messageId": "m-1",
        "timestamp": "Jan 1, 1970, 12:33:41 AM",
        "type": "order.created",
        "userId": "guest",
        "appId": "shop",
        "clusterId": None,
        "bodySize": 13,
    }
    assert base64.b64decode(bare["data"]) == b"plain"
    props = bare["basicProperties"]
    assert props["bodySize"] == 5
    assert [k for k, v in props.items() if v is not None] == ["messageId", "bodySize"]
    assert len(props) == 15, "every property key is present, null when unset"


class GateBackend(FakeBackend):
    """Holds every invocation until `gate` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.started = asyncio.Event()

    async def invoke(self, payload: bytes, **kw: Any) -> Any:
        self.started.set()
        await self.gate.wait()
        return await super().invoke(payload, **kw)


async def test_message_is_acked_only_after_the_function_succeeded(
    rabbitmq_url: str, tmp_path: Path
) -> None:
    async with broker(rabbitmq_url) as b:
        q = await b.queue()
        await b.publish(q, b"1")
        backend = GateBackend()
        async with harness(tmp_path, src(rabbitmq_url, q), backend, batching_window_s=0) as h:
            task = asyncio.create_task(h.run_until(lambda: len(backend.calls) == 1))
            await asyncio.wait_for(backend.started.wait(), 10)
            during = await asyncio.to_thread(queue_counts, q)
            backend.gate.set()
            await task
            after = await asyncio.to_thread(queue_counts, q)
    assert during == (0, 1), "invoked but not yet acked"
    assert after == (0, 0)


async def test_failed_invocation_requeues_and_redelivers_with_redelivered_true(
    rabbitmq_url: str, tmp_path: Path
) -> None:
    results = iter([ValueError("first fails"), None])

    def respond(event: dict[str, Any]) -> Any:
        outcome = next(results)
        if outcome is not None:
            raise outcome
        return None

    async with broker(rabbitmq_url) as b:
        q = await b.queue()
        await b.publish(q, b"x", message_id="r-1")
        backend = FakeBackend(respond)
        async with harness(tmp_path, src(rabbitmq_url, q), backend, batching_window_s=0) as h:
            await h.run_until(lambda: len(backend.calls) == 2)
        left = await b.drain(q)
    assert [e["redelivered"] for e in entries(backend)] == [False, True]
    assert left == []


async def test_poison_message_goes_to_the_file_destination_after_max_retries_and_is_acked(
    rabbitmq_url: str, tmp_path: Path
) -> None:
    dlq = tmp_path / "dlq.jsonl"
    async with broker(rabbitmq_url) as b:
        q = await b.queue()
        await b.publish(q, b"good-1")
        await b.publish(q, b"poison", message_id="p-1")
        await b.publish(q, b"good-2")
        backend = FakeBackend(poison)
        async with harness(
            tmp_path,
            src(rabbitmq_url, q),
            backend,
            batch_size=1,
            batching_window_s=0,
            maximum_retry_attempts=2,
            on_failure={"type": "file", "path": str(dlq)},
        ) as h:
            await h.run_until(lambda: dlq.exists() and len(read_jsonl(dlq)) == 1)
        left = await b.drain(q)
    delivered = all_bodies(backend)
    assert delivered.count(b"poison") == 3, "first try + 2 retries"
    assert delivered.count(b"good-1") == 1 and delivered.count(b"good-2") == 1
    [record] = read_jsonl(dlq)
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3
    info = record["RabbitMQBatchInfo"]
    assert info["queue"] == q and info["itemIdentifiers"] == ["p-1"]
    assert bodies(record["payload"]) == [b"poison"]
    assert left == [], "the poison message was acked after the destination took it"


async def test_dead_letter_exchange_takes_the_poison_message_without_a_destination(
    rabbitmq_url: str, tmp_path: Path
) -> None:
    async with broker(rabbitmq_url) as b:
        dlx = await b.exchange("dlx")
        parked = await b.queue("parked")
        await (await b.channel.get_queue(parked)).bind(dlx)
        q = await b.queue(arguments={"x-dead-letter-exchange": dlx})
        await b.publish(q, b"poison")
        await b.publish(q, b"fine")
        backend = FakeBackend(poison)
        async with harness(
            tmp_path,
            src(rabbitmq_url, q, dead_letter_after_attempts=2),
            backend,
            batch_size=1,
            batching_window_s=0,
        ) as h:
            await h.run_until(lambda: all_bodies(backend).count(b"poison") == 2)
            dead = await b.wait_drain(parked, 1)
        left = await b.drain(q)
    assert [m.body for m in dead] == [b"poison"]
    death: Any = dead[0].headers["x-death"]
    assert death[0]["reason"] == "rejected"
    assert all_bodies(backend).count(b"fine") == 1
    assert left == []


async def test_quorum_queue_counts_attempts_with_x_delivery_count_across_restarts(
    rabbitmq_url: str, tmp_path: Path
) -> None:
    dlq = tmp_path / "dlq.jsonl"
    q = unique("quorum")
    cfg = src(rabbitmq_url, q, declare=True, queue_arguments={"x-queue-type": "quorum"})
    settings: dict[str, Any] = {
        "batch_size": 1,
        "batching_window_s": 0,
        "maximum_retry_attempts": 2,
        "on_failure": {"type": "file", "path": str(dlq)},
    }
    async with broker(rabbitmq_url) as b:
        b.owns(q)
        first = FakeBackend(poison, delay_s=0.3)  # stopped during the first call
        async with harness(tmp_path, cfg, first, **settings) as h:
            await b.publish(q, b"poison")
            await h.run_until(lambda: len(first.calls) >= 1)
        # A new source (its own redelivery memory is empty): the broker's count carries on.
        second = FakeBackend(poison)
        async with harness(tmp_path, cfg, second, **settings) as h:
            await h.run_until(lambda: dlq.exists() and len(read_jsonl(dlq)) == 1)
        left = await b.drain(q)
    headers = [e["basicProperties"]["headers"] for e in entries(first) + entries(second)]
    counts = [h.get("x-delivery-count") if h else None for h in headers]
    assert counts[0] is None, "a first delivery has no count"
    later = [c for c in counts[1:] if isinstance(c, int)]
    assert later == counts[1:] and all(c >= 1 for c in later)
    assert later == sorted(later)
    # A fresh count would take 3 calls in the second run; the broker's count makes it fewer.
    # (RabbitMQ 3.x also counts the requeue when the first source's connection closed.)
    assert 1 <= len(second.calls) < 3
    assert read_jsonl(dlq)[0]["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert left == []


async def test_filters_match_the_decoded_data_and_filtered_messages_are_acked(
    rabbitmq_url: str, tmp_path: Path
) -> None:
    async with broker(rabbitmq_url) as b:
        q = await b.queue()
        for kind in ("keep", "drop", "keep"):
            await b.publish(q, json.dumps({"kind": kind}).encode())
        await b.publish(q, b"not json")
        backend = FakeBackend()
        async with harness(
            tmp_path,
            src(rabbitmq_url, q),
            backend,
            batching_window_s=0.2,
            filters=[{"data": {"kind": ["keep"]}}],
        ) as h:
            await h.run_until(
                lambda: (
                    h.trigger.rt.metrics.records_received.labels("t")._value.get() == 4
                    and len(all_bodies(backend)) == 2
                )
            )
        left = await b.drain(q)
    assert [json.loads(x) for x in all_bodies(backend)] == [{"kind": "keep"}, {"kind": "keep"}]
    assert left == []


async def test_non_json_and_binary_bodies_arrive_base64_encoded(
    rabbitmq_url: str, tmp_path: Path
) -> None:
    payloads = [b"not json {", b"\x00\xff\xfe binary", b""]
    async with broker(rabbitmq_url) as b:
        q = await b.queue()
        for body in payloads:
            await b.publish(q, body)
        backend = FakeBackend()
        async with harness(tmp_path, src(rabbitmq_url, q), backend) as h:
            await h.run_until(lambda: len(all_bodies(backend)) == 3)
    assert sorted(all_bodies(backend)) == sorted(payloads)


async def test_oversize_message_goes_to_the_destination_and_is_acked(
    rabbitmq_url: str, tmp_path: Path
) -> None:
    dlq = tmp_path / "dlq.jsonl"
    async with broker(rabbitmq_url) as b:
        q = await b.queue()
        await b.publish(q, b"a" * (5 * 1024 * 1024))  # 6.7 MB once base64-encoded
        await b.publish(q, b"small")
        backend = FakeBackend()
        async with harness(
            tmp_path,
            src(rabbitmq_url, q),
            backend,
            batch_size=1,
            batching_window_s=0,
            on_failure={"type": "file", "path": str(dlq)},
        ) as h:
            await h.run_until(lambda: dlq.exists() and all_bodies(backend) == [b"small"])
        left = await b.drain(q)
    [record] = read_jsonl(dlq)
    assert record["requestContext"]["condition"] == "MaximumPayloadSizeExceeded"
    assert left == []


async def test_ordered_queue_redelivers_a_failed_batch_in_queue_order(
    rabbitmq_url: str, tmp_path: Path
) -> None:
    failed = False

    def respond(event: dict[str, Any]) -> Any:
        nonlocal failed
        if b"m3" in bodies(event) and not failed:
            failed = True
            raise ValueError("once")
        return None

    async with broker(rabbitmq_url) as b:
        q = await b.queue()
        for i in range(8):
            await b.publish(q, f"m{i}".encode())
        backend = FakeBackend(respond)
        async with harness(
            tmp_path,
            src(rabbitmq_url, q, ordered=True),
            backend,
            batch_size=2,
            batching_window_s=0,  # maximum_concurrency's default (4) allows four batches
        ) as h:
            await h.run_until(lambda: b"m7" in all_bodies(backend) and failed)
    calls = [[x.decode() for x in bodies(c)] for c in backend.calls]
    failing = next(i for i, c in enumerate(calls) if "m3" in c)
    succeeded = [x for i, c in enumerate(calls) if i != failing for x in c]
    assert succeeded == [f"m{i}" for i in range(8)]


# ---- bad configuration and connection problems ----------------------------------------------


def source_config(**source: Any) -> Any:
    data = {
        "functions": {"f": {"backend": "fake"}},
        "triggers": [{"function": "f", "source": {"type": "rabbitmq", **source}}],
    }
    return validate_data(data, registry(), base_dir=Path(".")).trigger_list[0].source_config


async def test_wrong_password_is_a_clear_error_without_the_password(
    rabbitmq_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = rabbitmq_url.replace("guest:guest", "guest:Sup3rSecretPw")
    cfg = source_config(url=url, queue="whatever")
    source = registry().source("rabbitmq").create(cfg, context())
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ConfigError) as err:
        await source.start()
    await source.stop()
    message = str(err.value)
    assert "login refused for user 'guest'" in message
    assert "amqp://guest:***@127.0.0.1:5672/" in message
    assert "Sup3rSecretPw" not in message
    assert "Sup3rSecretPw" not in caplog.text
    assert err.value.__cause__ is None


def context() -> SourceContext:
    return SourceContext(
        trigger="t",
        state=None,  # type: ignore[arg-type]
        clock=SystemClock(),
        log=logging.getLogger("test.rabbitmq"),
    )


async def test_unreachable_broker_is_retried_with_backoff_and_logged_without_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tests.conftest import free_port

    cfg = source_config(
        host="127.0.0.1",
        port=free_port(),
        password="An0therSecret",
        queue="q",
        reconnect_base_delay_s=0.05,
        connect_timeout_s=2,
    )
    source = registry().source("rabbitmq").create(cfg, context())
    caplog.set_level(logging.DEBUG)
    await source.start()  # does not raise: the broker may come up later
    assert await source.receive(10, 0.3) == []
    await source.stop()
    failures = [r for r in caplog.records if r.msg == "source.rabbitmq.connect_failed"]
    assert len(failures) >= 2, "start, then receive retried"
    assert "cannot connect" in failures[0].error  # type: ignore[attr-defined]
    assert "An0therSecret" not in caplog.text
    assert all("An0therSecret" not in str(r.__dict__) for r in caplog.records)


async def test_missing_queue_names_the_queue(rabbitmq_url: str) -> None:
    q = unique("missing")
    source = (
        registry().source("rabbitmq").create(source_config(url=rabbitmq_url, queue=q), context())
    )
    with pytest.raises(ConfigError, match=f"queue '{q}' does not exist"):
        await source.start()
    await source.stop()


def test_url_and_host_together_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="set either url or host, not both"):
        source_config(url="amqp://guest:pw12345@localhost/", host="other", queue="q")


async def test_out_of_order_batch_completion_never_acks_a_tag_twice(
    rabbitmq_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Coalesced multiple-acks and single acks of concurrent batches must not overlap (the
    broker closes the channel on an unknown delivery tag, and everything is redelivered)."""
    import random

    rng = random.Random(7)
    caplog.set_level(logging.INFO, logger="test.rabbitmq")

    class Jitter(FakeBackend):
        async def invoke(self, payload: bytes, **kw: Any) -> Any:
            await asyncio.sleep(rng.random() * 0.01)
            return await super().invoke(payload, **kw)

    total = 600
    async with broker(rabbitmq_url) as b:
        q = await b.queue()
        for i in range(total):
            await b.publish(q, str(i).encode())
        backend = Jitter()
        async with harness(
            tmp_path,
            src(rabbitmq_url, q),
            backend,
            batch_size=5,
            batching_window_s=0,
            maximum_concurrency=8,
        ) as h:
            await h.run_until(lambda: len(all_bodies(backend)) >= total, timeout=60)
        left = await b.drain(q)
    assert sorted(int(x) for x in all_bodies(backend)) == list(range(total)), "each exactly once"
    assert not [r for r in caplog.records if r.msg == "source.rabbitmq.closed"]
    assert left == []
