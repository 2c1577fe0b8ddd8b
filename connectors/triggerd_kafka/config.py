"""Config models of the `kafka` source and the `kafka` on-failure destination.

Both reach the cluster the same way (`KafkaConnection`): bootstrap servers, TLS and SASL, with
passwords as secret fields (never logged). Consumer tuning keeps Kafka's own names and units
(`session_timeout_ms`, ...) so that they read like the client settings operators know.
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from triggerd.types import DestinationConfig, InputFile, Model, SourceConfig

__all__ = ["KafkaConnection", "KafkaDestinationConfig", "KafkaSourceConfig"]

#: A Kafka topic name: 1-249 of [a-zA-Z0-9._-], not "." or "..".
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[^:\s\[\],]+):(\d{1,5})$")

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


def _check_topic(name: str) -> str:
    if not _TOPIC.match(name) or name in (".", ".."):
        raise ValueError(f"{name!r} is not a valid Kafka topic name (1-249 of [A-Za-z0-9._-])")
    return name


class KafkaConnection(Model):
    """How to reach the cluster (shared by the source and the destination)."""

    bootstrap_servers: list[str] = Field(
        min_length=1,
        description='host:port of one or more brokers, e.g. ["b1:9092", "b2:9092"] '
        "(a comma-separated string is accepted too)",
    )
    client_id: str | None = Field(
        default=None,
        max_length=255,
        description="Client id shown in broker logs (default: triggerd-<trigger>)",
    )
    security_protocol: SecurityProtocol = Field(
        default="PLAINTEXT",
        description="PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or SASL_SSL (SASL over TLS)",
    )
    sasl_mechanism: SaslMechanism | None = Field(
        default=None, description="With SASL_*: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
    )
    sasl_username: str | None = Field(default=None, min_length=1)
    sasl_password: SecretStr | None = Field(default=None, description="Never logged")
    ssl_cafile: InputFile | None = Field(
        default=None, description="PEM CA bundle to verify the brokers (default: the system's)"
    )
    ssl_certfile: InputFile | None = Field(
        default=None, description="PEM client certificate (mutual TLS)"
    )
    ssl_keyfile: InputFile | None = Field(default=None, description="PEM client key")
    ssl_key_password: SecretStr | None = Field(default=None, description="Password of the key")
    ssl_check_hostname: bool = Field(
        default=True, description="Verify that the broker's certificate names its host"
    )
    request_timeout_ms: int = Field(default=40_000, ge=1000, le=600_000)
    connections_max_idle_ms: int = Field(default=540_000, ge=1000, le=3_600_000)

    @field_validator("bootstrap_servers", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("bootstrap_servers")
    @classmethod
    def _host_port(cls, value: list[str]) -> list[str]:
        for server in value:
            match = _HOST_PORT.match(server)
            if not match or not 1 <= int(match.group(2)) <= 65535:
                raise ValueError(f"{server!r} is not host:port")
        return value

    @model_validator(mode="after")
    def _check_security(self) -> KafkaConnection:
        sasl = self.security_protocol.startswith("SASL_")
        if sasl and (
            self.sasl_mechanism is None or self.sasl_username is None or self.sasl_password is None
        ):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs sasl_mechanism, "
                "sasl_username and sasl_password"
            )
        if not sasl and (self.sasl_mechanism or self.sasl_username or self.sasl_password):
            raise ValueError("sasl_* settings need security_protocol SASL_PLAINTEXT or SASL_SSL")
        tls = self.security_protocol in ("SSL", "SASL_SSL")
        tls_keys = [k for k in ("ssl_cafile", "ssl_certfile", "ssl_keyfile") if getattr(self, k)]
        tls_keys += [
            k for k in ("ssl_key_password", "ssl_check_hostname") if k in self.model_fields_set
        ]
        if tls_keys and not tls:
            raise ValueError(f"{', '.join(tls_keys)}: needs security_protocol SSL or SASL_SSL")
        if self.ssl_keyfile and not self.ssl_certfile:
            raise ValueError("ssl_keyfile needs ssl_certfile")
        return self

    @property
    def bootstrap(self) -> str:
        """The servers as one comma-separated string (the events' `bootstrapServers`)."""
        return ",".join(self.bootstrap_servers)

    def secrets(self) -> list[str]:
        """Secret values, to scrub from third-party error texts."""
        out = []
        for secret in (self.sasl_password, self.ssl_key_password):
            if secret is not None and len(secret.get_secret_value()) >= 3:
                out.append(secret.get_secret_value())
        return out


class KafkaSourceConfig(SourceConfig, KafkaConnection):
    """Consume topics as a self-managed Apache Kafka event source mapping."""

    invocation: ClassVar[Literal["sync", "async"]] = "sync"
    retry_owner: ClassVar[Literal["source", "pipeline"]] = "pipeline"
    default_batch_size: ClassVar[int] = 100
    max_batch_size: ClassVar[int] = 10_000
    default_batching_window_s: ClassVar[float] = 0.5
    batch_per_key: ClassVar[bool] = True
    retry_cap_with_on_failure: ClassVar[int | None] = 10

    type: Literal["kafka"]
    topics: list[str] = Field(min_length=1, description="Topics to consume (one or more)")
    group_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="Consumer group (default: the trigger's name)",
    )
    cluster_arn: str | None = Field(
        default=None,
        pattern=r"^arn:[^:]+:kafka:",
        description="An Amazon MSK cluster's ARN: the events are MSK's (eventSource aws:kafka "
        "and this eventSourceArn) instead of SelfManagedKafka's",
    )

    def for_recording(self, trigger: str) -> SourceConfig:
        """A consumer group of its own (`<group>-triggerd-record`), which never commits: the
        trigger's group keeps its offsets and its members."""
        group = f"{self.group_id or trigger}-triggerd-record"[:255]
        return self.model_copy(update={"group_id": group})

    starting_position: Literal["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"] = Field(
        default="LATEST",
        description="Where a partition starts when the group has no committed offset for it: "
        "TRIM_HORIZON (earliest), LATEST, or AT_TIMESTAMP (starting_position_timestamp)",
    )
    starting_position_timestamp: float | None = Field(
        default=None, ge=0, description="With AT_TIMESTAMP: epoch seconds"
    )
    session_timeout_ms: int = Field(
        default=45_000,
        ge=500,
        le=3_600_000,
        description="Group session timeout (brokers accept 6000-1800000 by default; a test "
        "broker may allow less)",
    )
    heartbeat_interval_ms: int = Field(
        default=3000, ge=100, le=600_000, description="Below a third of session_timeout_ms"
    )
    max_poll_interval_ms: int = Field(
        default=300_000,
        ge=1000,
        le=86_400_000,
        description="The group evicts a consumer that does not poll for this long (triggerd "
        "keeps polling while batches run, with busy partitions paused)",
    )
    rebalance_timeout_ms: int | None = Field(
        default=None,
        ge=1000,
        le=3_600_000,
        description="How long the group waits for members to rejoin; also bounds how long a "
        "revoked partition's batch in flight may take to finish (default: session_timeout_ms)",
    )
    fetch_max_wait_ms: int = Field(default=500, ge=0, le=60_000)
    fetch_min_bytes: int = Field(default=1, ge=1, le=52_428_800)
    fetch_max_bytes: int = Field(default=52_428_800, ge=1024, le=1_073_741_824)
    max_partition_fetch_bytes: int = Field(default=1_048_576, ge=1024, le=104_857_600)
    max_buffered_records_per_partition: int = Field(
        default=1000,
        ge=1,
        le=1_000_000,
        description="Fetched records a partition may hold before it is paused (back-pressure); "
        "resumed at half",
    )
    max_buffered_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024 * 1024,
        le=4 * 1024 * 1024 * 1024,
        description="Fetched bytes all partitions may hold before every partition is paused",
    )
    commit_interval_s: float = Field(
        default=0.1,
        ge=0,
        le=60,
        description="Commit settled offsets at most this often (the first settlement after a "
        "quiet spell at once, later ones together); 0: after every settlement. Always on "
        "revocation and shutdown",
    )

    @field_validator("topics")
    @classmethod
    def _topics(cls, value: list[str]) -> list[str]:
        for name in value:
            _check_topic(name)
        if len(set(value)) != len(value):
            raise ValueError("topics are listed twice")
        return value

    @model_validator(mode="after")
    def _check_consumer(self) -> KafkaSourceConfig:
        at = self.starting_position == "AT_TIMESTAMP"
        if at and self.starting_position_timestamp is None:
            raise ValueError("starting_position AT_TIMESTAMP needs starting_position_timestamp")
        if not at and self.starting_position_timestamp is not None:
            raise ValueError("starting_position_timestamp needs starting_position AT_TIMESTAMP")
        if self.heartbeat_interval_ms * 3 > self.session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be at most a third of session_timeout_ms")
        return self

    @property
    def rebalance_timeout(self) -> int:
        return self.rebalance_timeout_ms or self.session_timeout_ms


