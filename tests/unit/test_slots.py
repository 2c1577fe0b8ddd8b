"""The reserved-concurrency primitive: counting, first come first served, timeouts and
cancellation never leak a slot."""

from __future__ import annotations

import asyncio

from triggerd.functions.backends.slots import Slots


async def test_free_slots_are_taken_without_waiting_and_given_back() -> None:
    slots = Slots(2)
    assert slots.try_acquire() and await slots.acquire(0.01)
    assert slots.locked() and not slots.try_acquire()
    slots.release()
    assert not slots.locked() and slots.try_acquire()


async def test_waiters_are_served_in_arrival_order() -> None:
    slots = Slots(1)
    assert slots.try_acquire()
    order: list[int] = []

    async def wait(i: int) -> None:
        assert await slots.acquire(5)
        order.append(i)

    tasks = [asyncio.create_task(wait(i)) for i in range(3)]
    await asyncio.sleep(0)
    for _ in range(3):
        slots.release()
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2]
    assert slots.locked()  # the last waiter still holds the one slot


async def test_a_timed_out_waiter_gets_false_and_is_skipped_on_release() -> None:
    slots = Slots(1)
    assert slots.try_acquire()
    assert await slots.acquire(0.01) is False
    slots.release()  # nobody is waiting any more: the slot goes back to the pool
    assert slots.try_acquire()


async def test_a_cancelled_waiter_does_not_take_or_lose_a_slot() -> None:
    slots = Slots(1)
    assert slots.try_acquire()
    waiting = asyncio.create_task(slots.acquire(5))
    await asyncio.sleep(0)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    slots.release()
    assert slots.try_acquire() and slots.locked()


async def test_a_slot_handed_to_a_waiter_cancelled_before_it_ran_is_passed_on() -> None:
    slots = Slots(1)
    assert slots.try_acquire()
    first = asyncio.create_task(slots.acquire(5))
    second = asyncio.create_task(slots.acquire(5))
    await asyncio.sleep(0)
    slots.release()  # handed to `first`...
    first.cancel()  # ...which is cancelled before it resumes
    await asyncio.gather(first, return_exceptions=True)
    assert await asyncio.wait_for(second, 1) is True
    assert slots.locked()


def test_a_pool_used_by_successive_loops_queues_on_the_running_one() -> None:
    """The pool reuses the loop of its last wait only while that loop runs."""
    slots = Slots(1)

    async def contend() -> list[int]:
        assert slots.try_acquire()
        order: list[int] = []

        async def wait(i: int) -> None:
            assert await slots.acquire(5)
            order.append(i)
            slots.release()

        tasks = [asyncio.create_task(wait(i)) for i in range(2)]
        await asyncio.sleep(0)
        slots.release()
        await asyncio.gather(*tasks)
        return order

    assert asyncio.run(contend()) == [0, 1]
    assert asyncio.run(contend()) == [0, 1]
