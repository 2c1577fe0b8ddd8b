"""Settlement writes go on through a cancellation, for a bounded time, and a write left
behind is never asyncio's "Task exception was never retrieved"."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from triggerd.delivery.settle import settle


async def test_a_cancelled_caller_waits_for_its_write_then_is_cancelled() -> None:
    started, gate, written = asyncio.Event(), asyncio.Event(), []

    async def write() -> None:
        started.set()
        await gate.wait()
        written.append(1)

    caller = asyncio.create_task(settle(write()))
    await started.wait()
    caller.cancel()
    await asyncio.sleep(0.05)
    assert not caller.done(), "the caller ended before its write"
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert written == [1]


async def test_a_write_outlasting_the_grace_is_left_and_its_failure_read(
    caplog: pytest.LogCaptureFixture,
) -> None:
    started, gate = asyncio.Event(), asyncio.Event()

    async def write() -> None:
        started.set()
        await gate.wait()
        raise OSError("store closed")

    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        caller = asyncio.create_task(settle(write(), grace_s=0.05))
        await started.wait()
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        gate.set()
        for _ in range(5):  # the write's task ends, then its callbacks run
            await asyncio.sleep(0)
        gc.collect()  # an unretrieved exception is reported when its task is collected
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert reported == []
    assert [r.msg for r in caplog.records] == ["settlement.failed_after_cancel"]


async def test_a_second_cancel_stops_the_wait() -> None:
    started = asyncio.Event()
    forever = asyncio.Event()

    async def write() -> None:
        started.set()
        await forever.wait()

    caller = asyncio.create_task(settle(write(), grace_s=60))
    await started.wait()
    caller.cancel()
    await asyncio.sleep(0.05)
    assert not caller.done()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(caller, 5)
    forever.set()
    await asyncio.sleep(0)


async def test_a_write_failing_without_a_cancel_raises_to_its_caller() -> None:
    async def write() -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        await settle(write())


async def test_a_forced_stop_ends_the_wait_and_leaves_the_write_to_finish_alone() -> None:
    started, gate, written = asyncio.Event(), asyncio.Event(), []
    forced = asyncio.Event()

    async def write() -> None:
        started.set()
        await gate.wait()
        written.append(1)

    caller = asyncio.create_task(settle(write(), grace_s=60, abandon=forced))
    await started.wait()
    caller.cancel()
    await asyncio.sleep(0.05)
    assert not caller.done()
    forced.set()  # the daemon's second signal
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(caller, 5)
    assert written == []
    gate.set()
    await asyncio.sleep(0.01)
    assert written == [1]


async def test_a_write_settled_from_a_cancelled_callers_handler_is_bounded_too() -> None:
    # A caller that settles in its `except CancelledError` (a handler giving its event back,
    # the async path's release after an undelivered on-failure record) has had its cancel
    # delivered already: its write must still be bounded by the grace, or a store that never
    # answers holds the daemon's exit until a second signal.
    forever = asyncio.Event()
    started = asyncio.Event()

    async def write() -> None:
        await forever.wait()

    async def caller() -> None:
        try:
            started.set()
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            await settle(write(), grace_s=0.05)
            raise

    task = asyncio.create_task(caller())
    await started.wait()
    task.cancel()
    done, _ = await asyncio.wait((task,), timeout=5)
    assert done, "the handler's write was waited for without a bound"
    with pytest.raises(asyncio.CancelledError):
        await task
    forever.set()
    await asyncio.sleep(0)
