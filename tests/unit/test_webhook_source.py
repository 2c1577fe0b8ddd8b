"""Webhook source without a server: route registration, the token bucket on a fake clock, and
the event-mode hand-over (receive / ack / nack / withdraw)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from tests.fakes import FakeClock
from triggerd.http.routes import Routes
from triggerd.types import ConfigError, InvokeResult, Outcome, Record, SourceContext
from triggerd_webhook.config import WebhookSourceConfig
from triggerd_webhook.source import Pending, TokenBucket, WebhookSource, within


async def noop_invoke(payload: bytes) -> InvokeResult:
    return InvokeResult(Outcome.OK, b"{}", "r")


def make(routes: Routes | None = None, **source: Any) -> WebhookSource:
    config = WebhookSourceConfig.model_validate({"type": "webhook", "path": "/h", **source})
    ctx = SourceContext(
        trigger="t1",
        state=None,  # type: ignore[arg-type]
        clock=FakeClock(),
        log=logging.getLogger("test.webhook"),
        http=routes if routes is not None else Routes(),
        invoke=noop_invoke,
        function_timeout_s=3.0,
    )
    return WebhookSource(config, ctx)


def test_token_bucket_allows_the_burst_then_refills_at_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(2.0, 3, clock)
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.5)
    clock.now += 0.5
    assert bucket.take() == 0.0
    clock.now += 100
    assert [bucket.take() for _ in range(4)][-1] > 0, "never more than the burst saved"


async def test_start_adds_the_route_and_stop_removes_it() -> None:
    routes = Routes()
    src = make(routes, method="POST")
    await src.start()
    assert routes.match("POST", "/h") not in (None, False)
    await src.stop()
    assert routes.match("POST", "/h") is None


async def test_cors_adds_a_preflight_route_for_a_single_method() -> None:
    routes = Routes()
    src = make(routes, method="POST", cors={"allow_origins": ["*"]})
    await src.start()
    assert routes.match("OPTIONS", "/h") not in (None, False)


async def test_a_route_already_served_is_a_config_error() -> None:
    routes = Routes()
    await make(routes).start()
    with pytest.raises(ConfigError, match="already served"):
        await make(routes).start()


async def test_without_the_http_server_start_is_a_config_error() -> None:
    src = make()
    src.ctx.http = None
    with pytest.raises(ConfigError, match=r"daemon\.listen"):
        await src.start()


def pending_record(src: WebhookSource, rid: str) -> tuple[Record, Pending]:
    fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    pending = Pending(fut)
    rec = Record(payload={"id": rid}, item_id=rid, size=10, created_at=0.0, handle=pending)
    src._pending.push(rec)
    return rec, pending


async def test_receive_hands_out_records_and_ack_settles_them() -> None:
    src = make(invocation="event")
    _, p1 = pending_record(src, "a")
    _, p2 = pending_record(src, "b")
    got = await src.receive(10, 0.1)
    assert [r.item_id for r in got] == ["a", "b"]
    assert p1.taken and p2.taken
    assert src.envelope(got[:1]) == {"id": "a"}, "the bare event"
    await src.ack(got[:1])
    await src.nack(got[1:])
    assert p1.future.result() is True and p2.future.result() is False


async def test_receive_waits_at_most_the_timeout_and_skips_withdrawn_requests() -> None:
    src = make(invocation="event")
    assert await src.receive(10, 0.01) == []
    _, withdrawn = pending_record(src, "gone")
    withdrawn.future.cancel()
    pending_record(src, "kept")
    got = await src.receive(10, 0.1)
    assert [r.item_id for r in got] == ["kept"]


async def test_stop_answers_waiting_requests() -> None:
    src = make(invocation="event")
    await src.start()
    _, pending = pending_record(src, "x")
    await src.stop()
    assert pending.future.result() is False


# ---- within: the route timeout around a synchronous invocation ----------------------------


async def test_within_returns_the_result_in_time() -> None:
    async def quick() -> str:
        await asyncio.sleep(0)
        return "done"

    assert await within(5, quick()) == "done"
    current = asyncio.current_task()
    assert current is not None and current.cancelling() == 0


async def test_within_cancels_the_call_and_gives_none_past_the_deadline() -> None:
    cancelled = asyncio.Event()

    async def hang() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "late"

    assert await within(0.01, hang()) is None
    assert cancelled.is_set()
    current = asyncio.current_task()
    assert current is not None and current.cancelling() == 0  # the task can go on awaiting
    await asyncio.sleep(0)


async def test_within_lets_an_outside_cancellation_through() -> None:
    async def caller() -> str | None:
        return await within(30, asyncio.sleep(30, "late"))

    task = asyncio.create_task(caller())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
