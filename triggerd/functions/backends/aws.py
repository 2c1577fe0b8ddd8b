"""The `aws` function backend: Lambda's Invoke API through aiobotocore.

Works against AWS Lambda itself and anything that speaks its Invoke API (LocalStack, another
triggerd's listen address). Credentials come from the standard chain (environment, shared
files, `profile`, instance or container roles); none are kept in triggerd's config.

Outcomes: `X-Amz-Function-Error` = FUNCTION_ERROR (TIMEOUT when Lambda says the task timed
out); TooManyRequestsException / 429 = THROTTLED (back off, not an attempt); 5xx,
ServiceException, connection failures, missing credentials, an unknown function = INVOKE_ERROR
(back off and retry, nothing is dead-lettered for them); other 4xx (the request is bad, e.g.
not JSON) = FUNCTION_ERROR naming the AWS error. Payloads over 6 MB (1 MB for Event) fail
before sending.
"""

from __future__ import annotations

import asyncio
import base64
import math
import uuid
from contextlib import AsyncExitStack
from typing import Any, Literal

import orjson
from pydantic import Field, field_validator, model_validator

from triggerd.config.aws import error_code, error_message, open_client
from triggerd.functions.backends.http import decode_log_result, oversize_result, timeout_result
from triggerd.functions.backends.slots import ConcurrencySlots
from triggerd.types import (
    BackendContext,
    BackendPlugin,
    FunctionConfig,
    InvocationType,
    InvokeResult,
    Outcome,
)

__all__ = ["AwsBackend", "AwsFunctionConfig", "plugin"]

#: Beyond the function's timeout, how long to wait for Lambda's answer (the init phase, up
#: to 10 s, is not counted against the function's timeout, and there is the network).
RESPONSE_MARGIN_S = 15.0
THROTTLE_CODES = frozenset(
    {"TooManyRequestsException", "ThrottlingException", "Throttling", "RequestLimitExceeded"}
)
#: 4xx errors that say "cannot invoke right now / here", not "this event is bad": retried.
UNAVAILABLE_CODES = frozenset(
    {
        "ResourceNotFoundException",
        "ResourceConflictException",
        "ResourceNotReadyException",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "ExpiredTokenException",
        "SnapStartNotReadyException",
    }
)
_TIMED_OUT = b"Task timed out after"


class AwsFunctionConfig(FunctionConfig):
    """A function in AWS Lambda (or anything speaking its Invoke API)."""

    backend: Literal["aws"] = "aws"
    function: str = Field(
        min_length=1,
        max_length=170,
        description="Function name, partial ARN (123456789012:function:name) or full ARN.",
    )
    qualifier: str | None = Field(None, description="Version or alias to invoke.")
    region: str | None = Field(None, description="AWS region (default: the daemon's region).")
    endpoint_url: str | None = Field(
        None, description="Invoke API endpoint (default: AWS's), e.g. http://localhost:4566."
    )
    profile: str | None = Field(None, description="Shared-credentials profile to use.")
    invocation_type: Literal["RequestResponse", "Event"] = Field(
        "RequestResponse",
        description="For events of asynchronous sources: RequestResponse (triggerd retries "
        "and dead-letters) or Event (handed to Lambda's own asynchronous queue). Poll "
        "sources always invoke RequestResponse.",
    )
    timeout_s: float = Field(
        3.0, ge=1, le=900, description="The function's timeout in Lambda, seconds."
    )
    max_connections: int = Field(10, ge=1, le=1000, description="HTTP connection pool size.")
    reserved_concurrency: int | None = Field(
        None, ge=0, description="Invocations in flight at most from triggerd (0 = throttled)."
    )

    @field_validator("function")
    @classmethod
    def _function(cls, value: str) -> str:
        if any(c.isspace() for c in value) or "/" in value:
            raise ValueError("function must be a Lambda function name or ARN")
        return value

    @model_validator(mode="after")
    def _memory_is_not_ours(self) -> AwsFunctionConfig:
        if "memory_mb" in self.model_fields_set:
            raise ValueError(
                "memory_mb: this backend does not run the function; its memory is set by "
                "the Lambda function's configuration"
            )
        return self


def _error_payload(code: str, message: str) -> bytes:
    return orjson.dumps({"errorType": code, "errorMessage": message})


