"""Settlement writes (acks, nacks, releases, completions) that a cancellation must not cut short.

`settle(write)` runs the write in a task of its own and waits for it. When the caller is
cancelled meanwhile (a drain timeout), it still waits for the write, up to `SETTLE_GRACE_S`,
before the cancellation goes on: the task that settles an event ends only after its write, and
the daemon closes sources, destinations and the state store only once its triggers' tasks have
ended. A write made from a cancelled caller's handler (a release after the cancel was
delivered) is bounded alike. A second cancellation, or the `abandon` event set (the daemon's
second signal, which forces the exit: a task group does not pass a second cancellation on to
its tasks), stops the wait at once.

A write left running that way (or still failing after the grace) is not dropped unread: its
failure is logged as one line, never asyncio's "Task exception was never retrieved" traceback
(`asyncio.shield` leaves the inner task unread once its caller is cancelled).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")

#: After a cancellation: how long a settlement write under way may still take. Short writes
#: (one commit, one request); the daemon's stop is bounded by `shutdown_timeout_s` plus its
#: own grace for cancelled work (`CANCEL_GRACE_S`), which is longer.
SETTLE_GRACE_S = 2.0

log = logging.getLogger("triggerd.delivery")


async def settle(
    write: Awaitable[T],
    *,
    grace_s: float = SETTLE_GRACE_S,
    abandon: asyncio.Event | None = None,
) -> T:
    """Await `write` to its end even if the caller is cancelled meanwhile (then for `grace_s`
    at most, or until `abandon` is set, and the cancellation is raised afterwards). Called
    while the caller is being cancelled already (from its `except CancelledError`), the write
    is bounded the same way: the grace, then CancelledError if it has not ended well."""
    task = asyncio.ensure_future(write)
    current = asyncio.current_task()
    if current is not None and current.cancelling():
        if await finish_after_cancel(task, grace_s, abandon):
            return task.result()
        raise asyncio.CancelledError
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await finish_after_cancel(task, grace_s, abandon)
        raise


async def finish_after_cancel(
    task: asyncio.Future[T], grace_s: float, abandon: asyncio.Event | None = None
) -> bool:
    """Wait up to `grace_s` (or until `abandon` is set) for `task`, whose awaiting caller was
    cancelled; whether it ended well. Its failure is logged (and read), now or when it ends;
    a second cancellation of the caller stops the wait."""
    try:
        if not task.done():
            await _wait_unless_abandoned(task, grace_s, abandon)
    finally:
        if task.done():
            _read_left_write(task)
        else:
            task.add_done_callback(_read_left_write)
    return task.done() and not task.cancelled() and task.exception() is None


async def _wait_unless_abandoned(
    task: asyncio.Future[T], grace_s: float, abandon: asyncio.Event | None
) -> None:
    if abandon is None:
        await asyncio.wait((task,), timeout=grace_s)
        return
    if abandon.is_set():
        return
    abandoned = asyncio.ensure_future(abandon.wait())
    try:
        await asyncio.wait((task, abandoned), timeout=grace_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        abandoned.cancel()


def _read_left_write(task: asyncio.Future[T]) -> None:
    """A settlement write whose caller was cancelled has ended: its failure is one line."""
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        log.warning(
            "settlement.failed_after_cancel",
            extra={"error": f"{type(error).__name__}: {error}"},
        )
