"""Per-partition bookkeeping and the kafka source's logic against a fake consumer: commit
points never pass an unprocessed record, nacked records come back in order, back-pressure
pauses and resumes partitions, revocation settles before giving a partition up, and
AT_TIMESTAMP positions partitions without a committed offset (the test broker cannot answer
offsets_for_times meaningfully, so this logic is tested here)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

import triggerd_kafka as tk
from triggerd.delivery.retry import Backoff
from triggerd.types import Record, SourceContext, SystemClock
from triggerd_kafka.partitions import Handle, PartitionState
from triggerd_kafka.positions import OFFSET_RESET, expired_commits, position_new_partitions
from triggerd_kafka.source import KafkaSource


def records(state: PartitionState, offsets: list[int], created: float = 100.0) -> list[Record]:
    return [
        Record(payload={"offset": o}, item_id=f"{state.key}:{o}", size=10, created_at=created + o,
               key=state.key, handle=Handle(state, o))
        for o in offsets
    ]  # fmt: skip


def test_commit_point_is_the_lowest_unsettled_offset() -> None:
    state = PartitionState("t-0", "t", 0)
    assert state.commit_point() is None
    state.add_fetched(records(state, [5, 6, 7, 8]))
    assert state.commit_point() == 5
    taken = state.take(3)
    assert [r.handle.offset for r in taken] == [5, 6, 7]
    state.ack([6, 7])  # out of order: 5 is still unprocessed
    assert state.commit_point() == 5
    state.ack([5])
    assert state.commit_point() == 8  # 8 is fetched, not handed out
    state.take(10)
    state.ack([8])
    assert state.commit_point() == 9
    assert state.needs_commit()
    state.committed = 9
    assert not state.needs_commit()


def test_nacked_records_come_back_first_and_in_order() -> None:
    state = PartitionState("t-0", "t", 0)
    state.add_fetched(records(state, [0, 1, 2, 3, 4]))
    batch = state.take(3)
    state.nack(batch[1:])  # 1 and 2 back, 0 still out
    assert [r.handle.offset for r in state.ready] == [1, 2, 3, 4]
    assert state.commit_point() == 0
    state.ack([0])
    assert state.commit_point() == 1
    assert state.oldest_unprocessed() == 101.0


def test_duplicates_of_fetched_records_are_dropped() -> None:
    state = PartitionState("t-0", "t", 0)
    assert state.add_fetched(records(state, [0, 1])) == 2
    assert state.add_fetched(records(state, [1, 2])) == 1
    assert [r.handle.offset for r in state.ready] == [0, 1, 2]


def test_giving_up_unhanded_records_keeps_the_commit_point_before_them() -> None:
    state = PartitionState("t-0", "t", 0)
    state.add_fetched(records(state, [0, 1, 2, 3]))
    state.ack(r.handle.offset for r in state.take(2))
    assert state.clear_ready() == 2
    assert state.commit_point() == 2


def test_settling_twice_or_unknown_offsets_changes_nothing() -> None:
    state = PartitionState("t-0", "t", 0)
    state.add_fetched(records(state, [0, 1]))
    batch = state.take(2)
    state.ack([0])
    state.nack(batch[:1])  # already acked: ignored
    assert list(state.ready) == []
    assert state.commit_point() == 1


def test_records_nacked_into_a_revoking_partition_hold_its_commit_point() -> None:
    state = PartitionState("t-0", "t", 0)
    state.add_fetched(records(state, [0, 1, 2, 3, 4, 5]))
    first, second = state.take(2), state.take(2)
    state.revoking = True
    state.clear_ready()
    assert state.commit_point() == 0
    state.nack(first)  # given back while the later batch is still out
    assert list(state.ready) == [], "not handed out again"
    assert state.commit_point() == 0
    state.ack(r.handle.offset for r in second)
    assert state.commit_point() == 0, "never past the records given back"


# ---- positions ----------------------------------------------------------------------------


@dataclass
class Found:
    offset: int


@dataclass
class PositionConsumer:
    committed_offsets: dict[str, int | None]
    by_time: dict[str, int | None]
    seeks: dict[str, int] = field(default_factory=dict)
    to_end: list[str] = field(default_factory=list)
    asked: dict[str, int] = field(default_factory=dict)

    async def committed(self, tp: str) -> int | None:
        return self.committed_offsets[tp]

    async def offsets_for_times(self, query: dict[str, int]) -> dict[str, Found | None]:
        self.asked.update(query)
        return {tp: (Found(o) if (o := self.by_time[tp]) is not None else None) for tp in query}

    def seek(self, tp: str, offset: int) -> None:
        self.seeks[tp] = offset

    async def end_offsets(self, tps: list[str]) -> dict[str, int]:
        self.to_end += tps
        return {tp: 1000 + i for i, tp in enumerate(tps)}


def source_config(**cfg: Any) -> tk.KafkaSourceConfig:
    return tk.KafkaSourceConfig(type="kafka", bootstrap_servers=["b:1"], topics=["t"], **cfg)


async def test_at_timestamp_positions_only_partitions_without_a_committed_offset() -> None:
    cfg = source_config(starting_position="AT_TIMESTAMP", starting_position_timestamp=1700000000.5)
    consumer = PositionConsumer(
        committed_offsets={"p0": 42, "p1": None, "p2": None}, by_time={"p1": 7, "p2": None}
    )
    committed = await position_new_partitions(consumer, ["p0", "p1", "p2"], cfg)
    assert committed == {"p0": 42, "p1": None, "p2": None}
    assert consumer.asked == {"p1": 1700000000500, "p2": 1700000000500}
    assert consumer.seeks == {"p1": 7, "p2": 1000}, "p2: no record that recent, the end"


async def test_trim_horizon_leaves_new_partitions_to_the_earliest_reset() -> None:
    consumer = PositionConsumer(committed_offsets={"p0": None, "p1": 3}, by_time={})
    cfg = source_config(starting_position="TRIM_HORIZON")
    assert await position_new_partitions(consumer, ["p0", "p1"], cfg) == {"p0": None, "p1": 3}
    assert consumer.asked == {} and consumer.seeks == {} and consumer.to_end == []
    assert OFFSET_RESET == "earliest"


async def test_latest_seeks_only_partitions_without_a_committed_offset_to_the_end() -> None:
    # aiokafka's reset is "earliest" whatever the starting position (a committed offset out
    # of range starts at the oldest record still held): LATEST is a seek of its own.
    consumer = PositionConsumer(committed_offsets={"p0": None, "p1": 3}, by_time={})
    assert await position_new_partitions(consumer, ["p0", "p1"], source_config()) == {
        "p0": None,
        "p1": 3,
    }
    assert consumer.to_end == ["p0"] and consumer.seeks == {"p0": 1000}, "a seek, not a reset"


@dataclass
class LogStartConsumer(PositionConsumer):
    firsts: dict[str, int] = field(default_factory=dict)

    async def beginning_offsets(self, tps: list[str]) -> dict[str, int]:
        return {tp: self.firsts[tp] for tp in tps}


async def test_a_committed_offset_deleted_by_retention_starts_at_the_oldest_record() -> None:
    consumer = LogStartConsumer(committed_offsets={}, by_time={}, firsts={"p0": 100, "p1": 5})
    committed: dict[str, int | None] = {"p0": 40, "p1": 5, "p2": None}
    assert await expired_commits(consumer, committed) == {"p0": (40, 100)}
    assert consumer.seeks == {"p0": 100}, "p1 holds its committed offset: left alone"


# ---- the source against a fake consumer ---------------------------------------------------


@dataclass(frozen=True)
class TP:
    topic: str
    partition: int


@dataclass
class Msg:
    topic: str
    partition: int
    offset: int
    value: bytes = b"{}"
    key: bytes | None = None
    timestamp: int = 1_700_000_000_000
    timestamp_type: int = 0
    headers: tuple[tuple[str, bytes], ...] = ()


class FakeConsumer:
    def __init__(self) -> None:
        self.commits: list[dict[TP, int]] = []
        self.paused: set[TP] = set()
        self.ends: dict[TP, int] = {}
        self.assigned: set[TP] = set()
        self.seeks: list[tuple[TP, int]] = []
        self.committed_offsets: dict[TP, int] = {}
        self.firsts: dict[TP, int] = {}
        self.to_end: list[TP] = []

    def assignment(self) -> set[TP]:
        return self.assigned

    def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp, offset))

    def pause(self, *tps: TP) -> None:
        self.paused |= set(tps)

    def resume(self, *tps: TP) -> None:
        self.paused -= set(tps)

    async def commit(self, offsets: dict[TP, int]) -> None:
        self.commits.append(dict(offsets))

    async def committed(self, tp: TP) -> int | None:
        return self.committed_offsets.get(tp)

    async def end_offsets(self, tps: list[TP]) -> dict[TP, int]:
        self.to_end += tps
        return {tp: self.ends.get(tp, 0) for tp in tps}

    async def beginning_offsets(self, tps: list[TP]) -> dict[TP, int]:
        return {tp: self.firsts.get(tp, 0) for tp in tps}

    def highwater(self, tp: TP) -> int | None:
        return self.ends.get(tp)


def make_source(**cfg: Any) -> tuple[KafkaSource, FakeConsumer]:
    ctx = SourceContext(trigger="t", state=None, clock=SystemClock(), log=logging.getLogger("k"))  # type: ignore[arg-type]
    source = KafkaSource(source_config(**cfg), ctx, aiokafka=None)  # type: ignore[arg-type]
    consumer = FakeConsumer()
    source.consumer = consumer
    return source, consumer


async def test_a_partition_whose_records_expired_before_delivery_is_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source, consumer = make_source()
    consumer.committed_offsets = {TP("t", 0): 40, TP("t", 1): 7}
    consumer.firsts = {TP("t", 0): 100, TP("t", 1): 0}
    caplog.set_level(logging.INFO, logger="k")
    await source.on_assigned([TP("t", 0), TP("t", 1), TP("t", 2)])
    (line,) = [r for r in caplog.records if r.getMessage() == "kafka.records_expired"]
    assert line.levelno == logging.WARNING
    assert (line.__dict__["partition"], line.__dict__["committed"]) == ("t-0", 40)
    assert (line.__dict__["first_offset"], line.__dict__["offsets_lost"]) == (100, 60)
    assert consumer.seeks == [(TP("t", 2), 0), (TP("t", 0), 100)], "t-2: LATEST, the end"
    assert source.states["t-0"].committed == 40


async def test_the_same_expired_records_are_reported_once_across_rebalances(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source, consumer = make_source()
    consumer.committed_offsets = {TP("t", 0): 40}
    consumer.firsts = {TP("t", 0): 100}
    caplog.set_level(logging.INFO, logger="k")

    def reports() -> list[tuple[int, int]]:
        lines = [r for r in caplog.records if r.getMessage() == "kafka.records_expired"]
        return [(r.__dict__["committed"], r.__dict__["first_offset"]) for r in lines]

    await source.on_assigned([TP("t", 0)])
    await source.on_revoked([TP("t", 0)])  # nothing delivered: 40 stays the committed offset
    await source.on_assigned([TP("t", 0)])
    assert reports() == [(40, 100)]
    assert consumer.seeks == [(TP("t", 0), 100)] * 2, "reported once, positioned each time"
    await source.on_revoked([TP("t", 0)])
    consumer.firsts = {TP("t", 0): 150}  # retention deleted more meanwhile: a new loss
    await source.on_assigned([TP("t", 0)])
    assert reports() == [(40, 100), (40, 150)]
    assert consumer.seeks[-1] == (TP("t", 0), 150)


async def test_back_pressure_pauses_a_full_partition_and_resumes_it_at_half() -> None:
    source, consumer = make_source(max_buffered_records_per_partition=4)
    await source.on_assigned([TP("t", 0), TP("t", 1)])
    source._accept({TP("t", 0): [Msg("t", 0, i) for i in range(4)], TP("t", 1): [Msg("t", 1, 0)]})
    source._apply_back_pressure()
    assert consumer.paused == {TP("t", 0)}
    got = await source.receive(10, 0.1)
    assert len(got) == 5
    source._apply_back_pressure()
    assert consumer.paused == set()
    assert source._buffered_bytes == 0


async def test_a_partition_has_at_most_two_batches_out() -> None:
    source, _ = make_source()
    await source.on_assigned([TP("t", 0), TP("t", 1)])
    source._accept({TP("t", 0): [Msg("t", 0, i) for i in range(50)]})
    first = await source.receive(10, 0.1)
    second = await source.receive(10, 0.1)
    assert len(first) == len(second) == 10
    assert await source.receive(10, 0.05) == [], "t-0 is at its cap: two batches out"
    source._accept({TP("t", 1): [Msg("t", 1, 0)]})
    assert [r.key for r in await source.receive(10, 0.1)] == ["t-1"], "others still flow"
    await source.ack(first)
    assert len(await source.receive(10, 0.1)) == 10


async def test_all_partitions_pause_over_the_byte_budget() -> None:
    source, consumer = make_source(max_buffered_bytes=1024 * 1024)
    await source.on_assigned([TP("t", 0), TP("t", 1)])
    big = b"x" * 900_000
    source._accept({TP("t", 0): [Msg("t", 0, 0, value=big)], TP("t", 1): [Msg("t", 1, 0)]})
    source._apply_back_pressure()
    assert consumer.paused == {TP("t", 0), TP("t", 1)}


async def test_commits_follow_acks_and_never_pass_an_unprocessed_record() -> None:
    source, consumer = make_source()
    await source.on_assigned([TP("t", 0)])
    source._accept({TP("t", 0): [Msg("t", 0, i) for i in range(10, 15)]})
    got = await source.receive(5, 0.1)
    assert [r.item_id for r in got] == [f"t-0:{i}" for i in range(10, 15)]
    await source.ack(got[1:3])  # 10 is still in flight
    await source._commit(source.states.values())
    assert consumer.commits == [{TP("t", 0): 10}]
    await source.ack(got[:1])
    await source._commit(source.states.values())
    assert consumer.commits[-1] == {TP("t", 0): 13}
    await source.nack(got[3:])
    await source._commit(source.states.values())
    assert len(consumer.commits) == 2, "nothing moved: no commit"
    again = await source.receive(5, 0.1)
    assert [r.item_id for r in again] == ["t-0:13", "t-0:14"]


async def test_revocation_releases_the_keys_commits_what_settled_then_forgets() -> None:
    source, consumer = make_source()
    await source.on_assigned([TP("t", 0), TP("t", 1)])
    source._accept({TP("t", 0): [Msg("t", 0, i) for i in range(6)]})
    in_flight = await source.receive(3, 0.1)
    control = ReleasingControl(source, finished=in_flight)
    source.attach(control)
    await source.on_revoked([TP("t", 0)])
    assert control.released == [["t-0"]]
    assert consumer.commits == [{TP("t", 0): 3}], "committed what finished during the release"
    assert list(source.states) == ["t-1"]
    late = await source.receive(10, 0.05)
    assert late == [], "the revoked partition's fetched records are dropped"
    await source.ack(in_flight)  # a late settlement of the old assignment changes nothing
    await source._commit(source.states.values())
    assert len(consumer.commits) == 1


async def test_stats_report_lag_per_partition() -> None:
    source, consumer = make_source()
    await source.on_assigned([TP("t", 0)])
    consumer.ends[TP("t", 0)] = 20
    source._accept({TP("t", 0): [Msg("t", 0, i) for i in range(5, 8)]})
    got = await source.receive(2, 0.1)
    await source.ack(got)
    await source._commit(source.states.values())
    stats = source.stats()
    assert stats.rebalances == 1
    [p] = stats.partitions
    assert p.partition == "t-0" and p.committed_offset == 7 and p.lag_records == 13
    assert p.lag_seconds > 0


@pytest.mark.parametrize("interval", [0.0, 0.05])
async def test_the_commit_loop_commits_after_settlements(interval: float) -> None:
    source, consumer = make_source(commit_interval_s=interval)
    await source.on_assigned([TP("t", 0)])
    source._accept({TP("t", 0): [Msg("t", 0, 0)]})
    loop = asyncio.create_task(source._commit_loop())
    try:
        await source.ack(await source.receive(1, 0.1))
        async with asyncio.timeout(2):
            while not consumer.commits:
                await asyncio.sleep(0.01)
    finally:
        source._stopped = True
        loop.cancel()
    assert consumer.commits == [{TP("t", 0): 1}]


class GateClock(SystemClock):
    """A monotonic clock the test sets; `sleep` notes how long was asked and waits for the
    test to let it go."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []
        self.go = asyncio.Event()

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        await self.go.wait()
        self.go.clear()


