"""aiokafka's client settings from the config, and its failures as triggerd's error types with
messages that name the cluster and never contain a password."""

from __future__ import annotations

import asyncio
from types import ModuleType
from typing import Any

from triggerd.config.plugins import import_extra
from triggerd.types import PermanentError, RetryableError

from .config import KafkaConnection

__all__ = ["classify", "client_kwargs", "describe", "fatal_for_consumer", "import_aiokafka"]


def import_aiokafka() -> ModuleType:
    return import_extra("aiokafka", "kafka", "the kafka source and destination")


def client_kwargs(cfg: KafkaConnection, client_id: str) -> dict[str, Any]:
    """Connection settings shared by AIOKafkaConsumer and AIOKafkaProducer."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": list(cfg.bootstrap_servers),
        "client_id": cfg.client_id or client_id,
        "request_timeout_ms": cfg.request_timeout_ms,
        "connections_max_idle_ms": cfg.connections_max_idle_ms,
        "security_protocol": cfg.security_protocol,
    }
    if cfg.security_protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        password = cfg.ssl_key_password.get_secret_value() if cfg.ssl_key_password else None
        context = create_ssl_context(
            cafile=cfg.ssl_cafile,
            certfile=cfg.ssl_certfile,
            keyfile=cfg.ssl_keyfile,
            password=password,
        )
        context.check_hostname = cfg.ssl_check_hostname
        kwargs["ssl_context"] = context
    if cfg.sasl_mechanism is not None:
        kwargs["sasl_mechanism"] = cfg.sasl_mechanism
        kwargs["sasl_plain_username"] = cfg.sasl_username
        kwargs["sasl_plain_password"] = (
            cfg.sasl_password.get_secret_value() if cfg.sasl_password else None
        )
    return kwargs


def describe(exc: BaseException, cfg: KafkaConnection) -> str:
    """`Type: message` with the configured secrets masked."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    for secret in cfg.secrets():
        text = text.replace(secret, "***")
    return text


def classify(exc: BaseException, cfg: KafkaConnection) -> PermanentError | RetryableError:
    """PermanentError for what retrying will not fix (authentication, authorisation, TLS
    files, an unsupported mechanism), RetryableError for the rest (brokers unreachable)."""
    from aiokafka import errors

    where = f"Kafka at {cfg.bootstrap}"
    permanent = (
        errors.AuthenticationFailedError,
        errors.AuthenticationMethodNotSupported,
        errors.SaslAuthenticationFailed,
        errors.TopicAuthorizationFailedError,
        errors.GroupAuthorizationFailedError,
        errors.ClusterAuthorizationFailedError,
        errors.UnsupportedSaslMechanismError,
        OSError,
    )
    if isinstance(exc, errors.KafkaConnectionError | asyncio.TimeoutError | TimeoutError):
        return RetryableError(f"{where}: cannot connect: {describe(exc, cfg)}")
    if isinstance(exc, permanent) and not isinstance(exc, ConnectionError):
        return PermanentError(f"{where}: {describe(exc, cfg)}")
    return RetryableError(f"{where}: {describe(exc, cfg)}")


def fatal_for_consumer(exc: BaseException) -> bool:
    """Whether a consumer error is one that polling again cannot fix: authentication,
    authorisation (ACLs), a session timeout or group id the brokers refuse, a protocol or
    mechanism they do not support. Everything else (connections, rebalances, aiokafka's
    IllegalStateError while an assignment changes) is retried."""
    from aiokafka import errors

    fatal = (
        errors.AuthenticationFailedError,
        errors.AuthenticationMethodNotSupported,
        errors.SaslAuthenticationFailed,
        errors.UnsupportedSaslMechanismError,
        errors.IllegalSaslStateError,
        errors.TopicAuthorizationFailedError,
        errors.GroupAuthorizationFailedError,
        errors.ClusterAuthorizationFailedError,
        errors.InvalidSessionTimeoutError,
        errors.InvalidGroupIdError,
        errors.InconsistentGroupProtocolError,
        errors.UnsupportedVersionError,
        errors.InvalidConfigurationError,
    )
    return isinstance(exc, fatal)
