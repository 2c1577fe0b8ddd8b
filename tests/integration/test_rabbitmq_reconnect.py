"""The rabbitmq source when the broker closes its connection mid-stream: it reconnects with
backoff, skips settlements of the dead channel, and every message is delivered (at least once).
When the broker cancels its consumer (the queue deleted): one warning, and it consumes again
once the queue is back."""

from __future__ import annotations

import asyncio
import base64
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
    registry,
)
from tests.integration.test_rabbitmq_source import context, source_config
from triggerd_rabbitmq import source as source_module

pytestmark = pytest.mark.integration


async def test_broker_side_connection_close_mid_stream_loses_nothing(
    rabbitmq_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="test.rabbitmq")
    total = 300
    name = f"triggerd-test-drop-{tmp_path.name}"[:200]
    dropped = asyncio.Event()

    class HoldBackend(FakeBackend):
        """After 50 messages, holds invocations until the connection was dropped, so the
        drop happens with batches in flight and deliveries unacked."""

        async def invoke(self, payload: bytes, **kw: Any) -> Any:
            if len(delivered()) >= 50:
                await dropped.wait()
            return await super().invoke(payload, **kw)

    backend = HoldBackend()
    seen: set[bytes] = set()

    def delivered() -> set[bytes]:
        for call in backend.calls[len(seen_calls) :]:
            seen.update(bodies(call))
            seen_calls.append(call)
        return seen

    seen_calls: list[dict[str, Any]] = []
    sent = {f"m{i}".encode() for i in range(total)}
    async with broker(rabbitmq_url) as b:
        q = await b.queue()
        for body in sorted(sent):
            await b.publish(q, body)
        source = {
            "url": rabbitmq_url,
            "queue": q,
            "connection_name": name,
            "reconnect_base_delay_s": 0.1,
            "prefetch_count": 50,
        }
        async with harness(
            tmp_path, source, backend, batch_size=10, batching_window_s=0, maximum_concurrency=2
        ) as h:

            async def drop_when_busy() -> int:
                while len(delivered()) < 50:
                    await asyncio.sleep(0.02)
                try:
                    return await asyncio.to_thread(close_connection, name)
                finally:
                    dropped.set()

            dropper = asyncio.create_task(drop_when_busy())
            await h.run_until(lambda: delivered() >= sent, timeout=60)
            closed = await dropper
        left = await b.drain(q)
    assert closed == 1
    assert delivered() == sent, "every message delivered"
    assert left == [], "and acked"
    events = [r.msg for r in caplog.records]
    assert "source.rabbitmq.disconnected" in events
    assert "source.rabbitmq.closed" in events, "the broker's close is logged"
    generations = [
        getattr(r, "generation", None)
        for r in caplog.records
        if r.msg == "source.rabbitmq.connected"
    ]
    assert generations[:2] == [1, 2]
    redelivered = [
        m["redelivered"]
        for c in backend.calls
        for ms in c["rmqMessagesByQueue"].values()
        for m in ms
    ]
    assert len(redelivered) >= total
    assert any(redelivered), "the unacked deliveries of the dead channel came back"
    assert "source.rabbitmq.settle_skipped" in events, "no ack sent with a stale delivery tag"


