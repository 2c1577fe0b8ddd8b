"""The aiobotocore SQS client shared by the source and the destination: opened in `start`, closed
in `stop`, credentials from the config or the standard chain (never logged)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from typing import Any

from triggerd.config import aws
from triggerd.config.aws import (
    error_code,
    error_message,
    error_status,
    is_transient,
    not_an_answer,
)
from triggerd.types import ConfigError, RetryableError

from .config import AwsConnection

#: Error codes that mean the queue URL (or the permissions on it) is wrong, not a hiccup.
_QUEUE_ERRORS = frozenset(
    {
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
        "InvalidAddress",
        "InvalidParameterValue",
        "AccessDenied",
        "AccessDeniedException",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
        "InvalidSecurity",
    }
)


def describe(exc: BaseException) -> str:
    """A one-line description of an error for logs (botocore messages carry no secrets)."""
    return f"{type(exc).__name__}: {exc}"


async def open_client(
    stack: AsyncExitStack, conn: AwsConnection, region: str, *, pool: int, read_timeout_s: float
) -> Any:
    """An SQS client registered on `stack` (closed when the stack closes)."""
    return await aws.open_client(
        stack,
        "sqs",
        extra="sqs",
        needed_by="the sqs connector",
        region=region,
        endpoint_url=conn.endpoint(),
        credentials=conn.client_credentials(),
        connect_timeout=10,
        read_timeout=read_timeout_s,
        max_pool_connections=pool,
        retries={"mode": "standard", "max_attempts": 3},
    )


async def queue_attributes(
    client: Any, conn: AwsConnection, trigger: str, role: str
) -> dict[str, str]:
    """The queue's attributes; a ConfigError naming the queue when it cannot be used."""
    try:
        response = await client.get_queue_attributes(
            QueueUrl=conn.queue_url, AttributeNames=["All"]
        )
    except Exception as exc:  # classify: a wrong queue is a config error, the rest too at start
        code = error_code(exc)
        where = f"trigger {trigger!r}: {role}.queue_url {conn.queue_url}"
        if code is None:
            # Unreachable: maybe the network is not up yet; the daemon retries the start.
            raise RetryableError(
                f"{where}: cannot reach the SQS endpoint ({describe(exc)})"
            ) from None
        if is_transient(exc):
            # A 5xx (a proxy's error page too) or throttling, after botocore's own retries:
            # the service is there but busy or down for now, not misconfigured.
            raise RetryableError(
                f"{where}: the SQS endpoint answered HTTP {error_status(exc)} "
                f"({code}: {error_message(exc)})"
            ) from None
        hint = "" if code in _QUEUE_ERRORS else " (unexpected error)"
        raise ConfigError([f"{where}: {code}: {error_message(exc)}{hint}"]) from None
    problem = not_an_answer(response, "Attributes")
    if problem is not None:
        # It answered, but not as SQS: receives would come back empty, silently, forever.
        raise ConfigError([f"trigger {trigger!r}: {role}.queue_url {conn.queue_url}: {problem}"])
    return {str(k): str(v) for k, v in response["Attributes"].items()}


#: One batch API call (DeleteMessageBatch, ChangeMessageVisibilityBatch) on up to 10 entries.
BatchCall = Callable[[list[dict[str, Any]]], Awaitable[dict[str, Any]]]


async def batch_entries(
    call: BatchCall,
    entries: Sequence[dict[str, Any]],
    *,
    sleep: Callable[[float], Awaitable[None]],
    attempts: int = 3,
    delay_s: float = 0.2,
) -> list[tuple[dict[str, Any], str]]:
    """Run `call` over `entries` in chunks of 10 at once; retry entries that failed on the
    server's side (or whose call raised) up to `attempts` times. Returns the entries that
    still failed, each with its error code."""
    failed: list[tuple[dict[str, Any], str]] = []
    chunks = [list(entries[i : i + 10]) for i in range(0, len(entries), 10)]
    if len(chunks) == 1:
        return await _one_chunk(call, chunks[0], sleep, attempts, delay_s)
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(_one_chunk(call, c, sleep, attempts, delay_s)) for c in chunks]
    for task in tasks:
        failed += task.result()
    return failed


async def _one_chunk(
    call: BatchCall,
    chunk: list[dict[str, Any]],
    sleep: Callable[[float], Awaitable[None]],
    attempts: int,
    delay_s: float,
) -> list[tuple[dict[str, Any], str]]:
    pending = {str(i): dict(entry, Id=str(i)) for i, entry in enumerate(chunk)}
    originals = {str(i): entry for i, entry in enumerate(chunk)}
    final: list[tuple[dict[str, Any], str]] = []
    last_error = "unknown"
    for attempt in range(1, attempts + 1):
        try:
            response = await call(list(pending.values()))
        except Exception as exc:  # retried below; the caller logs what never succeeded
            last_error = error_code(exc) or describe(exc)
            response = None
        if response is not None:
            retry: dict[str, dict[str, Any]] = {}
            for item in response.get("Failed") or []:
                entry_id = str(item.get("Id"))
                if entry_id not in pending:
                    continue
                code = str(item.get("Code") or "unknown")
                if item.get("SenderFault", True) or attempt == attempts:
                    final.append((originals[entry_id], code))
                else:
                    retry[entry_id] = pending[entry_id]
            pending = retry
        if not pending:
            return final
        if attempt < attempts:
            await sleep(delay_s * attempt)
    final += [(originals[i], last_error) for i in pending if response is None]
    return final
