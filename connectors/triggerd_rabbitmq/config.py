"""Config models of the `rabbitmq` source and on-failure destination.

Both connect the same way: either one `url` (a secret as a whole, since it carries the
password) or the parts `host`, `port`, `username`, `password`, `virtual_host`, `tls`. Logs and
errors only ever show `display_url()`, which masks the password.
"""

from __future__ import annotations

from typing import ClassVar, Literal
from urllib.parse import quote, unquote, urlsplit

from pydantic import Field, SecretStr, model_validator

from triggerd.types import DestinationConfig, Model, SourceConfig, TriggerSettings

__all__ = ["AmqpSettings", "RabbitMQDestinationConfig", "RabbitMQSourceConfig"]

_PARTS = ("host", "port", "username", "password", "virtual_host", "tls")
_MASK = "***"

QueueArgument = str | int | float | bool


class AmqpSettings(Model):
    """How to reach the broker (shared by the source and the destination)."""

    url: SecretStr | None = Field(
        default=None,
        description="amqp[s]://user:password@host:port/vhost (URL-encode a vhost '/' as %2F; "
        "an empty path is the default vhost '/'). Either this or the host/port/... keys.",
    )
    host: str = Field(default="localhost", min_length=1)
    port: int = Field(default=5672, ge=1, le=65535)
    username: str = Field(default="guest", min_length=1)
    password: SecretStr = Field(default=SecretStr("guest"))
    virtual_host: str = Field(default="/", min_length=1)
    tls: bool = Field(default=False, description="amqps (TLS) with the system's CA certificates")
    connection_name: str | None = Field(
        default=None,
        max_length=255,
        description="Name shown in the broker's management UI (default: triggerd:<trigger>)",
    )
    connect_timeout_s: float = Field(default=10.0, gt=0, le=300)
    heartbeat_s: int = Field(default=60, ge=0, le=3600, description="AMQP heartbeat; 0 = off")
    reconnect_base_delay_s: float = Field(
        default=0.5, gt=0, le=60, description="First reconnect delay; doubles per failure"
    )
    reconnect_max_delay_s: float = Field(default=30.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _check_connection(self) -> AmqpSettings:
        if self.url is None:
            return self
        mixed = sorted(set(_PARTS) & self.model_fields_set)
        if mixed:
            raise ValueError(f"set either url or {', '.join(mixed)}, not both")
        # The message never includes the URL: it may hold the password.
        try:
            parts = urlsplit(self.url.get_secret_value())
            port = parts.port
        except ValueError:
            raise ValueError("url is not a valid amqp:// URL (bad port?)") from None
        if parts.scheme not in ("amqp", "amqps"):
            raise ValueError("url must start with amqp:// or amqps://")
        if not parts.hostname:
            raise ValueError("url has no host")
        if port == 0:
            raise ValueError("url has an invalid port")
        return self

    # ---- derived values ----

    @property
    def _parts(self) -> tuple[str, str, int, str, str, str]:
        """(scheme, host, port, username, password, vhost), whichever way they were given."""
        if self.url is None:
            scheme = "amqps" if self.tls else "amqp"
            return (
                scheme,
                self.host,
                self.port,
                self.username,
                self.password.get_secret_value(),
                self.virtual_host,
            )
        parts = urlsplit(self.url.get_secret_value())
        scheme = parts.scheme
        default_port = 5671 if scheme == "amqps" else 5672
        path = parts.path
        vhost = "/" if path in ("", "/") else unquote(path[1:])
        return (
            scheme,
            parts.hostname or "localhost",
            parts.port or default_port,
            unquote(parts.username or "guest"),
            unquote(parts.password or "guest"),
            vhost,
        )

    @property
    def vhost(self) -> str:
        return self._parts[5]

    @property
    def endpoint(self) -> str:
        """host:port, for logs and the synthesised broker ARN."""
        _, host, port, *_ = self._parts
        return f"{host}:{port}"

    @property
    def user(self) -> str:
        return self._parts[3]

    def secret(self) -> str:
        """The password (for scrubbing it out of third-party error texts)."""
        return self._parts[4]

    def amqp_url(self) -> str:
        """The URL to connect with, password included: never log it."""
        return self._build(masked=False)

    def display_url(self) -> str:
        """The URL with the password masked, safe for logs and errors."""
        return self._build(masked=True)

    def _build(self, *, masked: bool) -> str:
        scheme, host, port, user, secret, vhost = self._parts
        hostpart = f"[{host}]" if ":" in host else host
        path = "/" if vhost == "/" else "/" + quote(vhost, safe="")
        pw = _MASK if masked else quote(secret, safe="")
        query = urlsplit(self.url.get_secret_value()).query if self.url is not None else ""
        tail = f"?{query}" if query else ""
        return f"{scheme}://{quote(user, safe='')}:{pw}@{hostpart}:{port}{path}{tail}"


class RabbitMQSourceConfig(SourceConfig, AmqpSettings):
    """Consume one queue as an Amazon MQ for RabbitMQ event source mapping."""

    invocation: ClassVar[Literal["sync", "async"]] = "sync"
    retry_owner: ClassVar[Literal["source", "pipeline"]] = "source"
    default_batch_size: ClassVar[int] = 100
    default_batching_window_s: ClassVar[float] = 0.5
    max_batch_size: ClassVar[int] = 10_000

    type: Literal["rabbitmq"]
    queue: str = Field(min_length=1, max_length=255, description="The queue to consume")
    declare: bool = Field(
        default=False,
        description="Declare the queue at (re)connect; otherwise it must exist (passive check)",
    )
    durable: bool = Field(default=True, description="With declare: a durable queue")
    queue_arguments: dict[str, QueueArgument] = Field(
        default_factory=dict,
        description='With declare: x-arguments, e.g. {"x-queue-type" = "quorum"}',
    )

    def for_recording(self, trigger: str) -> SourceConfig:
        """A recording only checks the queue (passively): it never creates one."""
        return self.model_copy(update={"declare": False})

    prefetch_count: int = Field(
        default=1000,
        ge=1,
        le=65535,
        description="Unacknowledged messages the broker hands out at once (AMQP prefetch). "
        "Keep it >= batch_size * (maximum_concurrency + 1) so batches can fill.",
    )
    broker_arn: str | None = Field(
        default=None,
        description="eventSourceArn in the events (default: arn:aws:mq:<region>:<account>:"
        "broker:<host>:b-<uuid5 of host:port>)",
    )
    ordered: bool = Field(
        default=False,
        description="One batch at a time, and a failed message requeues the rest of its batch "
        "behind it, so the function sees the queue's order (Lambda promises no order)",
    )
    consumer_timeout_s: int = Field(
        default=1800,
        ge=0,
        le=7 * 86400,
        description="The broker's consumer_timeout (RabbitMQ's default: 30 min; 0: the broker "
        "has none): a delivery unacked this long closes the channel. A failed batch being "
        "split is given back (requeued, not a failed attempt) before it gets this old",
    )
    dead_letter_after_attempts: int | None = Field(
        default=None,
        ge=1,
        le=10_000,
        description="Without an on-failure destination: a message whose invocation failed this "
        "many times is rejected without requeue, so the broker dead-letters it through the "
        "queue's x-dead-letter-exchange (or drops it when the queue has none)",
    )

    @property
    def limits_attempts(self) -> bool:
        return self.dead_letter_after_attempts is not None

    def trigger_problem(self, trigger: TriggerSettings) -> str | None:
        limited = trigger.maximum_retry_attempts is not None
        if self.dead_letter_after_attempts is not None and limited:
            return (
                "source.dead_letter_after_attempts and maximum_retry_attempts both end a failing "
                "message's retries: use maximum_retry_attempts with on_failure, or "
                "dead_letter_after_attempts without them, not both"
            )
        concurrency = trigger.maximum_concurrency
        if self.ordered and concurrency > 1 and "maximum_concurrency" in trigger.model_fields_set:
            return (
                f"maximum_concurrency: {concurrency} batches at once cannot be, as "
                "source.ordered = true invokes one batch at a time (drop maximum_concurrency, "
                "or set ordered = false)"
            )
        return None

    @model_validator(mode="after")
    def _check_queue(self) -> RabbitMQSourceConfig:
        if self.queue_arguments and not self.declare:
            raise ValueError("queue_arguments needs declare = true")
        if "durable" in self.model_fields_set and not self.declare:
            # Without declare the queue is only checked (passively): durable would do nothing.
            raise ValueError("durable needs declare = true (an existing queue keeps its own)")
        qtype = self.queue_arguments.get("x-queue-type")
        if qtype == "quorum" and not self.durable:
            raise ValueError("a quorum queue must be durable")
        if self.broker_arn is not None and not self.broker_arn.startswith("arn:"):
            raise ValueError("broker_arn must be an ARN (arn:...)")
        return self


class RabbitMQDestinationConfig(DestinationConfig, AmqpSettings):
    """Publish on-failure records (JSON) to an exchange, with publisher confirms."""

    type: Literal["rabbitmq"]
    exchange: str = Field(default="", description="Exchange name; '' is the default exchange")
    routing_key: str = Field(
        min_length=1, max_length=255, description="Routing key (the queue name for '')"
    )
    persistent: bool = Field(default=True, description="delivery_mode 2 (stored on disk)")
    mandatory: bool = Field(
        default=True,
        description="An unroutable record is an error (retried), not silently dropped",
    )
    confirm_timeout_s: float = Field(default=30.0, gt=0, le=600)

    @model_validator(mode="after")
    def _no_reconnect_backoff(self) -> RabbitMQDestinationConfig:
        """The destination has no reconnect loop: a lost connection is reopened by the next
        send, and failed sends are retried on the pipeline's on-failure backoff."""
        unused = sorted({"reconnect_base_delay_s", "reconnect_max_delay_s"} & self.model_fields_set)
        if unused:
            raise ValueError(
                f"{', '.join(unused)}: only the rabbitmq source uses this; the destination "
                "reconnects on its next send, retried on the pipeline's on-failure backoff"
            )
        return self
