"""`triggerd validate --connect` for the `s3` source: HeadBucket, and in notifications mode
GetQueueAttributes on the notification queue, with the configured credentials."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

from triggerd.config.aws import (
    error_code,
    error_message,
    error_status,
    is_transient,
    not_an_answer,
)
from triggerd.types import ConfigError, RetryableError

from .client import describe_error, open_client
from .config import S3SourceConfig


async def check(cfg: S3SourceConfig, trigger: str, daemon_region: str) -> None:
    region = cfg.region or daemon_region
    async with AsyncExitStack() as stack:
        s3 = await open_client(stack, "s3", cfg, region=region, endpoint_url=cfg.endpoint_url)
        await _call(s3.head_bucket(Bucket=cfg.bucket), cfg, trigger, f"bucket {cfg.bucket}")
        if cfg.mode == "notifications" and cfg.queue_url:
            sqs = await open_client(
                stack,
                "sqs",
                cfg,
                region=region,
                endpoint_url=cfg.sqs_endpoint_url or cfg.endpoint_url,
            )
            await check_queue(sqs, cfg, trigger)


async def check_queue(sqs: Any, cfg: S3SourceConfig, trigger: str) -> None:
    """GetQueueAttributes on the notification queue: a ConfigError when it is missing or
    refuses the credentials, a RetryableError when it cannot be reached (or answers 5xx)."""
    call = sqs.get_queue_attributes(QueueUrl=cfg.queue_url, AttributeNames=["QueueArn"])
    response = await _call(call, cfg, trigger, f"queue_url {cfg.queue_url}")
    problem = not_an_answer(response, "Attributes")
    if problem is not None:  # answered, but not as SQS: receives would be empty forever
        raise ConfigError([f"trigger {trigger!r}: source.queue_url {cfg.queue_url}: {problem}"])


async def _call(call: Any, cfg: S3SourceConfig, trigger: str, what: str) -> Any:
    secrets = [v for v in cfg.client_credentials().values() if v]
    try:
        return await call
    except Exception as exc:  # classify: an answer is a config error, no answer is not
        code = error_code(exc)
        if code is None:
            raise RetryableError(
                f"trigger {trigger!r}: {what}: cannot reach the endpoint "
                f"({describe_error(exc, secrets)})"
            ) from None
        if is_transient(exc):  # a 5xx (a proxy's error page too) or throttling: not now
            raise RetryableError(
                f"trigger {trigger!r}: {what}: the endpoint answered HTTP "
                f"{error_status(exc)} ({code}: {error_message(exc)})"
            ) from None
        # HeadBucket answers with a bare status code and no message.
        message = _HEAD_STATUS.get(code) or error_message(exc)
        raise ConfigError([f"trigger {trigger!r}: source.{what}: {code}: {message}"]) from None


_HEAD_STATUS = {
    "404": "the bucket does not exist",
    "403": "access denied (check the credentials and the bucket's policy)",
    "301": "the bucket is in another region (set region)",
    "400": "bad request (check region and endpoint_url)",
}
