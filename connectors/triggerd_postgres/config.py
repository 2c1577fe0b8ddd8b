"""Config model of the `postgres` source (change data capture through logical decoding)."""

from __future__ import annotations

import re
from typing import ClassVar, Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from triggerd.types import Model, SourceConfig

__all__ = ["Connection", "PostgresSourceConfig", "StreamViewType", "default_name"]

StreamViewType = Literal["KEYS_ONLY", "NEW_IMAGE", "OLD_IMAGE", "NEW_AND_OLD_IMAGES"]

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")
_SLOT = re.compile(r"^[a-z0-9_]{1,63}$")


def default_name(trigger: str) -> str:
    """`triggerd_<trigger>` as a valid slot / publication name (lower case, [a-z0-9_])."""
    cleaned = re.sub(r"[^a-z0-9_]", "_", trigger.lower())
    return ("triggerd_" + cleaned)[:63]


def _split_table(value: str) -> tuple[str, str]:
    schema, dot, table = value.partition(".")
    return (schema, table) if dot else ("public", schema)


class Connection(Model):
    """How to reach the database: a `dsn` (a secret as a whole: it may carry the password),
    or the parts."""

    dsn: SecretStr | None = Field(
        default=None,
        description="postgresql://user:password@host:port/database (either this or the parts)",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=5432, ge=1, le=65535)
    user: str = "postgres"
    password: SecretStr | None = None
    database: str = "postgres"
    connect_timeout_s: float = Field(default=10.0, gt=0, le=300)

    @model_validator(mode="after")
    def _dsn_or_parts(self) -> Connection:
        if self.dsn is None:
            return self
        mixed = sorted({"host", "port", "user", "password", "database"} & self.model_fields_set)
        if mixed:
            raise ValueError(f"set either dsn or {', '.join(mixed)}, not both")
        parts = urlsplit(self.dsn.get_secret_value())
        if parts.scheme not in ("postgresql", "postgres"):
            raise ValueError("dsn must start with postgresql://")
        return self

    @property
    def database_name(self) -> str:
        if self.dsn is None:
            return self.database
        path = unquote(urlsplit(self.dsn.get_secret_value()).path.lstrip("/"))
        return path or self.user_name

    @property
    def user_name(self) -> str:
        if self.dsn is None:
            return self.user
        return unquote(urlsplit(self.dsn.get_secret_value()).username or "postgres")

    def display(self) -> str:
        """Where we connect, without the password."""
        if self.dsn is None:
            return f"postgresql://{self.user}@{self.host}:{self.port}/{self.database}"
        parts = urlsplit(self.dsn.get_secret_value())
        host = parts.hostname or "localhost"
        port = f":{parts.port}" if parts.port else ""
        return f"postgresql://{self.user_name}@{host}{port}/{self.database_name}"


