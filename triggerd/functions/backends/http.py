"""The `http` function backend: POST the event to a URL and read the function's answer.

Two kinds of endpoint are understood:

- a Lambda Invoke API path (`.../2015-03-31/functions/<name>/invocations`: the Runtime Interface
  Emulator, LocalStack, another triggerd), where the answer follows the Invoke API: 200 with the
  result, or an error object (`X-Amz-Function-Error`, or an `errorType`/`errorMessage` body,
  which is how RIE reports a failed handler);
- any plain HTTP function: 2xx = OK with the body as the result.

Mapping for both: 429 = THROTTLED (honouring `Retry-After`); 5xx, connection refused or reset
= INVOKE_ERROR (retried with backoff, not counted as an attempt); any other 4xx =
FUNCTION_ERROR with an error object naming the status; no answer within `timeout_s` = TIMEOUT
with Lambda's "Task timed out after N.NN seconds" message. A 307 or 308 on the same host
(http -> https included) is followed, the POST sent again with its body. Other redirects are
not (an HTTP client turns a redirected POST into a GET without the event, whose 200 would
count as the function's success; another host would get the event and the headers): such a
3xx answer is a FUNCTION_ERROR naming where it points.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import math
import re
import uuid
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit

import aiohttp
import orjson
from pydantic import Field, SecretStr, field_validator, model_validator

from triggerd.events.timestamps import iso_ms
from triggerd.functions.backends.slots import ConcurrencySlots
from triggerd.types import (
    MAX_ASYNC_PAYLOAD,
    MAX_SYNC_PAYLOAD,
    BackendContext,
    BackendPlugin,
    FunctionConfig,
    InvocationType,
    InvokeResult,
    Outcome,
)

__all__ = [
    "HttpBackend",
    "HttpFunctionConfig",
    "oversize_result",
    "parse_retry_after",
    "plugin",
    "timeout_result",
]

INVOKE_PATH = re.compile(r"/2015-03-31/functions/[^/]+/invocations/?$")
#: How much of a non-2xx answer's body goes into the error object.
ERROR_BODY_CHARS = 1024
#: Log tail cap, as Lambda's X-Amz-Log-Result.
LOG_TAIL_BYTES = 4096
_TIMED_OUT = "Task timed out after"
#: How many 307/308 redirects one invocation follows (aiohttp's default limit).
MAX_REDIRECTS = 10


class HttpFunctionConfig(FunctionConfig):
    """A function reached over HTTP: the Runtime Interface Emulator, a container, any URL."""

    backend: Literal["http"] = "http"
    url: str = Field(
        description="Where to POST events, e.g. "
        "http://localhost:8080/2015-03-31/functions/function/invocations (RIE)"
    )
    timeout_s: float = Field(
        3.0, gt=0, le=900, description="Seconds to wait for the answer (the function timeout)."
    )
    headers: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Extra request headers; values are treated as secrets (never logged).",
    )
    auth_token: SecretStr | None = Field(
        None, description="Sent as `Authorization: Bearer <token>`; never logged."
    )
    max_connections: int = Field(
        100, ge=1, le=10_000, description="Connection pool size to the endpoint."
    )
    reserved_concurrency: int | None = Field(
        None, ge=0, description="Invocations in flight at most (0 = always throttled)."
    )
    version: str = Field("$LATEST", description="Reported as the executed version.")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("url must be an http:// or https:// URL with a host")
        if parts.password:
            raise ValueError(
                "url must not hold a password: put credentials in auth_token or headers"
            )
        return value

    @property
    def invoke_api(self) -> bool:
        """The URL is a Lambda Invoke API endpoint (RIE, LocalStack, triggerd)."""
        return bool(INVOKE_PATH.search(urlsplit(self.url).path))

    @property
    def safe_url(self) -> str:
        """The URL without credentials or query string, for logs and error messages."""
        return _shown_url(self.url)

    @model_validator(mode="after")
    def _memory_is_not_ours(self) -> HttpFunctionConfig:
        if "memory_mb" in self.model_fields_set:
            raise ValueError(
                "memory_mb: this backend does not run the function; its memory is set by "
                "the endpoint that runs it"
            )
        return self


# --------------------------------------------------------------------------------------------
# Results shared with the aws backend


def timeout_result(rid: str, timeout_s: float, now: float, version: str) -> InvokeResult:
    message = f"{iso_ms(now)} {rid} {_TIMED_OUT} {timeout_s:.2f} seconds"
    body = orjson.dumps({"errorMessage": message})
    return InvokeResult(Outcome.TIMEOUT, body, rid, "Unhandled", version)


def oversize_result(
    rid: str, size: int, invocation_type: InvocationType, version: str
) -> InvokeResult | None:
    """A clear error, before sending, for a payload over Lambda's request limit."""
    limit = MAX_ASYNC_PAYLOAD if invocation_type == "Event" else MAX_SYNC_PAYLOAD
    if size <= limit:
        return None
    kind = "asynchronous" if invocation_type == "Event" else "synchronous"
    body = orjson.dumps(
        {
            "errorType": "RequestEntityTooLargeException",
            "errorMessage": f"Request payload of {size} bytes exceeds the {kind} invocation "
            f"limit of {limit} bytes",
        }
    )
    return InvokeResult(Outcome.FUNCTION_ERROR, body, rid, "Unhandled", version)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a Retry-After header (delta seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:  # "inf", "nan", 400 digits: no delay (an infinite one stalled the batch for ever)
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def decode_log_result(value: str | None) -> str:
    if not value:
        return ""
    try:
        return base64.b64decode(value).decode("utf-8", errors="replace")
    except ValueError:
        return ""


async def read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body, or its first `limit + 1` bytes when it is longer (then it is too large)."""
    if resp.content_length is not None and resp.content_length <= limit:
        return await resp.read()
    chunks: list[bytes] = []
    total = 0
    async for chunk in resp.content.iter_chunked(256 * 1024):
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            break
    return b"".join(chunks)[: limit + 1]


def _error_body(error_type: str, message: str, **extra: Any) -> bytes:
    return orjson.dumps({"errorType": error_type, "errorMessage": message, **extra})


def _lambda_error_body(body: bytes) -> bool:
    """RIE answers a failed handler with 200 and the error object as the body."""
    if not body.startswith(b"{"):
        return False
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return (
        isinstance(doc, dict)
        and "errorType" in doc
        and "errorMessage" in doc
        and "statusCode" not in doc
    )


# --------------------------------------------------------------------------------------------
# Backend


class HttpBackend:
    """Invokes a function by POSTing the event to `config.url` (see the module docstring)."""

    def __init__(self, config: HttpFunctionConfig, ctx: BackendContext) -> None:
        self.config = config
        self.ctx = ctx
        self._session: aiohttp.ClientSession | None = None
        self._slots = ConcurrencySlots(config.reserved_concurrency)
        self._headers = {k: v.get_secret_value() for k, v in config.headers.items()}
        if config.auth_token is not None:
            self._headers["Authorization"] = "Bearer " + config.auth_token.get_secret_value()
        self._headers.setdefault("Content-Type", "application/json")

    async def start(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self.config.max_connections)
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=None),
                skip_auto_headers=("User-Agent",),
            )

    async def stop(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def invoke(
        self,
        payload: bytes,
        *,
        request_id: str | None = None,
        invocation_type: InvocationType = "RequestResponse",
        client_context: str | None = None,
        want_log_tail: bool = False,
        trace_id: str | None = None,
    ) -> InvokeResult:
        rid = request_id or str(uuid.uuid4())
        cfg = self.config
        too_large = oversize_result(rid, len(payload), "RequestResponse", cfg.version)
        if too_large is not None:
            return too_large
        if self._session is None:
            return InvokeResult(Outcome.INVOKE_ERROR, b"", rid, retry_after_s=1.0)
        headers = {"X-Request-Id": rid}
        if trace_id is not None:
            headers["X-Amzn-Trace-Id"] = trace_id  # the trace continues at the endpoint
        if cfg.invoke_api:
            if want_log_tail:
                headers["X-Amz-Log-Type"] = "Tail"
            if client_context is not None and invocation_type == "RequestResponse":
                headers["X-Amz-Client-Context"] = client_context
        return await self._slots.run(lambda: self._post(payload, rid, headers), rid, cfg.timeout_s)

    async def _post(self, payload: bytes, rid: str, headers: dict[str, str]) -> InvokeResult:
        assert self._session is not None
        cfg = self.config
        started = self.ctx.clock.monotonic()
        try:
            async with asyncio.timeout(cfg.timeout_s):
                url = cfg.url
                for hop in range(MAX_REDIRECTS + 1):
                    async with self._session.post(
                        url, data=payload, headers=headers, allow_redirects=False
                    ) as resp:
                        target = _resent_post(url, resp) if hop < MAX_REDIRECTS else None
                        if target is None:
                            body = await read_capped(resp, MAX_SYNC_PAYLOAD)
                            result = self._judge(rid, resp.status, resp.headers, body, url)
                            break
                    url = target
        except TimeoutError:
            self._log_failure("backend.timeout", rid, "timeout")
            return timeout_result(rid, cfg.timeout_s, self.ctx.clock.time(), cfg.version)
        except aiohttp.ClientError as exc:
            self._log_failure("backend.unreachable", rid, type(exc).__name__)
            return InvokeResult(Outcome.INVOKE_ERROR, b"", rid, retry_after_s=None)
        result.duration_ms = (self.ctx.clock.monotonic() - started) * 1000
        return result

    def _judge(self, rid: str, status: int, headers: Any, body: bytes, url: str) -> InvokeResult:
        """The result of the answer to a POST to `url` (`config.url`, or where a 307/308
        answer sent it)."""
        cfg = self.config
        version = headers.get("X-Amz-Executed-Version") or cfg.version
        log_tail = decode_log_result(headers.get("X-Amz-Log-Result"))
        if 200 <= status < 300:
            if len(body) > MAX_SYNC_PAYLOAD:
                error = _error_body(
                    "Function.ResponseSizeTooLarge",
                    f"Response payload size exceeded maximum allowed payload size "
                    f"({MAX_SYNC_PAYLOAD} bytes).",
                )
                return InvokeResult(Outcome.FUNCTION_ERROR, error, rid, "Unhandled", version)
            function_error = headers.get("X-Amz-Function-Error")
            if function_error is None and cfg.invoke_api:
                if _lambda_error_body(body):
                    function_error = "Unhandled"
                elif body.lstrip(b'"').startswith(_TIMED_OUT.encode()):
                    return timeout_result(rid, cfg.timeout_s, self.ctx.clock.time(), version)
            if function_error is not None:
                return InvokeResult(
                    Outcome.FUNCTION_ERROR, body, rid, function_error, version, log_tail=log_tail
                )
            return InvokeResult(Outcome.OK, body, rid, None, version, log_tail=log_tail)
        if status == 429:
            retry = parse_retry_after(headers.get("Retry-After"), self.ctx.clock.time())
            return InvokeResult(Outcome.THROTTLED, body, rid, retry_after_s=retry)
        if status >= 500:
            self._log_failure("backend.server_error", rid, str(status))
            return InvokeResult(Outcome.INVOKE_ERROR, body, rid)
        redirect = 300 <= status < 400
        # A redirect's body is the server's page repeating its Location, query string and all
        # (a signed URL's signature, say): not kept.
        text = "" if redirect else body[:ERROR_BODY_CHARS].decode("utf-8", errors="replace")
        message = f"The function's endpoint answered HTTP {status}"
        location = headers.get("Location") if redirect else None
        if location:  # (an empty one names nothing: not the url itself)
            # (without its credentials or query string, which may carry a token)
            shown = _shown_url(location, base=url)  # relative to the URL that answered
            message += f", a redirect to {shown} (not followed: set url to where it points)"
        error = _error_body("Function.HttpError", message, statusCode=status, body=text)
        return InvokeResult(Outcome.FUNCTION_ERROR, error, rid, "Unhandled", version)

    def _log_failure(self, event: str, rid: str, reason: str) -> None:
        self.ctx.log.warning(
            event,
            extra={
                "function": self.ctx.function,
                "request_id": rid,
                "url": self.config.safe_url,
                "reason": reason,
            },
        )


def _create(config: Any, ctx: BackendContext) -> HttpBackend:
    assert isinstance(config, HttpFunctionConfig)
    return HttpBackend(config, ctx)


plugin = BackendPlugin(config_model=HttpFunctionConfig, create=_create)


def _shown_url(url: str, base: str = "") -> str:
    """`url` (resolved against `base` when relative) without credentials or query string, for
    logs and error messages."""
    try:
        parts = urlsplit(urljoin(base, url))
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # a malformed URL (a port out of range, a lone "["): none of it is shown
        return "(a malformed URL)"
    if ":" in host:  # an IPv6 address, whose brackets hostname takes off
        host = f"[{host}]"
    if not parts.netloc:  # no authority (mailto:x): not "mailto://x"
        return f"{parts.scheme}:{parts.path}"
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _resent_post(url: str, resp: aiohttp.ClientResponse) -> str | None:
    """Where a 307/308 answer sends the POST again, with its body, or None: other redirects
    turn it into a GET without the event, and one to another host (it would get the event
    and the endpoint's headers, a bearer token among them) or from https to http is not
    followed either, but judged as a function error naming where it points."""
    location = resp.headers.get("Location")
    if resp.status not in (307, 308) or not location:
        return None
    try:
        target = urljoin(url, location)
        was, now = urlsplit(url), urlsplit(target)
        same_host = now.hostname == was.hostname
    except ValueError:
        return None
    if now.scheme not in ("http", "https") or not same_host:
        return None
    if was.scheme == "https" and now.scheme != "https":
        return None
    return target
