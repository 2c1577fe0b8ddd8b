"""The `sqs` on-failure destination: each record (as the pipeline builds it, in AWS's format)
becomes the JSON body of one message. `send` returns only after SendMessage succeeded and
raises otherwise, so the pipeline retries and acks the source only after it is stored."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import orjson

from triggerd.types import DestinationContext, JSONDict, RetryableError

from .client import open_client, queue_attributes
from .config import SqsDestinationConfig

#: SQS's default maximum message size (the queue may allow up to 1 MiB).
_DEFAULT_MAX_BYTES = 262_144
#: Parts AWS drops from a record that does not fit the destination.
_PAYLOAD_PARTS = ("payload", "requestPayload", "responsePayload")


class DestinationSendError(RuntimeError):
    """SendMessage did not confirm the record."""


class SqsDestination:
    def __init__(
        self, config: SqsDestinationConfig, ctx: DestinationContext, *, client: Any = None
    ) -> None:
        self.config = config
        self.ctx = ctx
        self.client: Any = client
        self.max_bytes = _DEFAULT_MAX_BYTES
        #: The queue's attributes (its MaximumMessageSize) could not be read at start.
        self._unread = False
        self._stack = AsyncExitStack()

    async def start(self) -> None:
        if self.client is None:
            region = self.config.region_or(self.ctx.region)
            self.client = await open_client(
                self._stack, self.config, region, pool=10, read_timeout_s=30
            )
        try:
            await self._read_attributes()
        except RetryableError as exc:
            # Not reachable yet (or answering 5xx): the trigger runs, and `send` asks again
            # (a record that cannot be sent meanwhile is retried by the pipeline).
            self._unread = True
            self.ctx.log.warning(
                "destination.sqs.unavailable",
                extra={"trigger": self.ctx.trigger, "error": str(exc)},
            )
        except BaseException:
            await self._stack.aclose()
            raise

    async def _read_attributes(self) -> None:
        attrs = await queue_attributes(self.client, self.config, self.ctx.trigger, "on_failure")
        try:
            self.max_bytes = int(attrs.get("MaximumMessageSize", _DEFAULT_MAX_BYTES))
        except ValueError:
            self.max_bytes = _DEFAULT_MAX_BYTES
        self._unread = False

    async def send(self, record: JSONDict) -> None:
        if self._unread:
            await self._read_attributes()
        body = self.encode(record)
        response = await self.client.send_message(QueueUrl=self.config.queue_url, MessageBody=body)
        if not isinstance(response, dict) or not response.get("MessageId"):
            raise DestinationSendError(
                f"SendMessage to {self.config.queue_url} returned no MessageId"
            )

    def encode(self, record: JSONDict) -> str:
        """The record as JSON; payload parts are dropped when it would not fit the queue."""
        body = orjson.dumps(record)
        if len(body) > self.max_bytes:
            trimmed = {k: v for k, v in record.items() if k not in _PAYLOAD_PARTS}
            body = orjson.dumps(trimmed)
            self.ctx.log.warning(
                "destination.sqs.payload_dropped",
                extra={"trigger": self.ctx.trigger, "bytes": len(body), "limit": self.max_bytes},
            )
        return body.decode("utf-8")

    async def stop(self) -> None:
        await self._stack.aclose()
