"""Serving `[sns]`: the topics' service, its SQS outbox and the Query API handler on POST /,
wired to the daemon's functions and their Event queues."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from triggerd.config.plugins import import_extra
from triggerd.config.sns import SnsSettings
from triggerd.fanout.sns.fifo import FifoRelay
from triggerd.fanout.sns.service import SnsService
from triggerd.fanout.sns.signing import Signer, SigningKeyError
from triggerd.fanout.sns.sqs import SqsOutbox
from triggerd.http.queues import queue_name
from triggerd.http.sns_query import sns_query_handler
from triggerd.state.base import StateStore
from triggerd.types import ConfigError, MissingExtraError

if TYPE_CHECKING:
    from triggerd.daemon.app import Daemon

__all__ = ["start_sns"]


class _Queues:
    """The functions' Event queues, as the fan-out sees them (looked up at each publish: a
    reload may replace a queue)."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def queue_of(self, function: str) -> str | None:
        """None once the function is gone; while a reload restarts its queue, the queue's
        durable name (what is committed there is invoked once the queue runs again)."""
        queue = self.daemon.invoke_queues.get(function)
        if queue is not None:
            return queue.name
        return queue_name(function) if function in self.daemon.functions else None

    def wake(self, function: str) -> None:
        queue = self.daemon.invoke_queues.get(function)
        if queue is not None:
            queue.trigger.wake()


class _FunctionArns(Mapping[str, str]):
    """The daemon's functions (name -> ARN) as they are now: a reload adds and removes some,
    and Subscribe must see them without a restart."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def __getitem__(self, name: str) -> str:
        return self.daemon.functions[name].arn

    def __iter__(self) -> Iterator[str]:
        return iter(self.daemon.functions)

    def __len__(self) -> int:
        return len(self.daemon.functions)


class SnsWorkers:
    """What runs beside the API: the SQS outbox's senders and the FIFO relay."""

    def __init__(self, outbox: SqsOutbox, relay: FifoRelay) -> None:
        self.outbox = outbox
        self.relay = relay

    def stop(self) -> None:
        self.outbox.stop()
        self.relay.stop()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.outbox.run())
            tg.create_task(self.relay.run())


async def start_sns(daemon: Daemon, state: StateStore) -> SnsWorkers | None:
    """Serve the SNS API when the config declares `[sns]`; its workers to run (None without
    `[sns]`)."""
    settings = daemon.config.sns
    if settings is None:
        return None
    d = daemon.config.daemon
    if settings.sqs_endpoints:
        try:
            import_extra("aiobotocore.session", "sqs", "sns.sqs_endpoints")
        except MissingExtraError as exc:
            raise ConfigError([str(exc)]) from None
    signer = await _signer(settings)
    outbox = SqsOutbox(
        settings, region=d.region, account_id=d.account_id, state=state, clock=daemon.clock.time
    )
    queues = _Queues(daemon)
    relay = FifoRelay(list(daemon.functions), state=state, queues=queues, clock=daemon.clock.time)
    service = SnsService(
        settings,
        region=d.region,
        account_id=d.account_id,
        functions=_FunctionArns(daemon),
        queues=queues,
        state=state,
        outbox=outbox,
        relay=relay,
        signer=signer,
        clock=daemon.clock.time,
    )
    await service.load()
    daemon.root_apis.set_query(sns_query_handler(service, d))
    return SnsWorkers(outbox, relay)


async def _signer(settings: SnsSettings) -> Signer | None:
    """The notifications' signer when `signing_key_file` is set; a config error naming the
    key when it cannot be used."""
    if settings.signing_key_file is None or settings.signing_cert_url is None:
        return None
    try:
        import_extra("cryptography", "sns_http", "sns.signing_key_file")
    except MissingExtraError as exc:
        raise ConfigError([str(exc)]) from None
    path, url = settings.signing_key_file, settings.signing_cert_url
    try:
        return await asyncio.to_thread(Signer.from_file, path, url, settings.signature_version)
    except SigningKeyError as exc:
        raise ConfigError([f"sns.signing_key_file: {exc}"]) from None
