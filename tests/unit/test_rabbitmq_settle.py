"""Settling on the channel the records came from, with coalesced acks, without a broker."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import triggerd_rabbitmq as rmq
from triggerd.types import Record, SourceContext, SystemClock
from triggerd_rabbitmq.source import Delivery, Link, RabbitMQSource


@dataclass
class FakeRaw:
    """Records frames as they would reach the socket; yields before each, as aiormq may."""

    frames: list[tuple[str, int, bool]] = field(default_factory=list)
    is_closed: bool = False

    async def basic_ack(self, tag: int, multiple: bool = False, wait: bool = True) -> None:
        await asyncio.sleep(0)
        self.frames.append(("ack", tag, multiple))

    async def basic_nack(self, tag: int, requeue: bool = True, wait: bool = True) -> None:
        await asyncio.sleep(0)
        self.frames.append(("nack" if requeue else "drop", tag, False))

    async def basic_reject(self, tag: int, requeue: bool = True, wait: bool = True) -> None:
        await asyncio.sleep(0)
        self.frames.append(("reject", tag, False))


@dataclass
class FakeConn:
    is_closed: bool = False
    closes: int = 0

    async def close(self) -> None:
        self.closes += 1
        self.is_closed = True


def setup(tags: range, **cfg: Any) -> tuple[RabbitMQSource, Link, FakeRaw]:
    config = rmq.RabbitMQSourceConfig(type="rabbitmq", queue="q", **cfg)
    ctx = SourceContext(
        trigger="t",
        state=None,
        clock=SystemClock(),
        log=logging.getLogger("t"),  # type: ignore[arg-type]
    )
    source = RabbitMQSource(config, ctx, aio_pika=None)  # type: ignore[arg-type]
    raw = FakeRaw()
    link = Link(1, FakeConn(), None, raw)  # type: ignore[arg-type]
    for tag in tags:
        link.outstanding.delivered(tag)
    source._link = link
    return source, link, raw


def records(link: Link, *tags: int) -> list[Record]:
    return [
        Record(payload={}, item_id=str(t), size=0, created_at=0, handle=Delivery(link, t, f"k{t}"))
        for t in tags
    ]


def covered_before_sent(frames: list[tuple[str, int, bool]]) -> list[int]:
    """Single acks written after a multiple-ack that already covered them."""
    bad: list[int] = []
    high = 0
    for kind, tag, multiple in frames:
        if kind == "ack" and not multiple and tag <= high:
            bad.append(tag)
        if multiple:
            high = max(high, tag)
    return bad


async def test_concurrent_acks_never_cover_a_single_ack_still_to_be_written() -> None:
    source, link, raw = setup(range(21, 26))
    await asyncio.gather(source.ack(records(link, 22, 24)), source.ack(records(link, 21, 23, 25)))
    assert covered_before_sent(raw.frames) == []
    assert ("ack", 25, True) in raw.frames
    assert len(link.outstanding) == 0


async def test_settlements_of_a_dead_link_are_skipped() -> None:
    source, link, raw = setup(range(1, 4))
    source._link = Link(2, FakeConn(), None, FakeRaw())  # type: ignore[arg-type]
    await source.ack(records(link, 1, 2))
    await source.nack(records(link, 3))
    assert raw.frames == []


async def test_nack_requeues_and_counts_only_records_that_failed() -> None:
    source, link, raw = setup(range(1, 3))
    recs = records(link, 1, 2)
    source.envelope(recs)  # both reached the function
    recs[0].failed = True  # record 1 failed; record 2 is only given back
    await source.nack(recs)
    assert raw.frames == [("nack", 1, False), ("nack", 2, False)]
    assert source._counter.get("k1") == 1 and source._counter.get("k2") == 0


async def test_a_record_given_back_is_never_dead_lettered() -> None:
    """dead_letter_after_attempts = 1: a message handed back unfailed (stop mid-split, the
    rest of an ordered batch behind a failed message) is requeued, not rejected."""
    source, link, raw = setup(range(1, 3), dead_letter_after_attempts=1)
    failed, given_back = records(link, 1, 2)
    failed.failed = True
    given_back.attempts = 5  # even one that failed before, in other deliveries
    await source.nack([failed, given_back])
    assert raw.frames == [("reject", 1, False), ("nack", 2, False)]
    assert source._counter.get("k2") == 0


async def test_dead_letter_after_attempts_rejects_without_requeue() -> None:
    source, link, raw = setup(range(1, 3), dead_letter_after_attempts=2)
    first, second = records(link, 1, 2)
    second.attempts = 1  # failed once before
    first.failed = second.failed = True
    await source.nack([first, second])
    assert raw.frames == [("reject", 2, False), ("nack", 1, False)]


async def test_ordered_nack_closes_the_connection_so_unread_deliveries_come_back_too() -> None:
    """ordered = true: deliveries 4-6 were sent by the broker but not read yet (not in any
    record). Nacking 1-3 alone would requeue them behind 4-6; closing the connection requeues
    all six in queue order. The failed record is still counted; `receive` reconnects."""
    source, link, raw = setup(range(1, 7), ordered=True)
    recs = records(link, 1, 2, 3)
    recs[1].failed = True
    await source.nack(recs)
    assert raw.frames == [], "no per-tag nack: the close requeues everything"
    assert link.connection.closes == 1  # type: ignore[attr-defined]
    assert source._link is None and not source.connected
    assert source._counter.get("k2") == 1 and source._counter.get("k1") == 0
    assert source._inbox.get_nowait() is None, "a waiting receive is woken to reconnect"


async def test_ordered_nack_still_dead_letters_before_closing() -> None:
    source, link, raw = setup(range(1, 3), ordered=True, dead_letter_after_attempts=1)
    poison, rest = records(link, 1, 2)
    poison.failed = True
    await source.nack([poison, rest])
    assert raw.frames == [("reject", 1, False)]
    assert link.connection.closes == 1  # type: ignore[attr-defined]


async def test_ordered_nack_of_a_dead_links_records_leaves_the_new_link_alone() -> None:
    source, old, _ = setup(range(1, 3), ordered=True)
    new = Link(2, FakeConn(), None, FakeRaw())  # type: ignore[arg-type]
    source._link = new
    await source.nack(records(old, 1, 2))
    assert source._link is new and new.connection.closes == 0  # type: ignore[attr-defined]


def test_hold_limit_follows_the_brokers_consumer_timeout() -> None:
    source, _, _ = setup(range(0))  # function timeout 3 s
    assert source.hold_limit_s() == 1800 - 3 - 60, "RabbitMQ's default, 30 minutes"
    source, _, _ = setup(range(0), consumer_timeout_s=60)
    assert source.hold_limit_s() == 60 - 3 - 6
    source, _, _ = setup(range(0), consumer_timeout_s=0)
    assert source.hold_limit_s() is None, "the broker has no consumer_timeout"