def codec_available(codec: str) -> bool:
    """Whether aiokafka can compress with `codec`: the same check its producer makes when it
    is created (aiokafka.codec.has_*), so that a missing library is a config error instead of
    a producer that can never start. Without aiokafka the missing extra is reported when the
    destination is created."""
    try:
        from aiokafka import codec as codecs
    except ImportError:  # pragma: no cover - depends on the installed extras
        return True
    check = getattr(codecs, f"has_{codec}", None)
    return check is None or bool(check())


class KafkaDestinationConfig(DestinationConfig, KafkaConnection):
    """Produce each on-failure record (JSON) to a topic, keyed by the source topic-partition."""

    type: Literal["kafka"]
    topic: str = Field(description="Destination topic (must exist unless the broker creates it)")
    acks: Literal["all", "1", "0"] = Field(
        default="all", description='"all": the record is stored on every in-sync replica'
    )
    enable_idempotence: bool = Field(
        default=False,
        description="Idempotent producer (needs broker support; off by default so it works "
        "with brokers that lack InitProducerId)",
    )
    compression_type: Literal["gzip", "snappy", "lz4", "zstd"] | None = Field(
        default=None,
        description="Compress produced batches; snappy, lz4 and zstd need aiokafka's codec "
        "library (pip install 'aiokafka[zstd]', ...)",
    )
    max_request_size: int = Field(
        default=1_048_576,
        ge=1024,
        le=1_073_741_824,
        description="Largest request produced (Kafka's default, 1 MiB); a record bigger than "
        "this, or refused by the broker as too large, is sent without its payload",
    )
    send_timeout_s: float = Field(default=30.0, gt=0, le=600)

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        return _check_topic(value)

    @field_validator("compression_type")
    @classmethod
    def _codec_installed(cls, value: str | None) -> str | None:
        if value is not None and not codec_available(value):
            raise ValueError(
                f"compression_type {value!r} needs a codec library that is not installed: "
                f"pip install 'aiokafka[{value}]'"
            )
        return value

    @model_validator(mode="after")
    def _idempotence_needs_all(self) -> KafkaDestinationConfig:
        if self.enable_idempotence and self.acks != "all":
            raise ValueError('enable_idempotence needs acks = "all"')
        return self
