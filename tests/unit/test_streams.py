"""The stream shard log: read-ahead, settlement in any order, checkpoints that never pass an
unsettled record, redelivery in order after a delay, barriers, and its memory bound."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from triggerd.delivery.streams import RecordRate, ShardLog
from triggerd.types import Record


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def rec(n: int, key: str = "k", size: int = 10) -> Record:
    return Record(payload={"n": n}, item_id=f"{n:04d}", size=size, created_at=float(n), key=key)


def numbers(records: list[Record]) -> list[int]:
    return [r.payload["n"] for r in records]


def test_records_come_out_in_order_and_the_checkpoint_is_the_settled_prefix() -> None:
    log = ShardLog(Clock())
    records = [rec(i) for i in range(5)]
    for r in records:
        log.append(r)
    assert numbers(log.take(3)) == [0, 1, 2]
    assert log.live == 3 and log.ready == 2
    log.settle([records[1], records[2]])
    assert log.checkpoint() is None, "record 0 is not settled: nothing may be checkpointed"
    log.settle([records[0]])
    assert log.checkpoint() is records[2]
    assert log.checkpoint() is None, "the same prefix is not returned twice"
    assert numbers(log.take(10)) == [3, 4]


def test_records_extended_at_once_are_held_as_if_appended_one_by_one() -> None:
    clock = Clock()
    log = ShardLog(clock, max_entries=6, max_bytes=1000)
    first = [rec(0, size=7)]
    log.append(first[0])
    log.mark("end of 0")
    page = [rec(i, size=7) for i in range(1, 5)]
    log.extend(page)
    log.extend([])
    assert log.pending == 6 and not log.has_room(), "every entry counts toward the bound"
    assert numbers(log.take(10)) == [0, 1, 2, 3, 4]
    log.settle([page[0], page[1]])
    assert log.checkpoint() is None, "record 0 is not settled"
    log.settle(first)
    assert log.checkpoint() is page[1]
    log.give_back([page[2], page[3]])
    log.settle(page[2:])  # given back, not handed out again yet: kept
    assert log.ready == 2 and log.has_room()
    clock.now += 5
    assert numbers(log.take(10)) == [3, 4], "given back in order, after the records before"


def test_markers_are_settled_positions_between_records() -> None:
    log = ShardLog(Clock())
    a, b = rec(0), rec(1)
    log.append(a)
    log.mark("end-of-txn-1")
    log.append(b)
    log.take(2)
    log.settle([b])
    assert log.checkpoint() is None
    log.settle([a])
    assert log.checkpoint() is b
    log.mark("read-up-to-L")
    assert log.checkpoint() == "read-up-to-L"


def test_a_marker_alone_is_a_checkpoint() -> None:
    log = ShardLog(Clock())
    log.mark(42)
    assert log.checkpoint() == 42


def test_given_back_records_return_in_order_after_the_delay() -> None:
    clock = Clock()
    log = ShardLog(clock, redeliver_delay_s=1.0)
    records = [rec(i) for i in range(6)]
    for r in records:
        log.append(r)
    first, second = log.take(2), log.take(2)
    log.give_back(second)
    log.give_back(first)
    assert log.take(10) == [], "held back for the redelivery delay (no spinning)"
    assert log.waiting_until() == clock.now + 1.0
    clock.now += 1.0
    assert numbers(log.take(10)) == [0, 1, 2, 3, 4, 5]
    log.settle(records)
    assert log.checkpoint() is records[-1]


def test_a_barrier_waits_for_everything_before_it_and_holds_everything_after_it() -> None:
    log = ShardLog(Clock())
    before, truncate, after = rec(0), rec(1), rec(2)
    log.append(before)
    log.append(truncate, barrier=True)
    log.append(after)
    assert log.take(10) == [before]
    assert log.take(10) == [], "the barrier waits for record 0"
    log.settle([before])
    assert log.take(10) == [truncate], "the barrier goes alone"
    assert log.take(10) == []
    log.settle([truncate])
    assert log.take(10) == [after]


def test_given_back_barrier_is_held_again() -> None:
    clock = Clock()
    log = ShardLog(clock, redeliver_delay_s=0.0)
    truncate, after = rec(0), rec(1)
    log.append(truncate, barrier=True)
    log.append(after)
    assert log.take(10) == [truncate]
    log.give_back([truncate])
    assert log.take(10) == [truncate]
    assert log.take(10) == []


def test_room_counts_everything_not_checkpointed() -> None:
    log = ShardLog(Clock(), max_entries=3, max_bytes=1000)
    records = [rec(i) for i in range(3)]
    for r in records:
        log.append(r)
    assert not log.has_room()
    log.take(3)
    log.settle(records[1:])
    assert not log.has_room(), "settled records behind an unsettled one still count"
    log.settle(records[:1])
    log.checkpoint()
    assert log.has_room() and log.pending == 0


def test_room_counts_bytes() -> None:
    log = ShardLog(Clock(), max_entries=100, max_bytes=25)
    log.append(rec(0, size=20))
    assert log.has_room()
    log.append(rec(1, size=20))
    assert not log.has_room()


def test_unknown_or_repeated_settlements_change_nothing() -> None:
    log = ShardLog(Clock())
    a = rec(0)
    log.append(a)
    log.settle([rec(99)])
    log.settle([a])  # not handed out yet: not settled
    assert log.checkpoint() is None
    log.take(1)
    log.settle([a])
    log.settle([a])
    log.give_back([a])
    assert log.checkpoint() is a
    assert log.take(1) == []


def test_oldest_unsettled_is_the_age_of_the_stream_position() -> None:
    log = ShardLog(Clock())
    a, b = rec(5), rec(7)
    log.append(a)
    log.append(b)
    assert log.oldest_unsettled() == 5.0
    log.take(2)
    log.settle([a])
    assert log.oldest_unsettled() == 7.0
    log.settle([b])
    assert log.oldest_unsettled() is None


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["take", "ack", "nack"]), st.integers(0, 7)), max_size=60)
)
def test_the_checkpoint_never_passes_an_unsettled_record(ops: list[tuple[str, int]]) -> None:
    clock = Clock()
    log = ShardLog(clock, redeliver_delay_s=0.0)
    records = [rec(i, key=f"k{i % 3}") for i in range(12)]
    for r in records:
        log.append(r)
    live: list[Record] = []
    settled: set[int] = set()
    checkpoint = -1
    for op, n in ops:
        if op == "take":
            got = log.take(n + 1)
            assert all(r.payload["n"] not in settled for r in got)
            live += got
        elif op == "ack" and live:
            done = live.pop(n % len(live))
            log.settle([done])
            settled.add(done.payload["n"])
        elif op == "nack" and live:
            back = live.pop(n % len(live))
            log.give_back([back])
        point = log.checkpoint()
        if point is not None:
            assert isinstance(point, Record)
            checkpoint = point.payload["n"]
        assert all(i in settled for i in range(checkpoint + 1)), (checkpoint, settled)
    # Everything left is handed out again and can be settled: nothing was lost.
    live += log.take(100)
    log.settle(live)
    settled |= {r.payload["n"] for r in live}
    assert settled == set(range(12))
    last = log.checkpoint()
    assert last is records[-1] or checkpoint == 11


def test_record_rate_counts_the_last_minute_or_since_the_start() -> None:
    rate = RecordRate(started=100.0)
    rate.add(30, 100.5)
    rate.add(30, 110.0)
    assert rate.per_second(120.0) == 60 / 20  # younger than the window: since the start
    assert rate.per_second(165.0) == 30 / 60  # the first second's records left the window
    assert rate.per_second(200.0) == 0.0
