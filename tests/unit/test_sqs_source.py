"""The sqs source's logic with a fake SQS client and a manual clock: pollers and back-pressure,
deletes in chunks with retries, FIFO nacks, the visibility heartbeat, releasing on stop."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from tests.fakes import StillClock
from triggerd.state.sqlite import MEMORY_PATH, SQLiteStateStore
from triggerd.types import Record, SourceContext
from triggerd_sqs.client import batch_entries
from triggerd_sqs.config import SqsSourceConfig
from triggerd_sqs.source import SqsSource

URL = "http://sqs.local/123456789012/q"


def message(i: int, group: str | None = None) -> dict[str, Any]:
    attrs = {"ApproximateReceiveCount": "1", "SentTimestamp": "1700000000000"}
    if group:
        attrs["MessageGroupId"] = group
    return {
        "MessageId": f"id-{i}",
        "ReceiptHandle": f"rh-{i}",
        "Body": f"b{i}",
        "Attributes": attrs,
    }


class FakeClient:
    """Hands out `messages`; an empty receive waits briefly like a long poll."""

    def __init__(self, messages: list[dict[str, Any]] | None = None) -> None:
        self.messages = list(messages or [])
        self.receives: list[int] = []
        self.concurrent = 0
        self.max_concurrent = 0
        self.deleted: list[str] = []
        self.visibility: list[tuple[str, int]] = []
        #: Entry ids failed (server side, retryable) on the next delete call.
        self.fail_delete_once: set[str] = set()

    async def get_queue_attributes(self, **_: Any) -> dict[str, Any]:
        return {
            "Attributes": {
                "QueueArn": "arn:aws:sqs:us-east-1:123456789012:q",
                "VisibilityTimeout": "8",
            }
        }

    async def receive_message(self, **kw: Any) -> dict[str, Any]:
        self.receives.append(kw["MaxNumberOfMessages"])
        self.concurrent += 1
        self.max_concurrent = max(self.max_concurrent, self.concurrent)
        try:
            await asyncio.sleep(0.01 if self.messages else 0.05)
            n = kw["MaxNumberOfMessages"]
            out, self.messages = self.messages[:n], self.messages[n:]
            return {"Messages": out} if out else {}
        finally:
            self.concurrent -= 1

    async def delete_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> Any:
        assert len(Entries) <= 10
        failed = [e for e in Entries if e["ReceiptHandle"] in self.fail_delete_once]
        self.fail_delete_once -= {e["ReceiptHandle"] for e in failed}
        self.deleted += [e["ReceiptHandle"] for e in Entries if e not in failed]
        return {
            "Successful": [{"Id": e["Id"]} for e in Entries if e not in failed],
            "Failed": [
                {"Id": e["Id"], "SenderFault": False, "Code": "InternalError"} for e in failed
            ],
        }

    async def change_message_visibility_batch(
        self,
        QueueUrl: str,
        Entries: list[dict[str, Any]],
    ) -> Any:
        assert len(Entries) <= 10
        self.visibility += [(e["ReceiptHandle"], e["VisibilityTimeout"]) for e in Entries]
        return {"Successful": [{"Id": e["Id"]} for e in Entries], "Failed": []}


def make_source(client: FakeClient, clock: StillClock | None = None, **extra: Any) -> SqsSource:
    config = SqsSourceConfig.model_validate({"type": "sqs", "queue_url": URL, **extra})
    ctx = SourceContext(
        trigger="t",
        state=SQLiteStateStore(MEMORY_PATH),
        clock=clock or StillClock(),
        log=logging.getLogger("test.sqs"),
    )
    return SqsSource(config, ctx, client=client)


async def take(src: SqsSource, count: int) -> list[Record]:
    out: list[Record] = []
    for _ in range(200):
        out += await src.receive(count - len(out), 0.05)
        if len(out) >= count:
            break
    return out


async def test_pollers_scale_up_while_receives_are_full_and_never_exceed_the_limit() -> None:
    client = FakeClient([message(i) for i in range(200)])
    src = make_source(client, max_pollers=3, extend_visibility=False)
    await src.start()
    try:
        got = await take(src, 200)
    finally:
        await src.stop()
    assert sorted(r.item_id for r in got) == sorted(f"id-{i}" for i in range(200))
    assert client.max_concurrent == 3
    assert all(n == 10 for n in client.receives)


async def test_pollers_stop_asking_when_the_buffer_is_full() -> None:
    client = FakeClient([message(i) for i in range(100)])
    src = make_source(client, max_pollers=2, prefetch=20, extend_visibility=False)
    await src.start()
    try:
        async with asyncio.timeout(20):  # the buffer fills (a loaded machine is slower)
            while src.outstanding < 20:
                await asyncio.sleep(0.01)
        for _ in range(20):  # then the pollers would have asked for more by now
            await asyncio.sleep(0.02)
        assert src.outstanding == 20, "exactly the prefetch, nothing more"
        assert len(client.messages) == 80
    finally:
        await src.stop()
    assert sorted(h for h, v in client.visibility if v == 0) == sorted(f"rh-{i}" for i in range(20))


async def test_ack_deletes_in_chunks_of_ten_and_retries_server_side_failures() -> None:
    client = FakeClient([message(i) for i in range(25)])
    client.fail_delete_once = {"rh-3", "rh-17"}
    src = make_source(client, extend_visibility=False)
    await src.start()
    try:
        got = await take(src, 25)
        await src.ack(got)
    finally:
        await src.stop()
    assert sorted(client.deleted) == sorted(f"rh-{i}" for i in range(25))
    assert src.outstanding == 0


async def test_fifo_nack_gives_back_the_buffered_rest_of_the_group() -> None:
    msgs = [message(0, "A"), message(1, "A"), message(2, "B"), message(3, "A")]
    client = FakeClient(msgs)
    src = make_source(
        client,
        queue_url=URL + ".fifo",
        nack_visibility_timeout_s=0,
        extend_visibility=False,
    )
    await src.start()
    try:
        [first] = await take(src, 1)
        assert first.key == "A"
        for _ in range(10):  # let the rest arrive in the buffer
            await asyncio.sleep(0.01)
        await src.nack([first])
        rest = await take(src, 1)
    finally:
        await src.stop()
    assert [r.item_id for r in rest] == ["id-2"], "only group B is left"
    assert [h for h, _ in client.visibility] == ["rh-0", "rh-1", "rh-3"]


async def test_heartbeat_extends_only_messages_about_to_time_out() -> None:
    clock = StillClock()
    client = FakeClient([message(0), message(1)])
    src = make_source(client, clock, visibility_timeout_s=8, extend_visibility=False)
    await src.start()
    try:
        first = await take(src, 2)
        assert await src.extend_due() == 0, "fresh messages are not extended"
        clock.now += 2.5  # 5.5 s left: within 3/4 of the timeout
        assert await src.extend_due() == 2
        assert client.visibility == [("rh-0", 8), ("rh-1", 8)]
        await src.ack(first[:1])
        clock.now += 1
        assert await src.extend_due() == 0, "just extended"
        clock.now += 2
        assert await src.extend_due() == 1, "the acked one is no longer extended"
        assert client.visibility[-1] == ("rh-1", 8)
    finally:
        await src.stop()


class Unreachable(Exception):
    pass


async def test_a_heartbeat_call_that_fails_is_tried_again_at_the_next_tick() -> None:
    """No answer (the endpoint down for a few seconds) says nothing about the messages: they
    stay extended. They were dropped as if deleted, so they became visible again while the
    function still ran, and were invoked a second time."""
    clock = StillClock()
    client = FakeClient([message(0), message(1)])
    src = make_source(client, clock, visibility_timeout_s=8, extend_visibility=False)
    await src.start()
    answer = client.change_message_visibility_batch

    async def unreachable(**_: Any) -> Any:
        raise Unreachable("could not connect")

    try:
        await take(src, 2)
        clock.now += 2.5
        client.change_message_visibility_batch = unreachable  # type: ignore[method-assign]
        assert await src.extend_due() == 0
        assert src.outstanding == 2
        client.change_message_visibility_batch = answer  # type: ignore[method-assign]
        clock.now += 2
        assert await src.extend_due() == 2
        assert client.visibility == [("rh-0", 8), ("rh-1", 8)]
    finally:
        await src.stop()


async def test_a_message_the_server_refuses_to_extend_is_no_longer_extended() -> None:
    clock = StillClock()
    client = FakeClient([message(0), message(1)])
    src = make_source(client, clock, visibility_timeout_s=8, extend_visibility=False)
    await src.start()

    async def refuse_rh0(QueueUrl: str, Entries: list[dict[str, Any]]) -> Any:
        failed = [e for e in Entries if e["ReceiptHandle"] == "rh-0"]
        client.visibility += [(e["ReceiptHandle"], 8) for e in Entries if e not in failed]
        return {
            "Successful": [{"Id": e["Id"]} for e in Entries if e not in failed],
            "Failed": [
                {"Id": e["Id"], "SenderFault": True, "Code": "ReceiptHandleIsInvalid"}
                for e in failed
            ],
        }

    client.change_message_visibility_batch = refuse_rh0  # type: ignore[method-assign]
    try:
        await take(src, 2)
        clock.now += 2.5
        assert await src.extend_due() == 1
        assert src.outstanding == 1, "rh-0 is gone (deleted meanwhile, received elsewhere)"
    finally:
        await src.stop()


def test_prefetch_below_one_receive_is_refused() -> None:
    def buffer(**extra: Any) -> int:
        config = {"type": "sqs", "queue_url": URL, **extra}
        return SqsSourceConfig.model_validate(config).buffer_capacity

    assert (buffer(), buffer(max_pollers=2), buffer(prefetch=10)) == (50, 20, 10)
    with pytest.raises(ValueError, match=r"prefetch\n.*at least 10 \(one ReceiveMessage"):
        buffer(prefetch=5)


def test_visibility_timeout_zero_is_refused() -> None:
    """Received messages would be visible again at once: received and invoked again and
    again while the function runs (it was taken, and 30 s used for the heartbeat)."""
    with pytest.raises(ValueError, match=r"visibility_timeout_s\n.*greater than or equal to 1"):
        SqsSourceConfig.model_validate({"type": "sqs", "queue_url": URL, "visibility_timeout_s": 0})


def test_heartbeat_period_is_a_quarter_of_the_visibility_timeout() -> None:
    src = make_source(FakeClient(), visibility_timeout_s=40)
    assert src.heartbeat_tick_s == 10.0


async def test_filter_view_parses_json_bodies_and_keeps_text() -> None:
    client = FakeClient()
    src = make_source(client)
    json_rec = Record(
        payload={"body": '{"a": 1}', "messageId": "x"}, item_id="x", size=1, created_at=0
    )
    text_rec = Record(payload={"body": "hi", "messageId": "y"}, item_id="y", size=1, created_at=0)
    assert src.filter_view(json_rec)["body"] == {"a": 1}
    assert src.filter_view(text_rec)["body"] == "hi"
    assert json_rec.payload["body"] == '{"a": 1}', "the delivered record is untouched"
    assert src.batch_info([json_rec]) == {}


async def test_batch_entries_reports_sender_faults_without_retrying() -> None:
    calls: list[int] = []

    async def call(chunk: list[dict[str, Any]]) -> dict[str, Any]:
        calls.append(len(chunk))
        return {
            "Failed": [
                {"Id": chunk[0]["Id"], "SenderFault": True, "Code": "ReceiptHandleIsInvalid"}
            ]
        }

    async def no_sleep(_: float) -> None:
        return None

    failed = await batch_entries(
        call, [{"ReceiptHandle": "a"}, {"ReceiptHandle": "b"}], sleep=no_sleep
    )
    assert calls == [2]
    assert failed == [({"ReceiptHandle": "a"}, "ReceiptHandleIsInvalid")]


async def test_batch_entries_gives_up_after_the_attempts_when_the_call_raises() -> None:
    async def call(chunk: list[dict[str, Any]]) -> dict[str, Any]:
        raise ConnectionError("down")

    async def no_sleep(_: float) -> None:
        return None

    failed = await batch_entries(call, [{"ReceiptHandle": "a"}], sleep=no_sleep, attempts=2)
    assert failed == [({"ReceiptHandle": "a"}, "ConnectionError: down")]


@pytest.mark.parametrize("bad", [{"ReceiptHandle": "r"}, {"MessageId": "m"}])
async def test_malformed_messages_are_skipped_and_logged(
    bad: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    client = FakeClient([bad, message(1)])
    src = make_source(client, extend_visibility=False)
    await src.start()
    try:
        got = await take(src, 1)
    finally:
        await src.stop()
    assert [r.item_id for r in got] == ["id-1"]
    assert "sqs.malformed_message" in caplog.text


async def test_start_warns_when_batches_are_split_without_extending_visibility(
    caplog: pytest.LogCaptureFixture,
) -> None:
    src = make_source(FakeClient(), extend_visibility=False)
    src.ctx.splits_batches = True
    await src.start()
    await src.stop()
    [line] = [r for r in caplog.records if r.getMessage() == "sqs.split_without_extend_visibility"]
    assert line.levelno == logging.WARNING
    assert getattr(line, "visibility_timeout_s") == 8  # noqa: B009


async def test_hold_limit_is_the_visibility_ceiling_or_timeout_less_one_invocation() -> None:
    """SQS takes a message back after 12 hours even with the heartbeat, and after the
    visibility timeout without it: a split must end with room for one more invocation."""
    src = make_source(FakeClient())  # function timeout 3 s
    assert src.hold_limit_s() == 43_200 - 3 - 60
    src = make_source(FakeClient(), extend_visibility=False, visibility_timeout_s=120)
    assert src.hold_limit_s() == 120 - 3 - 12
    src = make_source(FakeClient(), extend_visibility=False, visibility_timeout_s=3)
    assert src.hold_limit_s() is None, "no room for an invocation: no limit to keep"
