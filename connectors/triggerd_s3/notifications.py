"""Notifications mode: S3 event notifications read from the SQS queue the bucket publishes to.

The SQS message is the source of truth. Each S3 record of a notification becomes one Record;
the message is deleted only once every one of its records is acked (the pipeline acks after the
event is durably on the async queue). A nacked record leaves its message alone: it comes back
after the queue's visibility timeout. `s3:TestEvent` messages, and notifications with no record
passing the prefix / suffix / event rules, are deleted without an event. A message that is not
an S3 notification is logged and left in the queue (its redrive policy moves it to a DLQ).

Records are normalised to the eventVersion 2.1 shape: every field the notification has is kept
as it is (the key keeps the server's URL-encoding), fields some servers leave out (moto has no
`userIdentity`, `requestParameters`, `responseElements`, `ownerIdentity`) are filled in, and
`size` / `eTag` are dropped from `ObjectRemoved:*` records as AWS does. `versionId` and
`sequencer` appear only when the notification has them: a made-up sequencer would be compared
by consumers against real ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import unquote_plus

import orjson

from triggerd.delivery.ready import ReadyRecords
from triggerd.events.s3 import new_host_id, new_request_id
from triggerd.events.timestamps import iso_ms
from triggerd.types import BaseSource, JSONDict, Record, SourceContext

from .check import check_queue
from .client import describe_error, open_client
from .config import S3SourceConfig

#: Messages received but not yet deleted (or given back) before receiving pauses.
MAX_INFLIGHT_MESSAGES = 100
_RETRY_MAX_S = 30.0


class NotificationError(ValueError):
    """An SQS message body that is not an S3 event notification."""


@dataclass(slots=True)
class _Message:
    message_id: str
    receipt_handle: str
    pending: int
    nacked: bool = False


@dataclass(frozen=True, slots=True)
class _Handle:
    message: _Message
    index: int


@dataclass(slots=True)
class Parsed:
    """A notification body: its S3 records, or `test` for an `s3:TestEvent`."""

    records: list[JSONDict] = field(default_factory=list)
    test: bool = False


def parse_body(body: str) -> Parsed:
    """Parse an SQS message body holding an S3 notification (also wrapped in an SNS
    notification). Raises NotificationError for anything else."""
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise NotificationError(f"body is not JSON: {exc}") from None
    if isinstance(doc, dict) and doc.get("Type") == "Notification" and "Message" in doc:
        try:
            doc = json.loads(doc["Message"])
        except (TypeError, ValueError) as exc:
            raise NotificationError(f"SNS Message is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise NotificationError("body is not a JSON object")
    if doc.get("Event") == "s3:TestEvent":
        return Parsed(test=True)
    records = doc.get("Records")
    if not isinstance(records, list) or not records:
        raise NotificationError("body has no Records")
    for rec in records:
        if not isinstance(rec, dict) or rec.get("eventSource", "aws:s3") != "aws:s3":
            raise NotificationError("a record is not an aws:s3 event")
        s3 = rec.get("s3")
        if not isinstance(s3, dict) or not isinstance(s3.get("object"), dict):
            raise NotificationError("a record has no s3.object")
        if not isinstance(s3["object"].get("key"), str) or not isinstance(
            rec.get("eventName"), str
        ):
            raise NotificationError("a record has no eventName or s3.object.key")
    return Parsed(records=records)


def normalise_record(
    rec: JSONDict, *, region: str, configuration_id: str, owner_id: str, now: float
) -> JSONDict:
    """One notification record in the eventVersion 2.1 shape, AWS's field order (see the
    module docstring for what is kept, filled in and dropped)."""
    s3_in: JSONDict = rec["s3"]
    bucket_in: JSONDict = s3_in.get("bucket") or {}
    obj_in: JSONDict = s3_in["object"]
    event_name: str = rec["eventName"]
    name = bucket_in.get("name", "")
    obj: JSONDict = {"key": obj_in["key"]}
    removed = event_name.startswith("ObjectRemoved:")
    for k in ("size", "eTag", "versionId", "sequencer"):
        if k in obj_in and not (removed and k in ("size", "eTag")):
            obj[k] = obj_in[k]
    _extend(obj, obj_in, ("size", "eTag"))
    bucket: JSONDict = {
        "name": name,
        "ownerIdentity": bucket_in.get("ownerIdentity") or {"principalId": owner_id},
        "arn": bucket_in.get("arn") or f"arn:aws:s3:::{name}",
    }
    _extend(bucket, bucket_in)
    s3: JSONDict = {
        "s3SchemaVersion": s3_in.get("s3SchemaVersion", "1.0"),
        "configurationId": s3_in.get("configurationId") or configuration_id,
        "bucket": bucket,
        "object": obj,
    }
    _extend(s3, s3_in)
    out: JSONDict = {
        "eventVersion": rec.get("eventVersion") or "2.1",
        "eventSource": "aws:s3",
        "awsRegion": rec.get("awsRegion") or region,
        "eventTime": rec.get("eventTime") or iso_ms(now),
        "eventName": event_name,
        "userIdentity": rec.get("userIdentity") or {"principalId": owner_id},
        "requestParameters": rec.get("requestParameters") or {"sourceIPAddress": "127.0.0.1"},
        "responseElements": rec.get("responseElements")
        or {"x-amz-request-id": new_request_id(), "x-amz-id-2": new_host_id()},
        "s3": s3,
    }
    _extend(out, rec)
    return out


def _extend(out: JSONDict, source: JSONDict, skip: tuple[str, ...] = ()) -> None:
    """Append the keys of `source` that `out` does not have (extra fields are kept)."""
    for k, v in source.items():
        if k not in out and k not in skip:
            out[k] = v


def raw_key(record: JSONDict) -> str:
    """The object key of a notification record, decoded (`unquote_plus`)."""
    return unquote_plus(str(record["s3"]["object"]["key"]))


def event_epoch(record: JSONDict, default: float) -> float:
    text = record.get("eventTime")
    if not isinstance(text, str):
        return default
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return default


class NotificationSource(BaseSource):
    def __init__(self, config: S3SourceConfig, ctx: SourceContext, client: Any = None) -> None:
        self._cfg = config
        self._ctx = ctx
        self._log = ctx.log
        self._scope = ctx.trigger
        self._region = config.region or ctx.region
        self._owner = config.account_id or ctx.account_id
        self._queue_url = config.queue_url or ""
        self._secrets = config.secrets()
        self._client = client
        self._stack = AsyncExitStack()
        self._ready = ReadyRecords()
        self._room = asyncio.Event()
        self._inflight = 0
        self._task: asyncio.Task[None] | None = None
        #: A recording's messages, by id (`triggerd record`: none is deleted; all are made
        #: visible again at stop).
        self._recorded: dict[str, _Message] = {}

    async def start(self) -> None:
        opened = self._client is None
        if opened:
            self._client = await open_client(
                self._stack,
                "sqs",
                self._cfg,
                region=self._region,
                endpoint_url=self._cfg.sqs_endpoint_url or self._cfg.endpoint_url,
            )
        try:
            # A missing queue or refused credentials stop the start (exit 2), as for an
            # sqs trigger; an unreachable endpoint defers it (the daemon tries again).
            await check_queue(self._client, self._cfg, self._scope)
        except BaseException:
            await self._stack.aclose()
            if opened:
                self._client = None  # closed with the stack: a start tried again opens one
            raise
        self._room.set()
        self._task = asyncio.create_task(self._fetch_loop(), name=f"s3-notifications:{self._scope}")
        self._log.info(
            "s3.started",
            extra={
                "trigger": self._scope,
                "bucket": self._cfg.bucket,
                "mode": "notifications",
                "queue_url": self._queue_url,
            },
        )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._recorded:
            await self._give_back_recorded()
        await self._stack.aclose()
        self._ready.wake()

    async def _give_back_recorded(self) -> None:
        """A recording ends: every message it received becomes visible again at once
        (ChangeMessageVisibilityBatch to 0), not after the queue's visibility timeout."""
        messages, self._recorded = list(self._recorded.values()), {}
        for i in range(0, len(messages), 10):
            entries = [
                {"Id": str(n), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": 0}
                for n, m in enumerate(messages[i : i + 10])
            ]
            try:
                await self._client.change_message_visibility_batch(
                    QueueUrl=self._queue_url, Entries=entries
                )
            except Exception as exc:  # logged: they come back after the visibility timeout
                self._log.warning(
                    "s3.give_back_failed",
                    extra={"trigger": self._scope, "error": describe_error(exc, self._secrets)},
                )

    # ---- Source protocol ------------------------------------------------------------------

    async def receive(self, max_records: int, timeout_s: float) -> list[Record]:
        return await self._ready.take(max_records, timeout_s)

    async def ack(self, records: Sequence[Record]) -> None:
        done: list[_Message] = []
        for record in records:
            handle = record.handle
            if not isinstance(handle, _Handle):
                continue
            msg = handle.message
            msg.pending -= 1
            if msg.pending == 0 and not msg.nacked:
                done.append(msg)
            elif msg.pending == 0:
                self._release(1)
        await self._delete(done)

    async def nack(self, records: Sequence[Record]) -> None:
        """Leave the message in the queue: it is received again after its visibility timeout
        (its other records, if any, come back with it)."""
        for record in records:
            handle = record.handle
            if isinstance(handle, _Handle):
                handle.message.nacked = True
                handle.message.pending -= 1
                if handle.message.pending == 0:
                    self._release(1)

    # ---- receiving ------------------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        delay = 1.0
        while True:
            await self._room.wait()
            try:
                response = await self._client.receive_message(
                    QueueUrl=self._queue_url,
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=self._cfg.wait_time_s,
                    MessageSystemAttributeNames=["SentTimestamp"],
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # task boundary: log, back off, receive again
                self._log.warning(
                    "s3.receive_failed",
                    extra={
                        "trigger": self._scope,
                        "queue_url": self._queue_url,
                        "error": describe_error(exc, self._secrets),
                        "retry_in_s": delay,
                    },
                )
                await self._ctx.clock.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)
                continue
            delay = 1.0
            for message in response.get("Messages", []):
                await self._on_message(message)

    async def _on_message(self, message: JSONDict) -> None:
        message_id = str(message.get("MessageId", ""))
        msg = _Message(message_id, str(message.get("ReceiptHandle", "")), 0)
        if self._cfg.recording:
            self._recorded[message_id] = msg
        try:
            parsed = parse_body(str(message.get("Body", "")))
        except NotificationError as exc:
            self._log.error(
                "s3.invalid_notification",
                extra={"trigger": self._scope, "message_id": message_id, "error": str(exc)},
            )
            return
        if parsed.test:
            self._log.info(
                "s3.test_event_skipped", extra={"trigger": self._scope, "message_id": message_id}
            )
            await self._delete([msg], count=False)
            return
        now = self._ctx.clock.time()
        records: list[Record] = []
        for index, rec in enumerate(parsed.records):
            if not self._cfg.event_selected(rec["eventName"]):
                continue
            if not self._cfg.key_matches(raw_key(rec)):
                continue
            payload = normalise_record(
                rec,
                region=self._region,
                configuration_id=self._cfg.configuration_id,
                owner_id=self._owner,
                now=now,
            )
            records.append(
                Record(
                    payload=payload,
                    item_id=f"{message_id}:{index}",
                    size=len(orjson.dumps(payload)),
                    created_at=event_epoch(payload, now),
                    handle=_Handle(msg, index),
                )
            )
        if not records:
            await self._delete([msg], count=False)
            return
        msg.pending = len(records)
        self._inflight += 1
        if self._inflight >= MAX_INFLIGHT_MESSAGES:
            self._room.clear()
        self._ready.extend(records)

    def _release(self, count: int) -> None:
        self._inflight -= count
        if self._inflight < MAX_INFLIGHT_MESSAGES:
            self._room.set()

    async def _delete(self, messages: list[_Message], *, count: bool = True) -> None:
        """DeleteMessageBatch, 10 at a time. A failed delete is logged: the event is already
        durable, so the worst outcome is that the message is delivered once more."""
        if count and messages:
            self._release(len(messages))
        if self._cfg.recording:
            return  # a recording deletes nothing: `stop` gives every message back
        for i in range(0, len(messages), 10):
            chunk = messages[i : i + 10]
            entries = [
                {"Id": str(n), "ReceiptHandle": m.receipt_handle} for n, m in enumerate(chunk)
            ]
            try:
                response = await self._client.delete_message_batch(
                    QueueUrl=self._queue_url, Entries=entries
                )
                failed = response.get("Failed", [])
            except Exception as exc:  # logged; the message is redelivered, events dedupe
                failed = [
                    {"Id": e["Id"], "Message": describe_error(exc, self._secrets)} for e in entries
                ]
            for item in failed:
                self._log.warning(
                    "s3.delete_failed",
                    extra={
                        "trigger": self._scope,
                        "message_id": chunk[int(item.get("Id", 0))].message_id,
                        "error": str(item.get("Message", item.get("Code", ""))),
                    },
                )
