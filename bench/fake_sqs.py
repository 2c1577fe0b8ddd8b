"""A small, fast, in-memory SQS-compatible endpoint for the sqs benchmark only.

moto_server costs 13-25 ms per call, which hides what triggerd itself costs; this endpoint
answers in well under a millisecond so the benchmark can compare triggerd with a bare
aiobotocore loop where the client side dominates. It runs in its own process (`python -m
bench.fake_sqs`, started by `fake_sqs_server()`), so its CPU never shares the measured event
loop or its GIL.

It speaks SQS's JSON protocol as aiobotocore 3.x sends it (POST `/`, `X-Amz-Target:
AmazonSQS.<Operation>`, `Content-Type: application/x-amz-json-1.0`) and implements only what
the benchmark's clients call: CreateQueue, GetQueueAttributes, SendMessageBatch, ReceiveMessage
(long polling up to WaitTimeSeconds), DeleteMessageBatch, ChangeMessageVisibility and
ChangeMessageVisibilityBatch. Visibility: a received message is invisible until deleted or until
its visibility timeout runs out (then it is received again with a higher
ApproximateReceiveCount). No FIFO queues, message attributes, delays or retention.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import heapq
import itertools
import json
import os
import subprocess
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bench import BENCH_DIR, BenchError
from bench.harness import stop_process

ACCOUNT = "123456789012"
REGION = "us-east-1"
SENDER_ID = "AIDAIENQZJOLO23YVJ4VO"
JSON_TYPE = "application/x-amz-json-1.0"
DEFAULT_VISIBILITY_S = 30

if TYPE_CHECKING:
    from aiohttp import web

Params = dict[str, Any]


class SqsError(Exception):
    """An SQS error reply: `code` becomes the `__type` botocore reads."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass(slots=True)
class Message:
    id: str
    body: str
    md5: str
    sent_ms: int
    receives: int = 0
    first_receive_ms: int = 0
    #: Bumped on every receive or visibility change; stale in-flight heap entries are skipped.
    generation: int = 0
    in_flight: bool = False
    handle: str = ""


@dataclass(slots=True)
class Queue:
    name: str
    url: str
    visibility_s: int = DEFAULT_VISIBILITY_S
    messages: dict[str, Message] = field(default_factory=dict)
    #: Ids of visible messages, oldest first (deleted ids are skipped when popped).
    ready: deque[str] = field(default_factory=deque)
    #: (visible again at, generation, id) of received messages.
    in_flight: list[tuple[float, int, str]] = field(default_factory=list)
    handles: dict[str, str] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    def release_expired(self, now: float) -> None:
        heap = self.in_flight
        while heap and heap[0][0] <= now:
            _, generation, mid = heapq.heappop(heap)
            msg = self.messages.get(mid)
            if msg is not None and msg.in_flight and msg.generation == generation:
                self._make_visible(msg)

    def next_expiry(self) -> float | None:
        return self.in_flight[0][0] if self.in_flight else None

    def _make_visible(self, msg: Message) -> None:
        msg.in_flight = False
        msg.generation += 1
        self.handles.pop(msg.handle, None)
        msg.handle = ""
        self.ready.append(msg.id)

    def take(self, count: int, visibility_s: int, now: float) -> list[Message]:
        self.release_expired(now)
        out: list[Message] = []
        now_ms = int(time.time() * 1000)
        while self.ready and len(out) < count:
            msg = self.messages.get(self.ready.popleft())
            if msg is None or msg.in_flight:
                continue
            msg.receives += 1
            msg.first_receive_ms = msg.first_receive_ms or now_ms
            msg.generation += 1
            msg.in_flight = True
            msg.handle = f"{msg.id}#{msg.generation}#{uuid.uuid4().hex[:8]}"
            self.handles[msg.handle] = msg.id
            heapq.heappush(self.in_flight, (now + visibility_s, msg.generation, msg.id))
            out.append(msg)
        return out

    def message_for(self, handle: str) -> Message:
        mid = self.handles.get(handle)
        msg = self.messages.get(mid) if mid is not None else None
        if msg is None:
            raise SqsError("ReceiptHandleIsInvalid", f"The receipt handle {handle!r} is not valid.")
        return msg

    def delete(self, handle: str) -> None:
        msg = self.message_for(handle)
        del self.messages[msg.id]
        self.handles.pop(handle, None)

    def change_visibility(self, handle: str, timeout_s: int, now: float) -> None:
        msg = self.message_for(handle)
        if timeout_s <= 0:
            self._make_visible(msg)
            self.notify()
            return
        msg.generation += 1
        heapq.heappush(self.in_flight, (now + timeout_s, msg.generation, msg.id))
        self.notify()  # long pollers re-compute when to look again


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


