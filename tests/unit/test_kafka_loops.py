"""The kafka source's background loops against a fake consumer: a failing poll iteration is
logged and polling goes on, an error polling cannot fix ends the trigger with that error, a
failed commit is tried again, and the lag of paused partitions keeps up with the log end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiokafka import errors

from tests.unit.test_kafka_partitions import TP, FakeConsumer, Msg, make_source
from triggerd.delivery.retry import Backoff
from triggerd.types import PermanentError
from triggerd_kafka.source import KafkaSource


class PollingConsumer(FakeConsumer):
    """getmany hands out what was queued (or raises what was queued); commits can fail;
    end_offsets answers from `log_ends`."""

    def __init__(self) -> None:
        super().__init__()
        self.polls: list[Any] = []
        self.getmany_calls = 0
        self.commit_failures = 0
        self.commit_attempts = 0
        self.log_ends: dict[TP, int] = {}
        self.pause_failures = 0

    async def getmany(self, timeout_ms: int = 0) -> dict[TP, list[Msg]]:
        self.getmany_calls += 1
        await asyncio.sleep(0.005)
        if self.polls:
            item = self.polls.pop(0)
            if isinstance(item, BaseException):
                raise item
            return dict(item)
        return {}

    async def commit(self, offsets: dict[TP, int]) -> None:
        self.commit_attempts += 1
        if self.commit_failures:
            self.commit_failures -= 1
            raise errors.KafkaConnectionError("coordinator went away")
        await super().commit(offsets)

    def pause(self, *tps: TP) -> None:
        if self.pause_failures:
            self.pause_failures -= 1
            raise errors.IllegalStateError(f"No current assignment for partition {tps[0]}")
        super().pause(*tps)

    async def end_offsets(self, tps: list[TP]) -> dict[TP, int]:
        # as aiokafka: every partition asked for (an empty one ends at 0)
        return {tp: self.log_ends.get(tp, 0) for tp in tps}


def polling_source(**cfg: Any) -> tuple[KafkaSource, PollingConsumer]:
    source, _ = make_source(**cfg)
    consumer = PollingConsumer()
    source.consumer = consumer
    source._backoff = Backoff(base_s=0.01, max_s=0.05)
    return source, consumer


@asynccontextmanager
async def running(source: KafkaSource) -> AsyncIterator[None]:
    source._runner = asyncio.create_task(source._run())
    try:
        yield
    finally:
        await source.stop()


async def until(cond: Callable[[], bool], timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


async def test_a_crash_in_a_poll_iteration_is_logged_and_consuming_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source, consumer = polling_source(max_buffered_records_per_partition=2)
    tp = TP("t", 0)
    await source.on_assigned([tp])
    consumer.polls = [
        errors.IllegalStateError("No current assignment for partition t-0"),  # a rebalance
        {tp: [Msg("t", 0, 0), Msg("t", 0, 1)]},
        {tp: [Msg("t", 0, 2)]},
    ]
    consumer.pause_failures = 1  # the back-pressure step fails once as well
    async with running(source):
        got = await source.receive(10, 2)
        await until(lambda: sum(len(s.ready) for s in source.states.values()) > 0)
        got += await source.receive(10, 2)
        assert [r.handle.offset for r in got] == [0, 1, 2], "nothing lost, nothing twice"
        assert source._runner is not None and not source._runner.done()
    assert caplog.text.count("kafka.poll_failed") >= 1
    assert "kafka.pause_failed" in caplog.text


@pytest.mark.parametrize(
    "error", [errors.GroupAuthorizationFailedError, errors.InvalidSessionTimeoutError]
)
async def test_an_error_polling_cannot_fix_ends_the_consumer_with_that_error(
    caplog: pytest.LogCaptureFixture, error: type[Exception]
) -> None:
    source, consumer = polling_source()
    tp = TP("t", 0)
    await source.on_assigned([tp])
    consumer.polls = [{tp: [Msg("t", 0, 0)]}, error()]
    async with running(source):
        first = await source.receive(10, 2)
        with pytest.raises(PermanentError, match=error.__name__) as info:
            async with asyncio.timeout(5):
                while True:
                    await source.receive(10, 0.05)
        assert "group 't'" in str(info.value) and "b:1" in str(info.value)
        calls = consumer.getmany_calls
        await asyncio.sleep(0.1)
        assert consumer.getmany_calls == calls, "not polled (and logged) in a loop"
        await source.ack(first)  # settlements are still committed while the trigger drains
        await until(lambda: consumer.commits == [{tp: 1}])
    assert "kafka.poll_failed" not in caplog.text


async def test_a_failed_commit_is_tried_again_without_another_settlement() -> None:
    source, consumer = polling_source()
    tp = TP("t", 0)
    await source.on_assigned([tp])
    consumer.polls = [{tp: [Msg("t", 0, i) for i in range(4)]}]
    consumer.commit_failures = 2
    async with running(source):
        got = await source.receive(10, 2)
        await source.ack(got[:2])  # 2 and 3 are still out
        await until(lambda: consumer.commits != [])
        assert consumer.commit_attempts == 3
        assert consumer.commits == [{tp: 2}], "never past the records not processed"


async def test_the_lag_of_a_paused_partition_follows_the_log_end() -> None:
    source, consumer = polling_source(max_buffered_records_per_partition=2)
    source.lag_refresh_s = 0.02
    tp = TP("t", 0)
    await source.on_assigned([tp])
    consumer.ends[tp] = 2  # highwater: what the last fetch said
    consumer.polls = [{tp: [Msg("t", 0, 0), Msg("t", 0, 1)]}]
    async with running(source):
        await until(lambda: tp in consumer.paused)
        assert source.stats().partitions[0].lag_records == 2
        consumer.log_ends[tp] = 500  # producers go on; the paused partition is not fetched
        await until(lambda: source.stats().partitions[0].lag_records == 500)


class RevocationRaceConsumer(PollingConsumer):
    """The first commit (a revocation's) waits for `gate`, then fails; commits of partitions
    not assigned are refused, as aiokafka does (IllegalStateError)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.asked: list[dict[TP, int]] = []

    async def commit(self, offsets: dict[TP, int]) -> None:
        self.asked.append(dict(offsets))
        if len(self.asked) == 1:
            await self.gate.wait()
            raise errors.RequestTimedOutError("coordinator slow")
        missing = set(offsets) - self.assigned
        if missing:
            raise errors.IllegalStateError(f"Partition {min(missing, key=str)} is not assigned")
        await super().commit(offsets)


async def test_a_commit_round_waiting_on_a_revocation_leaves_the_revoked_partition_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The commit loop picks the partitions to commit, then waits for the revocation's commit
    (it holds the commit lock) to end; that commit fails and the partition is given up. The
    round must then commit the partitions still owned, and nothing of the revoked one."""
    source, _ = polling_source(commit_interval_s=0)
    consumer = RevocationRaceConsumer()
    source.consumer = consumer
    t0, t1 = TP("t", 0), TP("t", 1)
    consumer.assigned = {t0, t1}
    await source.on_assigned([t0, t1])
    source._accept({t0: [Msg("t", 0, 0)], t1: [Msg("t", 1, 0)]})
    settled = await source.receive(10, 1)
    assert len(settled) == 2
    revoking = asyncio.create_task(source.on_revoked([t0]))
    await until(lambda: len(consumer.asked) == 1)  # the revocation's commit holds the lock
    await source.ack(settled)
    loop = asyncio.create_task(source._commit_loop())
    try:
        for _ in range(5):
            await asyncio.sleep(0)  # the loop's round waits for the lock now
        consumer.assigned = {t1}  # the group gives t-0 to another member
        consumer.gate.set()
        await revoking
        await until(lambda: consumer.commits != [])
    finally:
        source._stopped = True
        loop.cancel()
    assert consumer.asked[1:] == [{t1: 1}], "t-0 is not owned any more: never asked for"
    assert caplog.text.count("kafka.commit_failed") == 1, "only the revocation's commit failed"


async def test_a_pending_coalesced_commit_goes_out_on_revocation_and_on_stop() -> None:
    """With a long commit_interval_s, settlements after the first wait for the interval: a
    revocation commits its partitions' settled records at once, stopping commits the rest,
    and a revoked partition is never committed again."""
    source, consumer = polling_source(commit_interval_s=60)
    t0, t1 = TP("t", 0), TP("t", 1)
    await source.on_assigned([t0, t1])
    consumer.polls = [{tp: [Msg("t", tp.partition, i) for i in range(3)] for tp in (t0, t1)}]
    async with running(source):
        await until(lambda: all(len(s.ready) == 3 for s in source.states.values()))
        got = await source.receive(6, 1)
        by_tp = {tp: [r for r in got if r.key == f"t-{tp.partition}"] for tp in (t0, t1)}
        await source.ack(by_tp[t0][:1])
        await until(lambda: consumer.commits != [])  # the first after a quiet spell: at once
        assert consumer.commits == [{t0: 1, t1: 0}]
        await source.ack(by_tp[t0][1:] + by_tp[t1])  # within the interval: pending
        await asyncio.sleep(0.05)
        assert len(consumer.commits) == 1
        await source.on_revoked([t0])
        assert consumer.commits[1:] == [{t0: 3}], "committed before t-0 is given up"
    assert consumer.commits[1:] == [{t0: 3}, {t1: 3}], "stop commits the pending rest"


class HangingCommitConsumer(PollingConsumer):
    """A broker gone at shutdown: commit waits for a coordinator that never comes back."""

    async def commit(self, offsets: dict[TP, int]) -> None:
        self.commit_attempts += 1
        await asyncio.Event().wait()


async def test_a_final_commit_that_never_returns_does_not_hold_the_stop(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("triggerd_kafka.source.FINAL_COMMIT_TIMEOUT_S", 0.2)
    source, _ = make_source()
    consumer = HangingCommitConsumer()
    source.consumer = consumer
    t0 = TP("t", 0)
    await source.on_assigned([t0])
    consumer.polls = [{t0: [Msg("t", 0, 0)]}]
    source._runner = asyncio.create_task(source._run())
    await until(lambda: len(source.states["t-0"].ready) == 1)
    got = await source.receive(1, 1)
    source._runner.cancel()  # only the final commit is left to try
    await source.ack(got)
    async with asyncio.timeout(10):  # without the bound: never returns
        await source.stop()
    assert consumer.commit_attempts == 1
    assert "kafka.commit_failed" in caplog.text