@pytest.mark.parametrize("declare", [False, True])
async def test_a_consumer_the_broker_cancels_consumes_again_once_the_queue_is_back(
    rabbitmq_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, declare: bool
) -> None:
    # Deleting a queue cancels its consumers (Basic.Cancel); the channel stays open. Before,
    # the trigger then waited for deliveries that never came, without a word. With
    # `declare`, the source declares the queue again; without, it checks for it at each
    # attempt (a connect_failed warning each) until someone declares it.
    caplog.set_level(logging.INFO, logger="test.rabbitmq")
    backend = FakeBackend()

    def got() -> list[bytes]:
        return [body for call in backend.calls for body in bodies(call)]

    async with broker(rabbitmq_url) as b:
        q = await b.queue()
        await b.publish(q, b"before")
        source = {
            "url": rabbitmq_url,
            "queue": q,
            "declare": declare,
            "reconnect_base_delay_s": 0.1,
            "reconnect_max_delay_s": 0.2,
        }
        async with harness(tmp_path, source, backend, batch_size=1, batching_window_s=0) as h:

            async def delete_then_publish() -> None:
                while got() != [b"before"]:
                    await asyncio.sleep(0.02)
                await b.channel.queue_delete(q)
                while not any(
                    r.msg == "source.rabbitmq.consumer_cancelled" for r in caplog.records
                ):
                    await asyncio.sleep(0.02)
                if not declare:
                    while not any(
                        r.msg == "source.rabbitmq.connect_failed" for r in caplog.records
                    ):
                        await asyncio.sleep(0.02)
                    await b.channel.declare_queue(q, durable=True)
                else:
                    while not await _exists(b, q):
                        await asyncio.sleep(0.05)
                await b.publish(q, b"after")

            task = asyncio.create_task(delete_then_publish())
            await h.run_until(lambda: len(got()) >= 2, timeout=30)
            await task
    assert got() == [b"before", b"after"]
    (cancelled,) = [r for r in caplog.records if r.msg == "source.rabbitmq.consumer_cancelled"]
    assert cancelled.levelno == logging.WARNING and cancelled.__dict__["queue"] == q
    generations = [
        r.__dict__["generation"] for r in caplog.records if r.msg == "source.rabbitmq.connected"
    ]
    assert generations[0] == 1 and len(generations) == 2, "one reconnect"
    assert not [r for r in caplog.records if r.msg == "source.rabbitmq.closed"], "its own close"


async def _exists(b: Any, queue: str) -> bool:
    """Whether `queue` exists (a passive declare on a channel of its own, which a missing
    queue closes)."""
    channel = await b.conn.channel()
    try:
        await channel.declare_queue(queue, passive=True)
        return True
    except Exception:
        return False
    finally:
        if not channel.is_closed:
            await channel.close()


async def test_a_broker_side_close_while_triggerd_closes_a_link_it_gave_up_is_logged(
    rabbitmq_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ordered mode gives its link up after a failure (closing it requeues everything) while
    # `receive` connects again meanwhile. The broker closing the new link's channel before
    # the old link's close is over (held here until then) is a real close: it was not
    # logged, the quiet close being the source's state rather than the old link's.
    caplog.set_level(logging.INFO, logger="test.rabbitmq")
    release = asyncio.Event()
    real_close = source_module._close_quietly

    async def held_close(conn: Any) -> None:
        await release.wait()
        await real_close(conn)

    monkeypatch.setattr(source_module, "_close_quietly", held_close)
    async with broker(rabbitmq_url) as b:
        q = await b.queue()
        await b.publish(q, b"m")
        cfg = source_config(url=rabbitmq_url, queue=q, ordered=True, reconnect_base_delay_s=0.1)
        source: Any = registry().source("rabbitmq").create(cfg, context())
        await source.start()
        try:
            (record,) = await source.receive(10, 5)
            record.failed = True
            giving_up = asyncio.create_task(source.nack([record]))
            while source._link is not None:
                await asyncio.sleep(0.01)
            assert await source.receive(10, 0.2) == []  # connects again; "m" is held by the old
            new = source._link
            assert new is not None and new.generation == 2
            _drain_inbox(source)
            await new.raw.basic_ack(10_000)  # an unknown tag: the broker closes the channel
            while source._inbox.empty():  # woken by the close callback
                await asyncio.sleep(0.01)
            release.set()
            await giving_up
            (again,) = await source.receive(10, 5)
        finally:
            release.set()
            await source.stop()
    assert again.payload["data"] == base64.b64encode(b"m").decode()
    assert source._generation == 3, "connected again after the broker's close"
    (closed,) = [r for r in caplog.records if r.msg == "source.rabbitmq.closed"]
    assert "PRECONDITION_FAILED" in closed.__dict__["reason"]


def _drain_inbox(source: Any) -> None:
    while not source._inbox.empty():
        source._inbox.get_nowait()
