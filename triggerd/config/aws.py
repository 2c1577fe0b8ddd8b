"""Config pieces for connectors of AWS services (or services speaking their APIs), and the
one place that opens their aiobotocore clients and reads a ClientError's code."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AsyncExitStack
from typing import Any

from pydantic import Field, SecretStr, model_validator

from triggerd.config.plugins import import_extra
from triggerd.types import Model


class AwsCredentials(Model):
    """Static AWS credentials for a connector's config model to mix in; without them the
    standard chain signs (environment, shared config/credentials files, container and
    instance roles)."""

    aws_access_key_id: SecretStr | None = Field(
        default=None, description="Static credentials (default: the standard AWS chain)."
    )
    aws_secret_access_key: SecretStr | None = None
    aws_session_token: SecretStr | None = None

    @model_validator(mode="after")
    def _key_pair(self) -> AwsCredentials:
        if (self.aws_access_key_id is None) != (self.aws_secret_access_key is None):
            raise ValueError("aws_access_key_id and aws_secret_access_key go together")
        return self

    def client_credentials(self) -> dict[str, str]:
        """Keyword arguments for an aiobotocore client: the static keys, or none."""
        keys: dict[str, str] = {}
        if self.aws_access_key_id is not None and self.aws_secret_access_key is not None:
            keys["aws_access_key_id"] = self.aws_access_key_id.get_secret_value()
            keys["aws_secret_access_key"] = self.aws_secret_access_key.get_secret_value()
            if self.aws_session_token is not None:
                keys["aws_session_token"] = self.aws_session_token.get_secret_value()
        return keys


async def open_client(
    stack: AsyncExitStack,
    service: str,
    *,
    extra: str,
    needed_by: str,
    region: str,
    endpoint_url: str | None,
    credentials: Mapping[str, str] | None = None,
    profile: str | None = None,
    wire_values: bool = False,
    **config: Any,
) -> Any:
    """An aiobotocore client for `service` that lives until `stack` closes. `config` goes to
    `AioConfig` (timeouts, retries, pool size...); without `credentials` the standard chain (or
    `profile`) signs. MissingExtraError names `extra` when aiobotocore is not installed.

    `wire_values`: the client's responses carry timestamps as epoch seconds (float) and blobs
    as the base64 text the JSON protocols send, instead of timezone-aware datetimes and bytes.
    The stream sources pass both on to Lambda events in exactly that form, and botocore's
    default parsing (a datetime per record converted through dateutil's local zone, bytes
    decoded only to be encoded again) was the largest per-record cost of reading a shard. Set
    through the session's response parser factory (`set_parser_defaults`, botocore's public
    hook for it), so only this client is affected."""
    session_module = import_extra("aiobotocore.session", extra, needed_by)
    from aiobotocore.config import AioConfig

    session = session_module.AioSession(profile=profile)
    if wire_values:
        session.get_component("response_parser_factory").set_parser_defaults(
            timestamp_parser=epoch_seconds, blob_parser=_blob_text
        )
    return await stack.enter_async_context(
        session.create_client(
            service,
            region_name=region,
            endpoint_url=endpoint_url,
            config=AioConfig(**config),
            **dict(credentials or {}),
        )
    )


def epoch_seconds(value: Any) -> float:
    """A timestamp of an AWS response as epoch seconds: JSON protocols send numbers; anything
    else (ISO-8601 text) goes through botocore's own timestamp parser."""
    if isinstance(value, int | float):
        return float(value)
    from botocore.utils import parse_timestamp

    return float(parse_timestamp(value).timestamp())


def _blob_text(value: Any) -> Any:
    """A blob as it came over the wire (base64 text in the JSON protocols)."""
    return value


#: Error codes of AWS APIs that mean "not now" (throttling): the same call succeeds later.
THROTTLING_CODES = frozenset(
    {
        "AWS.SimpleQueueService.RequestThrottled",
        "LimitExceededException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
        "ThrottledException",
        "Throttling",
        "ThrottlingException",
        "TooManyRequestsException",
    }
)


def transient(exc: BaseException) -> bool:
    """Whether an AWS call's error may go away by itself: no answer (the endpoint is not
    reachable: no error code), throttling, or an error of the server's side (HTTP 5xx),
    rather than a refusal of the call as configured (access denied, no such resource)."""
    return error_code(exc) is None or is_transient(exc)


def error_code(exc: BaseException) -> str | None:
    """The AWS error code of a botocore ClientError (None for other errors)."""
    code = _error_field(exc, "Code")
    return code or None


def error_status(exc: BaseException) -> int:
    """The HTTP status of a botocore ClientError's response (0 for other errors)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        meta = response.get("ResponseMetadata")
        if isinstance(meta, dict):
            status = meta.get("HTTPStatusCode")
            if isinstance(status, int):
                return status
    return 0


def is_transient(exc: BaseException) -> bool:
    """An answer that says "not now" rather than "no": a 5xx (the service, or a proxy or
    load balancer in front of it, e.g. an HTML 503 page), a 429 or a throttling code."""
    status = error_status(exc)
    return status >= 500 or status == 429 or error_code(exc) in THROTTLING_CODES


def not_an_answer(response: Any, key: str) -> str | None:
    """Why a successful `response` lacks `key`, which every server of the API includes (e.g.
    GetQueueAttributes' `Attributes`): botocore parses any HTTP 200 body, an HTML page of a
    proxy or of another web server too, into an empty response. None when it has `key`."""
    if isinstance(response, Mapping) and response.get(key):
        return None
    meta = response.get("ResponseMetadata") if isinstance(response, Mapping) else None
    headers = meta.get("HTTPHeaders") if isinstance(meta, Mapping) else None
    kind = headers.get("content-type", "no content type") if isinstance(headers, Mapping) else ""
    return f"the answer has no {key} ({kind or 'unknown content'}): not an AWS API endpoint?"


def error_message(exc: BaseException) -> str:
    """The AWS error message of a botocore ClientError, else the exception's text."""
    return _error_field(exc, "Message") or str(exc)


def _error_field(exc: BaseException, key: str) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error")
        if isinstance(error, dict):
            value = error.get(key)
            if isinstance(value, str):
                return value
    return ""
