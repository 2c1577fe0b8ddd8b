"""Opening an aio-pika connection, and turning its failures into triggerd's error types with
messages that name the broker by its masked URL and never contain the password."""

from __future__ import annotations

import asyncio
from types import ModuleType
from typing import TYPE_CHECKING, Any

from triggerd.config.plugins import import_extra
from triggerd.types import PermanentError, RetryableError, TriggerdError

from .config import AmqpSettings

if TYPE_CHECKING:
    from aio_pika.abc import AbstractConnection

__all__ = ["classify", "import_aio_pika", "open_connection", "scrub"]


def import_aio_pika() -> ModuleType:
    return import_extra("aio_pika", "rabbitmq", "the rabbitmq source and destination")


def scrub(text: str, settings: AmqpSettings) -> str:
    """`text` with the password and the full URL masked (third-party messages may echo them)."""
    secret = settings.secret()
    out = text.replace(settings.amqp_url(), settings.display_url())
    if secret and len(secret) >= 3:  # masking "a" would mangle every message
        out = out.replace(secret, "***")
    return out


def _describe(exc: BaseException, settings: AmqpSettings) -> str:
    detail = str(exc) or type(exc).__name__
    return scrub(f"{type(exc).__name__}: {detail}", settings)


def classify(exc: BaseException, settings: AmqpSettings, *, queue: str | None = None) -> Exception:
    """A PermanentError for what retrying will not fix (credentials, vhost, missing queue,
    mismatched declaration), a RetryableError for the rest (network, broker restarting)."""
    import aiormq.exceptions as amqp

    where = f"RabbitMQ at {settings.display_url()}"
    if isinstance(exc, TriggerdError):
        return exc
    if isinstance(exc, amqp.ProbableAuthenticationError | amqp.AuthenticationError):
        return PermanentError(
            f"{where}: login refused for user {settings.user!r} (check username and password)"
        )
    if isinstance(exc, amqp.ConnectionNotAllowed | amqp.InvalidFrameError):
        return PermanentError(
            f"{where}: virtual host {settings.vhost!r} refused "
            f"(does it exist, may {settings.user!r} use it?): {_describe(exc, settings)}"
        )
    if isinstance(exc, amqp.ChannelNotFoundEntity):
        hint = f"queue {queue!r} does not exist (create it, or set declare = true)"
        return PermanentError(
            f"{where}, virtual host {settings.vhost!r}: "
            f"{hint if queue else 'not found'}: {_describe(exc, settings)}"
        )
    if isinstance(exc, amqp.ChannelPreconditionFailed | amqp.ChannelAccessRefused):
        return PermanentError(f"{where}: {_describe(exc, settings)}")
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return RetryableError(f"{where}: timed out after {settings.connect_timeout_s}s")
    return RetryableError(f"{where}: cannot connect: {_describe(exc, settings)}")


async def open_connection(
    aio_pika: ModuleType, settings: AmqpSettings, name: str
) -> AbstractConnection:
    """Connect once; raises PermanentError or RetryableError (the original exception is not
    chained: its text or arguments may carry the URL)."""
    url = settings.amqp_url()
    if settings.heartbeat_s != 60:
        url += ("&" if "?" in url else "?") + f"heartbeat={settings.heartbeat_s}"
    props: dict[str, Any] = {"connection_name": name}
    try:
        conn: AbstractConnection = await aio_pika.connect(
            url, timeout=settings.connect_timeout_s, client_properties=props
        )
        return conn
    except Exception as exc:  # every failure becomes a typed, password-free error
        error = classify(exc, settings)
    raise error
