"""The pipeline side of the `sns_http` source (PushedSource): what `receive` hands out and how
SNS's waiting deliveries are answered. The HTTP side is tests/integration/test_sns_http.py."""

from __future__ import annotations

import asyncio
import logging

from tests.fakes import FakeClock
from triggerd.http.pushed import Pending
from triggerd.types import Record, SourceContext
from triggerd_sns_http.config import SnsHttpSourceConfig
from triggerd_sns_http.source import SnsHttpSource


def make() -> SnsHttpSource:
    config = SnsHttpSourceConfig.model_validate({"type": "sns_http", "path": "/sns"})
    ctx = SourceContext(
        trigger="t1",
        state=None,  # type: ignore[arg-type]
        clock=FakeClock(),
        log=logging.getLogger("test.sns_http"),
    )
    return SnsHttpSource(config, ctx)


def push(src: SnsHttpSource, message_id: str) -> Pending:
    """A notification waiting for the pipeline, as the source's handler queues it."""
    pending = Pending(asyncio.get_running_loop().create_future())
    event = {"Records": [{"Sns": {"MessageId": message_id}}]}
    src._pending.push(Record(event, message_id, 10, 0.0, handle=pending))
    return pending


async def test_receive_skips_a_notification_sns_got_503_for_and_ack_answers_the_rest() -> None:
    src = make()
    gone = push(src, "m1")
    gone.future.cancel()  # what the handler does when accept_timeout_s passes
    kept = push(src, "m2")
    got = await src.receive(10, 0.1)
    assert [r.item_id for r in got] == ["m2"]
    assert src.envelope(got) == {"Records": [{"Sns": {"MessageId": "m2"}}]}
    await src.ack(got)
    assert kept.future.result() is True


async def test_stop_answers_waiting_notifications_as_not_stored() -> None:
    src = make()
    waiting = push(src, "m1")
    await src.stop()
    assert waiting.future.result() is False
    assert await src.receive(10, 0.01) == []
