"""The rabbitmq on-failure destination against the machine's broker: confirmed publishes,
errors that the pipeline retries, and a poison message acked only after the confirm."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import FakeBackend
from tests.integration.rabbitmq_support import (
    bodies,
    broker,
    close_connection,
    harness,
    poison,
    queue_counts,
    registry,
    unique,
)
from triggerd.config.load import validate_data
from triggerd.types import ConfigError, DestinationContext, RetryableError, SystemClock

pytestmark = pytest.mark.integration

RECORD = {
    "requestContext": {
        "requestId": "c9b8fa9f-5a7f-4f2e-af9c-0c604cde93a5",
        "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:f",
        "condition": "RetryAttemptsExhausted",
        "approximateInvokeCount": 3,
    },
    "version": "1.0",
}


def destination(**cfg: Any) -> Any:
    data = {
        "functions": {"f": {"backend": "fake"}},
        "triggers": [
            {
                "function": "f",
                "source": {"type": "rabbitmq", "queue": "unused"},
                "on_failure": {"type": "rabbitmq", **cfg},
            }
        ],
    }
    dcfg = validate_data(data, registry(), base_dir=Path(".")).trigger_list[0].on_failure_config
    ctx = DestinationContext(trigger="t", clock=SystemClock(), log=logging.getLogger("test.rmq"))
    return registry().destination("rabbitmq").create(dcfg, ctx)


async def test_send_publishes_the_record_json_persistently_with_a_confirm(
    rabbitmq_url: str,
) -> None:
    async with broker(rabbitmq_url) as b:
        q = await b.queue("dlq")
        dest = destination(url=rabbitmq_url, routing_key=q)
        await dest.start()
        await dest.send(RECORD)
        await dest.stop()
        [msg] = await b.drain(q)  # the confirm means it is already in the queue
    assert json.loads(msg.body) == RECORD
    assert msg.content_type == "application/json"
    assert msg.delivery_mode == 2
    assert msg.message_id == "c9b8fa9f-5a7f-4f2e-af9c-0c604cde93a5"
    assert msg.headers == {
        "x-triggerd-trigger": "t",
        "x-triggerd-condition": "RetryAttemptsExhausted",
    }


async def test_send_to_a_named_exchange_reaches_its_bound_queue(rabbitmq_url: str) -> None:
    async with broker(rabbitmq_url) as b:
        x = await b.exchange("fail", kind="direct")
        q = await b.queue("bound")
        await (await b.channel.get_queue(q)).bind(x, routing_key="failed")
        dest = destination(url=rabbitmq_url, exchange=x, routing_key="failed")
        await dest.start()
        await dest.send(RECORD)
        await dest.stop()
        [msg] = await b.drain(q)
    assert json.loads(msg.body) == RECORD


async def test_unroutable_record_raises_so_the_pipeline_retries(rabbitmq_url: str) -> None:
    dest = destination(url=rabbitmq_url, routing_key=unique("nowhere"))
    await dest.start()
    with pytest.raises(RetryableError, match="could not route"):
        await dest.send(RECORD)
    await dest.stop()


async def test_missing_exchange_is_a_permanent_error_at_start(rabbitmq_url: str) -> None:
    dest = destination(url=rabbitmq_url, exchange=unique("absent"), routing_key="k")
    with pytest.raises(ConfigError, match="on-failure exchange"):
        await dest.start()
    await dest.stop()


async def test_wrong_password_is_a_permanent_error_without_the_password(
    rabbitmq_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = rabbitmq_url.replace("guest:guest", "guest:Dest1nationPw")
    dest = destination(url=url, routing_key="k")
    with pytest.raises(ConfigError) as err:
        await dest.start()
    await dest.stop()
    assert "login refused" in str(err.value)
    assert "Dest1nationPw" not in str(err.value) and "Dest1nationPw" not in caplog.text


async def test_send_reconnects_after_the_broker_closed_the_connection(
    rabbitmq_url: str, tmp_path: Path
) -> None:
    name = f"triggerd-test-dest-{tmp_path.name}"[:200]
    async with broker(rabbitmq_url) as b:
        q = await b.queue("dlq")
        dest = destination(url=rabbitmq_url, routing_key=q, connection_name=name)
        await dest.start()
        await dest.send(RECORD)
        assert close_connection(name) == 1
        try:
            await dest.send(RECORD)  # may notice the closed connection only now
        except RetryableError:
            await dest.send(RECORD)  # what OnFailure does: try again
        await dest.stop()
        got = await b.drain(q)
    assert len(got) == 2


async def test_poison_message_is_acked_only_after_the_rabbitmq_destination_confirmed(
    rabbitmq_url: str, tmp_path: Path
) -> None:
    async with broker(rabbitmq_url) as b:
        q = await b.queue("work")
        dlq = await b.queue("dlq")
        await b.publish(q, b"poison", message_id="p-9")
        await b.publish(q, b"ok")
        backend = FakeBackend(poison)
        async with harness(
            tmp_path,
            {"url": rabbitmq_url, "queue": q},
            backend,
            batch_size=1,
            batching_window_s=0,
            maximum_retry_attempts=1,
            on_failure={"type": "rabbitmq", "url": rabbitmq_url, "routing_key": dlq},
        ) as h:
            dead = h.trigger.rt.metrics.dead_lettered.labels("t", "RetryAttemptsExhausted")
            await h.run_until(lambda: dead._value.get() == 1 and len(backend.calls) == 3)
            got = await b.drain(dlq)
        left = await b.drain(q)
    [msg] = got
    record = json.loads(msg.body)
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert record["RabbitMQBatchInfo"]["itemIdentifiers"] == ["p-9"]
    assert left == [], "the poison message was acked after the confirm"
    assert [bodies(c) for c in backend.calls].count([b"poison"]) == 2


async def test_source_stays_unacked_while_the_destination_fails_then_is_acked(
    rabbitmq_url: str, tmp_path: Path
) -> None:
    async with broker(rabbitmq_url) as b:
        q = await b.queue("work")
        dlq_name = b.owns(unique("late-dlq"))  # does not exist yet: sends are unroutable
        await b.publish(q, b"poison")
        backend = FakeBackend(poison)
        async with harness(
            tmp_path,
            {"url": rabbitmq_url, "queue": q},
            backend,
            batching_window_s=0,
            maximum_retry_attempts=0,
            on_failure={"type": "rabbitmq", "url": rabbitmq_url, "routing_key": dlq_name},
        ) as h:
            failures = h.trigger.rt.metrics.dead_lettered.labels("t", "RetryAttemptsExhausted")
            task = asyncio.create_task(h.run_until(lambda: failures._value.get() == 1, 30))
            while len(backend.calls) < 1:
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)  # a send or two failed by now
            during = await asyncio.to_thread(queue_counts, q)
            await b.channel.declare_queue(dlq_name)
            await task
            after = await asyncio.to_thread(queue_counts, q)
            got = await b.drain(dlq_name)
    assert during == (0, 1), "held unacked while the destination refuses the record"
    assert after == (0, 0)
    assert len(got) == 1
