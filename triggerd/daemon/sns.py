"""Serving `[sns]`: the topics' service, its SQS outbox and the Query API handler on POST /,
wired to the daemon's functions and their Event queues."""

from __future__ import annotations

from typing import TYPE_CHECKING

from triggerd.fanout.sns.service import SnsService
from triggerd.fanout.sns.sqs import SqsOutbox
from triggerd.http.sns_query import sns_query_handler
from triggerd.state.base import StateStore

if TYPE_CHECKING:
    from triggerd.daemon.app import Daemon

__all__ = ["start_sns"]


class _Queues:
    """The functions' Event queues, as the fan-out sees them (looked up at each publish: a
    reload may replace a queue)."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def queue_of(self, function: str) -> str | None:
        queue = self.daemon.invoke_queues.get(function)
        return None if queue is None else queue.name

    def wake(self, function: str) -> None:
        queue = self.daemon.invoke_queues.get(function)
        if queue is not None:
            queue.trigger.wake()


async def start_sns(daemon: Daemon, state: StateStore) -> SqsOutbox | None:
    """Serve the SNS API when the config declares `[sns]`; the SQS outbox to run (None
    without `[sns]`)."""
    settings = daemon.config.sns
    if settings is None:
        return None
    d = daemon.config.daemon
    outbox = SqsOutbox(
        settings, region=d.region, account_id=d.account_id, state=state, clock=daemon.clock.time
    )
    service = SnsService(
        settings,
        region=d.region,
        account_id=d.account_id,
        functions={name: fn.arn for name, fn in daemon.functions.items()},
        queues=_Queues(daemon),
        state=state,
        outbox=outbox,
        clock=daemon.clock.time,
    )
    await service.load()
    daemon.root_apis.set_query(sns_query_handler(service, d))
    return outbox