class PostgresSourceConfig(SourceConfig, Connection):
    """Row changes of PostgreSQL tables, read from a logical replication slot with the
    built-in `pgoutput` plugin and delivered as DynamoDB Streams records."""

    invocation: ClassVar[Literal["sync", "async"]] = "sync"
    retry_owner: ClassVar[Literal["source", "pipeline"]] = "pipeline"
    default_batch_size: ClassVar[int] = 100
    max_batch_size: ClassVar[int] = 10_000
    default_batching_window_s: ClassVar[float] = 0.0

    type: Literal["postgres"]
    tables: list[str] = Field(
        default_factory=list,
        description="Tables to capture, `schema.table` or `table` (schema public)",
    )
    schemas: list[str] = Field(
        default_factory=list, description="Capture every table of these schemas (PostgreSQL 15+)"
    )
    publication: str | None = Field(
        default=None, description="Publication to create or reuse (default triggerd_<trigger>)"
    )
    slot: str | None = Field(
        default=None,
        description="Logical replication slot to create or reuse (default triggerd_<trigger>)",
    )
    stream_view_type: StreamViewType = Field(
        default="NEW_IMAGE",
        description="What each record carries, as DynamoDB Streams' StreamViewType; OLD_IMAGE "
        "and NEW_AND_OLD_IMAGES need REPLICA IDENTITY FULL on every table",
    )
    parallelization_factor: int = Field(
        default=1,
        ge=1,
        le=10,
        description="Batches of one table in flight at once; rows are spread over them by "
        "primary key, so each row's changes stay in order",
    )
    poll_interval_s: float = Field(
        default=0.01, gt=0, le=60, description="First wait after an empty read; doubles"
    )
    max_poll_interval_s: float = Field(
        default=1.0, gt=0, le=300, description="Longest wait between reads while idle"
    )
    wake_channel: str | None = Field(
        default=None,
        description="LISTEN on this channel: a NOTIFY (from a trigger you install) ends the "
        "idle wait at once. Only a wake-up: the slot stays the source of truth",
    )
    page_rows: int = Field(
        default=500, ge=1, le=100_000, description="Rows fetched per round trip from the cursor"
    )
    peek_changes: int = Field(
        default=10_000,
        ge=1,
        description="Changes one peek decodes on the server before triggerd peeks again "
        "(whole transactions: a larger one comes in full, read in pages)",
    )
    read_ahead: int = Field(
        default=2000,
        ge=10,
        le=1_000_000,
        description="Changes held in memory that are not acknowledged yet (read, buffered, "
        "in flight); reading pauses beyond it",
    )
    read_ahead_mb: float = Field(default=32.0, gt=0, le=4096)
    streaming: bool = Field(
        default=False,
        description="Protocol v2 streaming of large in-progress transactions (PostgreSQL "
        "14+; ignored with a warning before): the server stops spilling them to its disk and "
        "triggerd keeps their chunks in a temporary file until the commit",
    )
    truncate: Literal["deliver", "skip"] = Field(
        default="deliver",
        description="TRUNCATE: deliver a record with eventName TRUNCATE, or skip it (logged "
        "and counted)",
    )
    unchanged_toast_placeholder: str = Field(
        default="__triggerd_unchanged_toast__",
        description="Value (an S) of a large unchanged column the server did not send in an "
        "UPDATE and that no old image holds",
    )
    wal_retention_warning_mb: float = Field(
        default=1024.0,
        gt=0,
        description="Warn when the slot keeps more WAL than this on the server",
    )
    lag_interval_s: float = Field(
        default=10.0, gt=0, le=3600, description="How often slot lag is measured"
    )

    @field_validator("tables")
    @classmethod
    def _tables(cls, value: list[str]) -> list[str]:
        for item in value:
            parts = item.split(".")
            if len(parts) > 2 or not all(_IDENT.match(p) for p in parts):
                raise ValueError(f"{item!r} is not `table` or `schema.table`")
        return value

    @field_validator("schemas")
    @classmethod
    def _schemas(cls, value: list[str]) -> list[str]:
        for item in value:
            if not _IDENT.match(item):
                raise ValueError(f"{item!r} is not a schema name")
        return value

    @field_validator("slot", "publication")
    @classmethod
    def _slot(cls, value: str | None) -> str | None:
        if value is not None and not _SLOT.match(value):
            raise ValueError("must be 1-63 characters of a-z, 0-9 and _")
        return value

    @field_validator("wake_channel")
    @classmethod
    def _channel(cls, value: str | None) -> str | None:
        if value is not None and not _IDENT.match(value):
            raise ValueError("must be a plain identifier")
        return value

    @model_validator(mode="after")
    def _check(self) -> PostgresSourceConfig:
        if not self.tables and not self.schemas:
            raise ValueError("set tables (or schemas): which tables to capture")
        if self.max_poll_interval_s < self.poll_interval_s:
            raise ValueError("max_poll_interval_s must be at least poll_interval_s")
        return self

    @property
    def table_names(self) -> list[tuple[str, str]]:
        """(schema, table) of each configured table."""
        return [_split_table(t) for t in self.tables]

    def slot_name(self, trigger: str) -> str:
        return self.slot or default_name(trigger)

    def publication_name(self, trigger: str) -> str:
        return self.publication or default_name(trigger)

    @property
    def needs_old_image(self) -> bool:
        return self.stream_view_type in ("OLD_IMAGE", "NEW_AND_OLD_IMAGES")
