"""Delivery to SQS subscriptions: a durable outbox in the state store's queue (one queue per
configured SQS endpoint, `sns-sqs:<name>`), written in the publish's transaction and sent
by one worker per endpoint with SendMessage through aiobotocore.

The worker sends in the order messages were published (so a FIFO topic's groups stay in
order in a FIFO queue, MessageGroupId and MessageDeduplicationId passed on), retries a failed
send in place with backoff (later messages wait behind it), and after `sqs_retry_max_age_s`
gives up on it: an error log line and an entry in the DLQ index (`triggerd dlq list`)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import orjson

from triggerd.config.aws import error_message, open_client
from triggerd.config.sns import SnsSettings, SqsEndpoint
from triggerd.delivery.retry import Backoff
from triggerd.state.base import NewEvent, QueuedEvent, StateStore

if TYPE_CHECKING:
    from triggerd.fanout.sns.message import Message
    from triggerd.fanout.sns.topics import Subscription

__all__ = ["SqsOutbox", "outbox_name"]

log = logging.getLogger("triggerd.sns")
_POLL_S = 2.0
_LEASE_S = 120.0


def outbox_name(queue: str) -> str:
    return f"sns-sqs:{queue}"


class SqsOutbox:
    """The SQS endpoints subscriptions may deliver to, and their senders."""

    def __init__(
        self,
        settings: SnsSettings,
        *,
        region: str,
        account_id: str,
        state: StateStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.endpoints = {e.name: e for e in settings.sqs_endpoints}
        self.queue_arns = {e.name: e.arn(region, account_id) for e in settings.sqs_endpoints}
        self.region = region
        self.state = state
        self.clock = clock
        self.max_age_s = settings.sqs_retry_max_age_s
        #: One per sender: a sender clearing its own cannot swallow a wake-up another one
        #: has not seen yet (it would wait a whole poll interval with a message to send).
        self._wakes = {e.name: asyncio.Event() for e in settings.sqs_endpoints}
        self._stopping = asyncio.Event()
        self.backoff = Backoff(base_s=1.0, max_s=60.0, jitter=0.1)

    def event(
        self, sub: Subscription, message: Message, region: str, rid: str, now: float
    ) -> NewEvent:
        """The outbox entry of one SQS delivery."""
        if sub.raw:
            body = message.body_for("sqs")
            attrs = {n: _sqs_attribute(a.data_type, a.value) for n, a in message.attributes.items()}
        else:
            body = message.sqs_envelope(region=region, subscription_arn=sub.arn)
            attrs = {}
        doc = {
            "body": body,
            "attributes": attrs,
            "group": message.group_id,
            "dedup": message.dedup_id and f"{message.dedup_id}",
        }
        return NewEvent(outbox_name(sub.target), "", orjson.dumps(doc), rid, now, now)

    def wake(self) -> None:
        for event in self._wakes.values():
            event.set()

    def stop(self) -> None:
        self._stopping.set()
        self.wake()

    async def run(self) -> None:
        """Send until stopped (nothing to do without endpoints)."""
        if not self.endpoints:
            return
        async with AsyncExitStack() as stack, asyncio.TaskGroup() as tg:
            for endpoint in self.endpoints.values():
                client = await open_client(
                    stack,
                    "sqs",
                    extra="sqs",
                    needed_by="SNS subscriptions to SQS",
                    region=endpoint.region or self.region,
                    endpoint_url=endpoint.endpoint_url,
                    credentials=endpoint.client_credentials(),
                    retries={"max_attempts": 1},
                    connect_timeout=5,
                    read_timeout=20,
                )
                tg.create_task(self._sender(endpoint, client))

    async def _sender(self, endpoint: SqsEndpoint, client: Any) -> None:
        name = outbox_name(endpoint.name)
        wake = self._wakes[endpoint.name]
        while not self._stopping.is_set():
            wake.clear()
            claimed = await self.state.claim(name, 10, _LEASE_S, self.clock())
            for index, event in enumerate(claimed):
                if self._stopping.is_set():
                    for rest in claimed[index:]:
                        await self.state.release(rest.id, available_at=0, attempts=rest.attempts)
                    return
                await self._deliver(endpoint, client, event)
            if len(claimed) < 10:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), _POLL_S)

    async def _deliver(self, endpoint: SqsEndpoint, client: Any, event: QueuedEvent) -> None:
        doc = orjson.loads(event.payload)
        kwargs: dict[str, Any] = {"QueueUrl": endpoint.queue_url, "MessageBody": doc["body"]}
        if doc["attributes"]:
            kwargs["MessageAttributes"] = {
                name: (
                    {**attr, "BinaryValue": base64.b64decode(attr["BinaryValue"])}
                    if "BinaryValue" in attr
                    else attr
                )
                for name, attr in doc["attributes"].items()
            }
        if doc["group"]:
            kwargs["MessageGroupId"] = doc["group"]
        if doc["dedup"] and endpoint.fifo:
            kwargs["MessageDeduplicationId"] = doc["dedup"]
        attempt = 0
        while True:
            try:
                await client.send_message(**kwargs)
            except Exception as exc:  # task boundary: any failure is retried, then dropped
                attempt += 1
                age = self.clock() - event.enqueued_at
                if age >= self.max_age_s or self._stopping.is_set():
                    await self._give_up(endpoint, event, exc, age)
                    return
                delay = self.backoff.delay(attempt)
                log.warning(
                    "sns.sqs_send_failed",
                    extra={
                        "queue": endpoint.name,
                        "error": error_message(exc)[:300],
                        "retry_in_s": delay,
                        "attempt": attempt,
                    },
                )
                await self.state.extend_lease([event.id], _LEASE_S + delay, self.clock())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                continue
            await self.state.complete(event.id)
            return

    async def _give_up(
        self, endpoint: SqsEndpoint, event: QueuedEvent, exc: BaseException, age: float
    ) -> None:
        if self._stopping.is_set() and age < self.max_age_s:
            # Stopping: keep it for the next run.
            await self.state.release(event.id, available_at=0, attempts=event.attempts)
            return
        log.error(
            "sns.sqs_delivery_dropped",
            extra={"queue": endpoint.name, "error": error_message(exc)[:300], "age_s": age},
        )
        record = {
            "condition": "EventAgeExceeded",
            "queue": endpoint.name,
            "error": error_message(exc)[:1000],
            "message": orjson.loads(event.payload),
        }
        await self.state.dlq_add(
            trigger=outbox_name(endpoint.name),
            function="",
            destination="dropped",
            condition="EventAgeExceeded",
            created_at=self.clock(),
            record=orjson.dumps(record),
        )
        await self.state.complete(event.id)


def _sqs_attribute(data_type: str, value: str) -> dict[str, Any]:
    """An SNS message attribute as the SQS message attribute raw delivery gives it (the
    outbox keeps Binary values as base64 text; `_deliver` decodes them)."""
    if data_type.startswith("Binary"):
        return {"DataType": data_type, "BinaryValue": value}
    return {"DataType": data_type, "StringValue": value}
