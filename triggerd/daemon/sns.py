"""Serving `[sns]`: the topics' service, its SQS outbox and the Query API handler on POST /,
wired to the daemon's functions and their Event queues."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from triggerd.config.plugins import import_extra
from triggerd.config.sns import LambdaSubscription
from triggerd.fanout.sns.service import SnsService
from triggerd.fanout.sns.sqs import SqsOutbox
from triggerd.http.sns_query import sns_query_handler
from triggerd.state.base import StateStore
from triggerd.types import ConfigError, MissingExtraError

if TYPE_CHECKING:
    from triggerd.daemon.app import Daemon

log = logging.getLogger("triggerd.sns")

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
    if settings.sqs_endpoints:
        try:
            import_extra("aiobotocore.session", "sqs", "sns.sqs_endpoints")
        except MissingExtraError as exc:
            raise ConfigError([str(exc)]) from None
    _warn_unordered(daemon)
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


def _warn_unordered(daemon: Daemon) -> None:
    """A function subscribed to a FIFO topic keeps each group's order only when its Event
    queue invokes one event at a time (reserved_concurrency = 1, docs/sns.md)."""
    assert daemon.config.sns is not None
    for topic in daemon.config.sns.topics:
        if not topic.fifo:
            continue
        for sub in topic.subscriptions:
            if not isinstance(sub, LambdaSubscription):
                continue
            fn = daemon.functions.get(sub.function)
            if fn is not None and fn.config.reserved_concurrency != 1:
                log.warning(
                    "sns.fifo_order_not_kept",
                    extra={
                        "topic": topic.name,
                        "function": sub.function,
                        "error": "set reserved_concurrency = 1 on the function to invoke "
                        "the topic's messages one at a time, in order",
                    },
                )
