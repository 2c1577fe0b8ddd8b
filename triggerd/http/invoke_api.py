"""Lambda's Invoke API on the daemon's listen address, for the configured functions.

`POST /2015-03-31/functions/{FunctionName}/invocations` with the function's name, full ARN or
partial ARN (`123456789012:function:name`), optionally qualified (`:$LATEST`, `?Qualifier=`):

- `X-Amz-Invocation-Type: RequestResponse` (default): 200 with the function's answer,
  `X-Amz-Executed-Version`, `X-Amz-Function-Error: Unhandled` when it failed, and with
  `X-Amz-Log-Type: Tail` the last 4 KB of its log, base64, in `X-Amz-Log-Result`;
- `Event`: 202 once the event is on the durable queue in the state store; the function's
  `InvokeQueue` then invokes it with Lambda's asynchronous rules (2 retries ~1 and ~2 minutes
  apart, throttles backed off without counting, 6 h maximum event age);
- `DryRun`: 204.

Errors have AWS's shape, so SDKs raise the named exception: 404 ResourceNotFoundException,
413 RequestEntityTooLargeException (6 MB synchronous, 1 MB Event), 400
InvalidRequestContentException (not JSON), 429 TooManyRequestsException (throttled).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import os
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import orjson
from aiohttp import web
from pydantic import Field

from triggerd.config.model import TriggerBase
from triggerd.delivery.asyncpath import AsyncTrigger
from triggerd.delivery.pipeline import TriggerRuntime
from triggerd.events.ids import random_uuid
from triggerd.events.tracing import trace_id_for
from triggerd.http.body import BodyTooLarge, read_body
from triggerd.http.host import HttpHost, InvokeTarget
from triggerd.http.queues import queue_name
from triggerd.http.refusals import mark_refused
from triggerd.http.routes import ROUTE_KEY
from triggerd.http.sigv4 import AuthError, SigV4Verifier, payload_sha256, signed_request
from triggerd.state.base import NewEvent, StateStore
from triggerd.state.sqlite import StateStoreError, StateStoreUnavailableError
from triggerd.telemetry.metrics import Metrics
from triggerd.types import (
    MAX_ASYNC_PAYLOAD,
    MAX_SYNC_PAYLOAD,
    Backend,
    BaseSource,
    Clock,
    Destination,
    FunctionConfig,
    HttpHandler,
    InvokeResult,
    Outcome,
    Record,
    SourceConfig,
)

__all__ = ["INVOKE_ROUTE", "InvokeQueue", "invoke_handler", "parse_function_name", "queue_name"]

INVOKE_ROUTE = "/2015-03-31/functions/{function}/invocations"
#: Lambda's cap on the X-Amz-Client-Context header.
MAX_CLIENT_CONTEXT = 3583
LOG_TAIL_BYTES = 4096
#: A version or alias name, as Lambda's API constrains `Qualifier`.
_QUALIFIER = re.compile(r"^[a-zA-Z0-9$_-]{1,128}$")
#: Payloads larger than this are parsed off the event loop.
_PARSE_IN_THREAD = 256 * 1024
#: How often an idle queue looks for retries that became due (new events wake it at once).
QUEUE_POLL_S = 2.0
DEFAULT_QUEUE_CONCURRENCY = 4

log = logging.getLogger("triggerd.invoke_api")


# --------------------------------------------------------------------------------------------
# The per-function queue of Event invocations


class InvokeApiSource(SourceConfig):
    """The synthetic source of an Invoke API queue: events arrive through `enqueue` only."""

    type: Literal["invoke-api"] = "invoke-api"
    invocation: ClassVar[Literal["sync", "async"]] = "async"


class InvokeQueueSettings(TriggerBase):
    """Asynchronous invocation settings of a function's Invoke API queue (Lambda's defaults)."""

    source: InvokeApiSource = Field(default_factory=InvokeApiSource)


class _NoRecords(BaseSource):
    """A source that never yields: the Invoke API puts events on the queue itself."""

    def __init__(self) -> None:
        self.closed = asyncio.Event()

    async def receive(self, max_records: int, timeout_s: float) -> list[Record]:
        try:
            async with asyncio.timeout(timeout_s):
                await self.closed.wait()
        except TimeoutError:
            pass
        return []

    async def ack(self, records: Sequence[Record]) -> None:
        return None


class InvokeQueue:
    """Invokes one function's Event invocations from the durable queue (AsyncTrigger's loop)."""

    def __init__(self, trigger: AsyncTrigger, source: _NoRecords) -> None:
        self.trigger = trigger
        self.rt = trigger.rt
        self._source = source

    @classmethod
    def build(
        cls,
        *,
        function: str,
        function_arn: str,
        config: FunctionConfig,
        backend: Backend,
        state: StateStore,
        clock: Clock,
        metrics: Metrics,
        settings: InvokeQueueSettings | None = None,
        lease_s: float | None = None,
        retry_attempts: int | None = None,
        maximum_event_age_s: float | None = None,
        destination: Destination | None = None,
        destination_name: str = "none",
        include_payload: bool = False,
        forced: asyncio.Event | None = None,
    ) -> InvokeQueue:
        """`lease_s`: how long a claim lasts unless extended ([daemon] lease_timeout_s);
        default twice the function's timeout plus 60 s. `retry_attempts`,
        `maximum_event_age_s` and `destination`: the function's `async_invocation` settings
        (Lambda's defaults, and no destination, without them)."""
        name = queue_name(function)
        qlog = logging.getLogger("triggerd.trigger")
        reserved = config.reserved_concurrency
        concurrency = reserved if reserved else DEFAULT_QUEUE_CONCURRENCY
        limits: dict[str, Any] = {}
        if retry_attempts is not None:
            limits["maximum_retry_attempts"] = retry_attempts
        if maximum_event_age_s is not None:
            limits["maximum_event_age_s"] = maximum_event_age_s
        settings = settings or InvokeQueueSettings(
            function=function, maximum_concurrency=min(concurrency, 1000), **limits
        )
        source = _NoRecords()
        rt = TriggerRuntime.assemble(
            name=name,
            config=settings,
            function=function,
            function_arn=function_arn,
            source=source,
            backend=backend,
            state=state,
            clock=clock,
            metrics=metrics,
            log=qlog,
            poll_timeout_s=QUEUE_POLL_S,
            destination=destination,
            destination_name=destination_name,
            include_payload=include_payload,
            forced=forced,
        )
        lease_s = lease_s or 2 * config.timeout_s + 60
        trigger = AsyncTrigger(
            rt, state, lease_s=lease_s, throttles_dead_letter=config.reserved_concurrency == 0
        )
        return cls(trigger, source)

    @property
    def name(self) -> str:
        return self.rt.name

    def stop(self) -> None:
        self._source.closed.set()
        self.trigger.stop()

    async def run(self) -> None:
        # The on-failure destination lives as long as the queue runs (a trigger's is started
        # with the trigger): records given up meanwhile are written to it.
        await self.rt.on_failure.start()
        try:
            await self.trigger.run()
        finally:
            await self.rt.on_failure.stop()

    async def enqueue(self, payload: bytes, request_id: str, trace_id: str | None = None) -> None:
        """Durably queue an event; returns once it is stored."""
        rt = self.rt
        now = rt.clock.time()
        event = NewEvent(
            trigger=rt.name,
            function=rt.function,
            payload=payload,
            request_id=request_id,
            enqueued_at=now,
            available_at=now,
            trace_id=trace_id,
        )
        # Not shielded: the store's group commit takes a write whose caller was cancelled
        # along all the same (a task per call to shield it cost more than the enqueue).
        await self.trigger.state.enqueue([event])
        self.trigger.wake()

    def wake(self) -> None:
        """Look for new events at once (committed by another writer: an event bus)."""
        self.trigger.wake()

    async def discard_throttled(self, payload: bytes, request_id: str) -> None:
        """Reserved concurrency 0: Lambda sends the event to the on-failure path, no retries."""
        body = orjson.dumps(
            {
                "Reason": "ReservedFunctionConcurrentInvocationLimitExceeded",
                "Type": "User",
                "message": "Rate Exceeded.",
            }
        )
        result = InvokeResult(Outcome.THROTTLED, body, request_id)
        await self.trigger.give_up(request_id, payload, "RetriesExhausted", result, 0)


# --------------------------------------------------------------------------------------------
# Requests


class ApiError(Exception):
    """An error answer in AWS's shape (`__type`, `message`, `x-amzn-ErrorType`)."""

    def __init__(
        self,
        status: int,
        error_type: str,
        message: str,
        *,
        kind: str = "User",
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.kind = kind
        self.extra = extra or {}
        self.headers = headers or {}

    def response(self, request_id: str) -> web.Response:
        body = {"Type": self.kind, "message": self.message, **self.extra}
        body["__type"] = self.error_type
        headers = {"x-amzn-ErrorType": self.error_type, "x-amzn-RequestId": request_id}
        headers.update(self.headers)
        return web.Response(
            status=self.status,
            body=orjson.dumps(body),
            content_type="application/json",
            headers=headers,
        )


@dataclass(frozen=True, slots=True)
class FunctionRef:
    name: str
    qualifier: str | None = None
    region: str | None = None
    account: str | None = None


def parse_function_name(raw: str) -> FunctionRef | None:
    """Name, `name:qualifier`, partial ARN `acct:function:name[:q]` or full ARN; None when
    it is none of these."""
    parts = raw.split(":")
    region = account = None
    if parts[0] == "arn":
        if len(parts) not in (7, 8) or parts[2] != "lambda" or parts[5] != "function":
            return None
        region, account, rest = parts[3], parts[4], parts[6:]
    elif len(parts) >= 3 and parts[1] == "function":
        if len(parts) > 4:
            return None
        account, rest = parts[0], parts[2:]
    else:
        if len(parts) > 2:
            return None
        rest = parts
    name = rest[0]
    qualifier = rest[1] if len(rest) > 1 else None
    if not name or qualifier == "":
        return None
    return FunctionRef(name, qualifier, region, account)


class _Invoker:
    """The Invoke API handler, bound to its host's functions."""

    def __init__(self, host: HttpHost) -> None:
        self.host = host
        d = host.settings
        self.auth = (
            SigV4Verifier(d.access_keys, region=d.region, service="lambda", account_id=d.account_id)
            if d.access_keys
            else None
        )
        #: Request ids (unique, not secret; an Event's id is its key on the durable queue).
        self._ids = random.Random(os.urandom(32))

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        rid = random_uuid(self._ids)
        try:
            return await self._handle(request, rid)
        except AuthError as exc:
            # Counted and logged (rate-limited, with the remote address) by the dispatcher.
            mark_refused(request, exc.reason)
            return ApiError(exc.status, exc.code, exc.message).response(rid)
        except ApiError as exc:
            log.debug(
                "invoke_api.rejected",
                extra={"request_id": rid, "status": exc.status, "error_type": exc.error_type},
            )
            return exc.response(rid)

    async def _handle(self, request: web.BaseRequest, rid: str) -> web.StreamResponse:
        # With access keys, the headers are checked before the body is read, the signature
        # once it is (before any parameter: a wrongly signed request is refused as such
        # whatever else is wrong with it), and the key's policy before anything about the
        # function is revealed.
        signed = signed_request(request) if self.auth is not None else None
        credential = self.auth.check_headers(signed) if self.auth and signed else None
        itype = request.headers.get("X-Amz-Invocation-Type", "RequestResponse")
        limit = MAX_ASYNC_PAYLOAD if itype == "Event" else MAX_SYNC_PAYLOAD
        payload = await read_payload(request, limit, itype)
        principal = None
        if self.auth is not None and signed is not None:
            digest = await payload_sha256(payload)
            principal = self.auth.verify_hashed(signed, digest, credential)
        if itype not in ("RequestResponse", "Event", "DryRun"):
            raise ApiError(
                400,
                "InvalidParameterValueException",
                f"Invalid invocation type {itype[:40]!r}: RequestResponse, Event or DryRun",
            )
        ref = self._parse(request[ROUTE_KEY].params["function"])
        qualifier = self._qualifier(ref, request.query.get("Qualifier"))
        if self.auth is not None and principal is not None:
            # The resource is the function as called, as IAM sees it: the qualified ARN for
            # a qualified call (from the name or ?Qualifier=), so a policy on `orders` allows
            # unqualified calls only and `orders:*` qualified ones, as in AWS.
            short = f"{ref.name}:{qualifier}" if qualifier else ref.name
            self.auth.authorize(principal, "lambda:InvokeFunction", self._arn(short), short)
        fn = self._resolve(ref, qualifier)
        if itype == "DryRun":
            return web.Response(status=204, headers={"x-amzn-RequestId": rid})
        payload = await json_payload(payload)
        # A caller's trace continues in the function; a malformed header starts a new one.
        trace_id = trace_id_for(
            request.headers.get("X-Amzn-Trace-Id"),
            time.time(),
            request.headers.get("traceparent"),
        )
        if itype == "Event":
            return await self._event(fn, payload, rid, trace_id)
        return await self._request_response(request, fn, payload, rid, trace_id)

    def _arn(self, name: str) -> str:
        """The ARN of `name` (`name:qualifier` gives the qualified ARN)."""
        d = self.host.settings
        return f"arn:aws:lambda:{d.region}:{d.account_id}:function:{name}"

    def _not_found(self, name: str, qualifier: str | None) -> ApiError:
        arn = self._arn(name)
        if qualifier:
            arn += ":" + qualifier
        return ApiError(404, "ResourceNotFoundException", f"Function not found: {arn}")

    @staticmethod
    def _parse(raw: str) -> FunctionRef:
        ref = parse_function_name(raw)
        if ref is None:
            raise ApiError(
                400,
                "InvalidParameterValueException",
                f"Invalid function name or ARN: {raw[:200]!r}",
            )
        return ref

    @staticmethod
    def _qualifier(ref: FunctionRef, query_qualifier: str | None) -> str | None:
        """The call's qualifier, from the name or `?Qualifier=` (which must then agree)."""
        qualifier = ref.qualifier
        if query_qualifier:
            if qualifier and qualifier != query_qualifier:
                raise ApiError(
                    400,
                    "InvalidParameterValueException",
                    "The derived qualifier from the function name does not match the "
                    "specified qualifier.",
                )
            qualifier = query_qualifier
        if qualifier is not None and not _QUALIFIER.match(qualifier):
            raise ApiError(
                400,
                "ValidationException",
                "1 validation error detected: Value at 'qualifier' failed to satisfy "
                "constraint: Member must satisfy regular expression pattern: "
                "(|[a-zA-Z0-9$_-]+) and have length less than or equal to 128",
            )
        return qualifier

    def _resolve(self, ref: FunctionRef, qualifier: str | None) -> InvokeTarget:
        d = self.host.settings
        fn = self.host.functions.get(ref.name)
        if (
            fn is None
            or (ref.region is not None and ref.region != d.region)
            or (ref.account is not None and ref.account != d.account_id)
        ):
            raise self._not_found(ref.name, qualifier)
        version = str(getattr(fn.config, "version", "$LATEST"))
        if qualifier not in (None, "$LATEST", version):
            raise self._not_found(ref.name, qualifier)
        return fn

    async def _event(
        self, fn: InvokeTarget, payload: bytes, rid: str, trace_id: str
    ) -> web.Response:
        queue = self.host.invoke_queues.get(fn.name)
        if queue is None:
            raise ApiError(500, "ServiceException", "The asynchronous queue is not running")
        try:
            if fn.config.reserved_concurrency == 0:
                await queue.discard_throttled(payload, rid)
            else:
                await queue.enqueue(payload, rid, trace_id)
        except StateStoreError as exc:
            # Not queued (a full disk, a read-only store): AWS's answer when Lambda's own
            # queue fails; SDKs retry a ServiceException.
            log.error(
                "invoke_api.not_queued",
                extra={"function": fn.name, "request_id": rid, "error": str(exc)},
            )
            # 503 when the store's server is unreachable (a PostgreSQL outage): try later.
            status = 503 if isinstance(exc, StateStoreUnavailableError) else 500
            raise ApiError(
                status, "ServiceException", "The event could not be queued", kind="Service"
            ) from None
        if log.isEnabledFor(logging.DEBUG):  # the extra dict costs more than the check
            log.debug(
                "invoke_api.event_queued",
                extra={"function": fn.name, "request_id": rid, "trace_id": trace_id},
            )
        return web.Response(status=202, headers={"x-amzn-RequestId": rid})

    async def _request_response(
        self, request: web.BaseRequest, fn: InvokeTarget, payload: bytes, rid: str, trace_id: str
    ) -> web.Response:
        client_context = request.headers.get("X-Amz-Client-Context")
        if client_context is not None and len(client_context) > MAX_CLIENT_CONTEXT:
            raise ApiError(
                400,
                "InvalidParameterValueException",
                f"Client context must be at most {MAX_CLIENT_CONTEXT} bytes",
            )
        tail = request.headers.get("X-Amz-Log-Type", "None") == "Tail"
        result = await fn.backend.invoke(
            payload,
            request_id=rid,
            invocation_type="RequestResponse",
            client_context=client_context,
            want_log_tail=tail,
            trace_id=trace_id,
        )
        log.debug(
            "invoke_api.invoked",
            extra={
                "function": fn.name,
                "request_id": rid,
                "trace_id": trace_id,
                "outcome": result.outcome.value,
            },
        )
        if result.outcome is Outcome.THROTTLED:
            raise throttled_error(result)
        if result.outcome is Outcome.INVOKE_ERROR:
            raise ApiError(
                500, "ServiceException", "The function could not be invoked", kind="Service"
            )
        headers = {"x-amzn-RequestId": rid, "X-Amz-Executed-Version": result.executed_version}
        if result.failed:
            headers["X-Amz-Function-Error"] = result.function_error or "Unhandled"
        if tail:
            raw = result.log_tail.encode("utf-8")[-LOG_TAIL_BYTES:]
            headers["X-Amz-Log-Result"] = base64.b64encode(raw).decode("ascii")
        return web.Response(
            status=200, body=result.payload, content_type="application/json", headers=headers
        )


def throttled_error(result: InvokeResult) -> ApiError:
    reason = "ConcurrentInvocationLimitExceeded"
    try:
        doc = orjson.loads(result.payload) if result.payload else {}
    except orjson.JSONDecodeError:
        doc = {}
    if isinstance(doc, dict) and isinstance(doc.get("Reason"), str):
        reason = doc["Reason"]
    headers = {}
    if result.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, math.ceil(result.retry_after_s)))
    return ApiError(
        429,
        "TooManyRequestsException",
        "Rate Exceeded.",
        extra={"Reason": reason},
        headers=headers,
    )


async def read_payload(request: web.BaseRequest, limit: int, itype: str) -> bytes:
    """The request body, capped at Lambda's limit."""
    try:
        return await read_body(request, limit)
    except BodyTooLarge:
        raise ApiError(
            413,
            "RequestEntityTooLargeException",
            f"Request must be smaller than {limit} bytes for the "
            f"{'InvokeAsync' if itype == 'Event' else 'InvokeFunction'} operation",
        ) from None


async def json_payload(payload: bytes) -> bytes:
    """The payload checked to be JSON (empty means `{}`)."""
    if not payload.strip():
        return b"{}"
    try:
        if len(payload) > _PARSE_IN_THREAD:
            await asyncio.to_thread(orjson.loads, payload)
        else:
            orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise ApiError(
            400,
            "InvalidRequestContentException",
            f"Could not parse request body into json: {exc}",
        ) from None
    return payload


def invoke_handler(host: HttpHost) -> HttpHandler:
    """The aiohttp handler of INVOKE_ROUTE for the host's functions."""
    invoker = _Invoker(host)

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        return await invoker(request)

    return handle