class FakeSqs:
    """The in-memory service: one method per operation, each taking the JSON request."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.queues: dict[str, Queue] = {}
        self.ids = itertools.count(1)

    def queue(self, params: Params) -> Queue:
        url = str(params.get("QueueUrl", ""))
        q = self.queues.get(url.rstrip("/").rsplit("/", 1)[-1])
        if q is None:
            raise SqsError("QueueDoesNotExist", "The specified queue does not exist.")
        return q

    async def create_queue(self, params: Params) -> Params:
        name = str(params["QueueName"])
        q = self.queues.get(name)
        if q is None:
            attrs = params.get("Attributes") or {}
            visibility = int(attrs.get("VisibilityTimeout", DEFAULT_VISIBILITY_S))
            q = Queue(name, f"{self.base_url}/{ACCOUNT}/{name}", visibility)
            self.queues[name] = q
        return {"QueueUrl": q.url}

    async def get_queue_attributes(self, params: Params) -> Params:
        q = self.queue(params)
        in_flight = sum(1 for m in q.messages.values() if m.in_flight)
        return {
            "Attributes": {
                "QueueArn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{q.name}",
                "VisibilityTimeout": str(q.visibility_s),
                "ApproximateNumberOfMessages": str(len(q.messages) - in_flight),
                "ApproximateNumberOfMessagesNotVisible": str(in_flight),
                "DelaySeconds": "0",
                "ReceiveMessageWaitTimeSeconds": "0",
                "MaximumMessageSize": "262144",
                "MessageRetentionPeriod": "345600",
            }
        }

    async def send_message_batch(self, params: Params) -> Params:
        q = self.queue(params)
        ok = []
        now_ms = int(time.time() * 1000)
        for entry in params.get("Entries") or []:
            body = str(entry["MessageBody"])
            msg = Message(str(uuid.UUID(int=next(self.ids))), body, _md5(body), now_ms)
            q.messages[msg.id] = msg
            q.ready.append(msg.id)
            ok.append({"Id": entry["Id"], "MessageId": msg.id, "MD5OfMessageBody": msg.md5})
        q.notify()
        return {"Successful": ok, "Failed": []}

    async def receive_message(self, params: Params) -> Params:
        q = self.queue(params)
        count = max(1, min(10, int(params.get("MaxNumberOfMessages", 1))))
        visibility = int(params.get("VisibilityTimeout", q.visibility_s))
        wait_s = float(params.get("WaitTimeSeconds", 0))
        deadline = time.monotonic() + wait_s
        while True:
            now = time.monotonic()
            taken = q.take(count, visibility, now)
            if taken or now >= deadline:
                return {"Messages": [self._render(m) for m in taken]} if taken else {}
            until = min(deadline, q.next_expiry() or deadline)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(q.changed.wait(), max(0.0, until - now))

    def _render(self, msg: Message) -> Params:
        return {
            "MessageId": msg.id,
            "ReceiptHandle": msg.handle,
            "MD5OfBody": msg.md5,
            "Body": msg.body,
            "Attributes": {
                "SenderId": SENDER_ID,
                "SentTimestamp": str(msg.sent_ms),
                "ApproximateReceiveCount": str(msg.receives),
                "ApproximateFirstReceiveTimestamp": str(msg.first_receive_ms),
            },
        }

    async def delete_message_batch(self, params: Params) -> Params:
        q = self.queue(params)
        return _batch(params, q.delete)

    async def change_message_visibility_batch(self, params: Params) -> Params:
        q = self.queue(params)
        now = time.monotonic()
        return _batch(
            params,
            lambda handle, entry: q.change_visibility(
                handle, int(entry.get("VisibilityTimeout", 0)), now
            ),
            with_entry=True,
        )

    async def change_message_visibility(self, params: Params) -> Params:
        q = self.queue(params)
        q.change_visibility(
            str(params["ReceiptHandle"]), int(params["VisibilityTimeout"]), time.monotonic()
        )
        return {}


def _batch(params: Params, apply: Callable[..., None], *, with_entry: bool = False) -> Params:
    ok: list[Params] = []
    failed: list[Params] = []
    for entry in params.get("Entries") or []:
        handle = str(entry["ReceiptHandle"])
        try:
            if with_entry:
                apply(handle, entry)
            else:
                apply(handle)
        except SqsError as exc:
            failed.append(
                {"Id": entry["Id"], "SenderFault": True, "Code": exc.code, "Message": str(exc)}
            )
        else:
            ok.append({"Id": entry["Id"]})
    return {"Successful": ok, "Failed": failed}


OPERATIONS = {
    "CreateQueue": FakeSqs.create_queue,
    "GetQueueAttributes": FakeSqs.get_queue_attributes,
    "SendMessageBatch": FakeSqs.send_message_batch,
    "ReceiveMessage": FakeSqs.receive_message,
    "DeleteMessageBatch": FakeSqs.delete_message_batch,
    "ChangeMessageVisibilityBatch": FakeSqs.change_message_visibility_batch,
    "ChangeMessageVisibility": FakeSqs.change_message_visibility,
}


def _reply(status: int, payload: Params) -> web.Response:
    from aiohttp import web

    return web.Response(
        status=status, body=json.dumps(payload).encode(), headers={"Content-Type": JSON_TYPE}
    )


async def serve(host: str, port: int, *, log_requests: int = 0) -> None:
    """Serve until cancelled; prints `listening <port>` on stdout once bound, and the first
    `log_requests` requests on stderr."""
    from aiohttp import web

    service: FakeSqs | None = None
    logged = 0

    async def handle(request: web.Request) -> web.StreamResponse:
        nonlocal logged
        assert service is not None
        raw = await request.read()
        target = request.headers.get("X-Amz-Target", "")
        if logged < log_requests:
            logged += 1
            print(
                f"request {request.method} {request.path} {dict(request.headers)} {raw!r}",
                file=sys.stderr,
                flush=True,
            )
        op = OPERATIONS.get(target.removeprefix("AmazonSQS."))
        if op is None:
            return _reply(400, {"__type": "com.amazonaws.sqs#InvalidAction", "message": target})
        try:
            return _reply(200, await op(service, json.loads(raw or b"{}")))
        except SqsError as exc:
            return _reply(
                exc.status, {"__type": f"com.amazonaws.sqs#{exc.code}", "message": str(exc)}
            )

    app = web.Application()
    app.router.add_post("/", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = int(runner.addresses[0][1])
    service = FakeSqs(f"http://{host}:{bound}")
    print(f"listening {bound}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def fake_sqs_server(*, log_requests: int = 0) -> Iterator[str]:
    """Start the endpoint in a subprocess on 127.0.0.1:<free port>; yields its URL."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(BENCH_DIR.parent), *sys.path]))
    cmd = [sys.executable, "-m", "bench.fake_sqs", "--log-requests", str(log_requests)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("listening "):
            raise BenchError(f"fake SQS endpoint did not start: {line!r}")
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        stop_process(proc)
        if proc.stdout is not None:
            proc.stdout.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fake_sqs", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log-requests", type=int, default=0, help="print the first N requests")
    args = parser.parse_args()
    from bench import run_async

    with contextlib.suppress(KeyboardInterrupt):
        run_async(serve(args.host, args.port, log_requests=args.log_requests))


if __name__ == "__main__":
    main()
