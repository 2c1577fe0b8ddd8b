"""The shard APIs' errors (Kinesis Data Streams, DynamoDB Streams: the same codes) mapped to
the shard reader's policy (triggerd.delivery.shards): throttling backs off, an expired
iterator is replaced, trimmed data is skipped once, a shard not found was trimmed away."""

from __future__ import annotations

from typing import Any

from triggerd.config.aws import error_code
from triggerd.delivery.shards import IteratorExpired, ShardGone, Throttled, Trimmed

__all__ = ["call", "shard_call"]

THROTTLED = frozenset(
    {"ProvisionedThroughputExceededException", "LimitExceededException", "ThrottlingException"}
)
EXPIRED = frozenset({"ExpiredIteratorException"})


async def call(method: Any, **kwargs: Any) -> Any:
    """Await an aiobotocore call, its errors raised as the reader's exceptions."""
    try:
        return await method(**kwargs)
    except Exception as exc:
        code = error_code(exc)
        if code in THROTTLED:
            raise Throttled(code) from exc
        if code in EXPIRED:
            raise IteratorExpired(code) from exc
        if code == "TrimmedDataAccessException":
            raise Trimmed(code) from exc
        raise


async def shard_call(method: Any, **kwargs: Any) -> Any:
    """`call` of a call about one shard: a shard not found was trimmed away (or its stream is
    gone: the reader's shard listing tells)."""
    try:
        return await call(method, **kwargs)
    except Exception as exc:
        if error_code(exc) == "ResourceNotFoundException":
            raise ShardGone("ResourceNotFoundException") from exc
        raise