class AwsBackend:
    """Invokes a Lambda function through aiobotocore (see the module docstring)."""

    def __init__(
        self,
        config: AwsFunctionConfig,
        ctx: BackendContext,
        *,
        response_margin_s: float = RESPONSE_MARGIN_S,
    ) -> None:
        self.config = config
        self.ctx = ctx
        self.region = config.region or ctx.region
        self.response_margin_s = response_margin_s
        self._client: Any = None
        self._stack: AsyncExitStack | None = None
        self._slots = ConcurrencySlots(config.reserved_concurrency)

    async def start(self) -> None:
        if self._client is not None:
            return
        cfg = self.config
        stack = AsyncExitStack()
        self._client = await open_client(
            stack,
            "lambda",
            extra="aws",
            needed_by="backend type 'aws'",
            region=self.region,
            endpoint_url=cfg.endpoint_url,
            profile=cfg.profile,
            retries={"total_max_attempts": 1},
            connect_timeout=10,
            read_timeout=cfg.timeout_s + self.response_margin_s,
            max_pool_connections=cfg.max_connections,
        )
        self._stack = stack

    async def stop(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

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
        # `trace_id` is not passed on: Lambda's Invoke API has no trace parameter (Lambda
        # starts the function's trace itself), so the function sees a trace id of AWS's.
        del trace_id
        rid = request_id or str(uuid.uuid4())
        cfg = self.config
        # Poll sources need the function's answer; only async events may go to Lambda's queue.
        event = invocation_type == "Event" and cfg.invocation_type == "Event"
        wire: InvocationType = "Event" if event else "RequestResponse"
        version = cfg.qualifier or "$LATEST"
        too_large = oversize_result(rid, len(payload), wire, version)
        if too_large is not None:
            return too_large
        if self._client is None:
            return InvokeResult(Outcome.INVOKE_ERROR, b"", rid, retry_after_s=1.0)
        kwargs: dict[str, Any] = {
            "FunctionName": cfg.function,
            "InvocationType": wire,
            "Payload": payload,
        }
        if cfg.qualifier:
            kwargs["Qualifier"] = cfg.qualifier
        if wire == "RequestResponse":
            if want_log_tail:
                kwargs["LogType"] = "Tail"
            if client_context is not None:
                kwargs["ClientContext"] = _base64_client_context(client_context)
        return await self._slots.run(lambda: self._call(kwargs, rid, version), rid, cfg.timeout_s)

    async def _call(self, kwargs: dict[str, Any], rid: str, version: str) -> InvokeResult:
        from botocore.exceptions import BotoCoreError, ClientError, ReadTimeoutError

        started = self.ctx.clock.monotonic()
        try:
            async with asyncio.timeout(self.config.timeout_s + self.response_margin_s + 5):
                resp = await self._client.invoke(**kwargs)
                body: bytes = await resp["Payload"].read()
        except ClientError as exc:
            return self._client_error(exc, rid, version)
        except (TimeoutError, ReadTimeoutError):
            self._log_failure(rid, "ReadTimeout", "no answer in time")
            return timeout_result(rid, self.config.timeout_s, self.ctx.clock.time(), version)
        except (BotoCoreError, OSError) as exc:
            self._log_failure(rid, type(exc).__name__, "cannot reach Lambda")
            return InvokeResult(Outcome.INVOKE_ERROR, b"", rid)
        duration_ms = (self.ctx.clock.monotonic() - started) * 1000
        executed = str(resp.get("ExecutedVersion") or version)
        log_tail = decode_log_result(resp.get("LogResult"))
        function_error = resp.get("FunctionError")
        if function_error:
            outcome = Outcome.TIMEOUT if _TIMED_OUT in body[:2048] else Outcome.FUNCTION_ERROR
            return InvokeResult(
                outcome, body, rid, str(function_error), executed, duration_ms, log_tail
            )
        return InvokeResult(Outcome.OK, body, rid, None, executed, duration_ms, log_tail)

    def _client_error(self, exc: Any, rid: str, version: str) -> InvokeResult:
        meta = exc.response.get("ResponseMetadata", {})
        code = error_code(exc) or "Unknown"
        message = error_message(exc)
        status = int(meta.get("HTTPStatusCode") or 0)
        if status == 429 or code in THROTTLE_CODES:
            headers = meta.get("HTTPHeaders") or {}
            retry = _float(headers.get("retry-after"))
            body = _error_payload(code, message)
            return InvokeResult(Outcome.THROTTLED, body, rid, retry_after_s=retry or 1.0)
        if status >= 500 or code in UNAVAILABLE_CODES or status in (401, 403):
            self._log_failure(rid, code, message)
            return InvokeResult(Outcome.INVOKE_ERROR, _error_payload(code, message), rid)
        return InvokeResult(
            Outcome.FUNCTION_ERROR, _error_payload(code, message), rid, "Unhandled", version
        )

    def _log_failure(self, rid: str, code: str, message: str) -> None:
        self.ctx.log.warning(
            "backend.invoke_failed",
            extra={
                "function": self.ctx.function,
                "request_id": rid,
                "target": self.config.function,
                "error_type": code,
                "error": message[:500],
            },
        )


def _base64_client_context(value: str) -> str:
    """The Invoke API wants the client context base64-encoded; JSON is encoded here."""
    if value.lstrip().startswith("{"):
        return base64.b64encode(value.encode()).decode("ascii")
    return value


def _float(value: Any) -> float | None:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, seconds) if math.isfinite(seconds) else None  # not inf: a stall for ever


def _create(config: Any, ctx: BackendContext) -> AwsBackend:
    assert isinstance(config, AwsFunctionConfig)
    return AwsBackend(config, ctx)


plugin = BackendPlugin(config_model=AwsFunctionConfig, create=_create)