async def test_commits_go_at_once_after_a_quiet_spell_then_together_within_the_interval() -> None:
    source, consumer = make_source(commit_interval_s=0.1)
    clock = GateClock()
    source.ctx = SourceContext(trigger="t", state=None, clock=clock, log=source.log)  # type: ignore[arg-type]
    await source.on_assigned([TP("t", 0)])
    source._accept({TP("t", 0): [Msg("t", 0, i) for i in range(3)]})
    first, second, third = await source.receive(3, 0.1)
    loop = asyncio.create_task(source._commit_loop())
    try:
        await source.ack([first])
        async with asyncio.timeout(2):
            while not consumer.commits:
                await asyncio.sleep(0.001)
        assert consumer.commits == [{TP("t", 0): 1}] and clock.slept == []
        clock.now += 0.04  # within the interval: the next commit waits for the rest of it
        await source.ack([second])
        async with asyncio.timeout(2):
            while not clock.slept:
                await asyncio.sleep(0.001)
        assert clock.slept == [pytest.approx(0.06)]
        await source.ack([third])  # settled while waiting: goes in the same commit
        clock.now += 0.06
        clock.go.set()
        async with asyncio.timeout(2):
            while len(consumer.commits) < 2:
                await asyncio.sleep(0.001)
        assert consumer.commits == [{TP("t", 0): 1}, {TP("t", 0): 3}]
    finally:
        source._stopped = True
        loop.cancel()


