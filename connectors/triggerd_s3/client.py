"""aiobotocore clients for the `s3` source (imported only when a source starts)."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

from triggerd.types import MissingExtraError

from .config import S3SourceConfig


def require_aiobotocore() -> None:
    try:
        import aiobotocore.session  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise MissingExtraError(
            "the s3 source needs aiobotocore: pip install 'triggerd-daemon[s3]'"
        ) from exc


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
    require_aiobotocore()
    import aiobotocore.session
    from botocore.config import Config

    botocore_config = Config(
        s3={"addressing_style": "path" if config.path_style else "auto"},
        retries={"mode": "standard", "max_attempts": 3},
        connect_timeout=10,
        read_timeout=config.wait_time_s + 40,
    )
    session = aiobotocore.session.get_session()
    return await stack.enter_async_context(
        session.create_client(
            service,
            region_name=region,
            endpoint_url=endpoint_url,
            config=botocore_config,
            **config.client_credentials(),
        )
    )


def describe_error(exc: BaseException, secrets: list[str]) -> str:
    """The error as text for logs and ConfigErrors, with any secret value redacted."""
    text = f"{type(exc).__name__}: {exc}"
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def error_code(exc: BaseException) -> str:
    """The S3/SQS error code of a botocore ClientError ("" for other errors)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code", "")
        return str(code)
    return ""
