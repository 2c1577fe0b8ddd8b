"""aiobotocore clients for the `s3` source (imported only when a source starts)."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

from triggerd.config import aws
from triggerd.config.plugins import import_extra

from .config import S3SourceConfig


def require_aiobotocore() -> None:
    import_extra("aiobotocore.session", "s3", "the s3 source")


async def open_client(
    stack: AsyncExitStack,
    service: str,
    config: S3SourceConfig,
    *,
    region: str,
    endpoint_url: str | None,
) -> Any:
    """An aiobotocore client that lives until `stack` closes. Credentials come from the config
    when given, otherwise from the standard chain (environment, profile, instance role)."""
    return await aws.open_client(
        stack,
        service,
        extra="s3",
        needed_by="the s3 source",
        region=region,
        endpoint_url=endpoint_url,
        credentials=config.client_credentials(),
        s3={"addressing_style": "path" if config.path_style else "auto"},
        retries={"mode": "standard", "max_attempts": 3},
        connect_timeout=10,
        read_timeout=config.wait_time_s + 40,
    )


def describe_error(exc: BaseException, secrets: list[str]) -> str:
    """The error as text for logs and ConfigErrors, with any secret value redacted."""
    text = f"{type(exc).__name__}: {exc}"
    for secret in secrets:
        text = text.replace(secret, "***")
    return text