# ---- rebalance races ----------------------------------------------------------------------


class SlowPositionConsumer(FakeConsumer):
    """committed() waits until released (a slow coordinator), or fails."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.fail = fail

    async def committed(self, tp: TP) -> int | None:
        await self.gate.wait()
        if self.fail:
            raise RuntimeError("coordinator not available")
        return 3


def slow_source(fail: bool = False) -> tuple[KafkaSource, SlowPositionConsumer]:
    source, _ = make_source()
    consumer = SlowPositionConsumer(fail)
    source.consumer = consumer
    return source, consumer


async def test_records_fetched_while_an_assignment_is_set_up_are_fetched_again() -> None:
    source, consumer = slow_source()
    tp = TP("t", 0)
    consumer.assigned = {tp}
    # aiokafka may return records before on_partitions_assigned ran at all ...
    source._accept({tp: [Msg("t", 0, i) for i in range(3, 6)]})
    assert consumer.seeks == [(tp, 3)], "not dropped: the consumer goes back to the first"
    assigning = asyncio.create_task(source.on_assigned([tp]))
    await asyncio.sleep(0)
    # ... or while it awaits the committed offsets: the state exists, the partition is paused
    assert "t-0" in source.states and consumer.paused == {tp}
    source._accept({tp: [Msg("t", 0, i) for i in range(3, 6)]})
    assert consumer.seeks == [(tp, 3), (tp, 3)]
    assert await source.receive(10, 0.01) == []
    source._apply_back_pressure()
    assert consumer.paused == {tp}, "stays paused until positioned"
    consumer.gate.set()
    await assigning
    assert consumer.paused == set() and source.states["t-0"].committed == 3
    source._accept({tp: [Msg("t", 0, i) for i in range(3, 6)]})
    got = await source.receive(10, 0.1)
    assert [r.handle.offset for r in got] == [3, 4, 5]
    await source.ack(got)
    await source._commit(source.states.values())
    assert consumer.commits == [{tp: 6}]


async def test_a_partition_whose_positioning_fails_stays_paused_until_a_retry_positions_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Not left to aiokafka's reset (always "earliest": a LATEST group would replay the
    # topic): the partition stays paused, and positioning is retried in the background.
    source, consumer = slow_source(fail=True)
    source._position_backoff = Backoff(base_s=0.05, max_s=0.05, jitter=0.0)
    tp = TP("t", 0)
    consumer.gate.set()
    await source.on_assigned([tp])  # aiokafka would swallow an exception silently
    state = source.states["t-0"]
    assert state.positioning and consumer.paused == {tp}
    assert "kafka.position_failed" in caplog.text
    source._accept({tp: [Msg("t", 0, 0)]})
    assert await source.receive(10, 0.1) == [], "fetched meanwhile: fetched again later"
    consumer.fail = False
    async with asyncio.timeout(5):
        while state.positioning:
            await asyncio.sleep(0.01)
    assert consumer.paused == set()
    source._accept({tp: [Msg("t", 0, 0)]})
    assert [r.handle.offset for r in await source.receive(10, 0.1)] == [0]
    await source.stop()


class ReleasingControl:
    """The pipeline's release_keys: its buffered records are nacked back, then the batch in
    flight either finishes (acked: `finished`) or is given back at its next retry point
    (nacked: `in_flight`); the pipeline keeps receiving meanwhile (`peek`)."""

    def __init__(
        self,
        source: KafkaSource,
        buffered: Sequence[Record] = (),
        in_flight: Sequence[Record] = (),
        finished: Sequence[Record] = (),
        peek: bool = True,
    ) -> None:
        self.source = source
        self.peek = peek
        self.buffered = list(buffered)
        self.in_flight = list(in_flight)
        self.finished = list(finished)
        self.released: list[list[str]] = []
        self.handed_out_meanwhile: list[Record] = []

    async def release_keys(self, keys: Collection[str], timeout_s: float) -> None:
        self.released.append(list(keys))
        for records in (self.buffered, self.in_flight):
            if records:
                await self.source.nack(records)
                if self.peek:
                    self.handed_out_meanwhile += await self.source.receive(10, 0.01)
        if self.finished:
            await self.source.ack(self.finished)


async def test_a_revoked_partition_hands_nothing_out_and_commits_before_what_came_back() -> None:
    source, consumer = make_source()
    await source.on_assigned([TP("t", 0), TP("t", 1)])
    source._accept({TP("t", 0): [Msg("t", 0, i) for i in range(10)]})
    in_flight = await source.receive(3, 0.1)
    buffered = await source.receive(3, 0.1)
    control = ReleasingControl(source, buffered, in_flight)
    source.attach(control)
    await source.on_revoked([TP("t", 0)])
    assert control.handed_out_meanwhile == [], "another member owns it: nothing handed out"
    assert consumer.commits == [{TP("t", 0): 0}], "nothing settled: committed before them all"
    assert source._buffered_bytes == 0


async def test_records_given_back_during_a_revocation_do_not_leak_into_the_byte_budget() -> None:
    source, consumer = make_source(max_buffered_bytes=1024 * 1024)
    await source.on_assigned([TP("t", 0), TP("t", 1)])
    big = b"x" * 600_000
    source._accept({TP("t", 0): [Msg("t", 0, i, value=big) for i in range(2)]})
    in_flight = await source.receive(1, 0.1)
    buffered = await source.receive(1, 0.1)
    source.attach(ReleasingControl(source, buffered, in_flight, peek=False))
    await source.on_revoked([TP("t", 0)])
    assert source._buffered_bytes == 0
    source._accept({TP("t", 1): [Msg("t", 1, 0)]})
    source._apply_back_pressure()
    assert consumer.paused == set(), "the remaining partition keeps flowing"


async def test_a_revocation_cancels_a_positioning_retry_under_way(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A retry left running past a revocation could position the partition after it was
    # assigned elsewhere (and back here): a stale seek skips records or repeats them.
    source, consumer = slow_source(fail=True)
    source._position_backoff = Backoff(base_s=0.01, max_s=0.01, jitter=0.0)
    asked = asyncio.Event()
    committed = consumer.committed

    async def watched_committed(tp: TP) -> int | None:
        asked.set()
        return await committed(tp)

    consumer.committed = watched_committed  # type: ignore[method-assign]
    tp = TP("t", 0)
    consumer.gate.set()
    caplog.set_level(logging.INFO, logger="k")
    await source.on_assigned([tp])  # fails: a retry is scheduled
    consumer.gate.clear()
    asked.clear()
    async with asyncio.timeout(5):
        await asked.wait()  # the retry waits in committed()
    await source.on_revoked([tp])
    assert source._positioners == {} and "t-0" not in source.states
    consumer.fail = False
    consumer.gate.set()
    await asyncio.sleep(0.2)
    assert "kafka.partitions_assigned" not in caplog.text, "the cancelled retry did nothing"
    await source.stop()
