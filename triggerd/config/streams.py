"""Config shared by the shard-based stream sources (Kinesis Data Streams, DynamoDB Streams):
Lambda's stream event-source-mapping settings and the reading knobs of
triggerd.delivery.shards."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from triggerd.config.aws import AwsCredentials
from triggerd.types import SourceConfig

__all__ = ["StartingPosition", "StreamReading"]

StartingPosition = Literal["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"]


class StreamReading(SourceConfig, AwsCredentials):
    """Settings every shard-based stream source shares (Kinesis, DynamoDB Streams)."""

    invocation: ClassVar[Literal["sync", "async"]] = "sync"
    retry_owner: ClassVar[Literal["source", "pipeline"]] = "pipeline"
    default_batch_size: ClassVar[int] = 100
    max_batch_size: ClassVar[int] = 10_000
    default_batching_window_s: ClassVar[float] = 0.0
    batch_per_key: ClassVar[bool] = True

    region: str | None = Field(
        default=None, description="Region of the stream (default: the ARN's, else the daemon's)"
    )
    endpoint_url: str | None = Field(
        default=None,
        description="API endpoint for compatible servers (moto, LocalStack); default: AWS",
    )
    starting_position: StartingPosition = Field(
        default="TRIM_HORIZON",
        description="Where shards without a checkpoint start: TRIM_HORIZON (oldest record), "
        "LATEST (records added from now on) or AT_TIMESTAMP",
    )
    starting_position_timestamp: datetime | float | None = Field(
        default=None,
        description="With AT_TIMESTAMP: epoch seconds or an ISO-8601 time (UTC when it has "
        "no offset)",
    )
    parallelization_factor: int = Field(
        default=1,
        ge=1,
        le=10,
        description="Batches of one shard in flight at once; records are spread over them by "
        "partition key (DynamoDB: item key), so each key stays in order",
    )
    tumbling_window_s: int = Field(
        default=0,
        ge=0,
        le=900,
        description="Tumbling windows of this many seconds (0: none): each event carries "
        "`window`, the `state` the function returned for the window, `shardId`, "
        '`isFinalInvokeForWindow`; the function must return `{"state": {...}}`',
    )
    poll_interval_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="Wait after a GetRecords call that found nothing (AWS polls an idle "
        "shard about once a second)",
    )
    shard_refresh_s: float = Field(
        default=60.0, gt=0, le=3600, description="How often the shard list is read again"
    )
    records_per_call: int = Field(
        default=1000, ge=1, le=10_000, description="Limit of each GetRecords call"
    )
    read_ahead: int = Field(
        default=10_000,
        ge=10,
        le=1_000_000,
        description="Records held in memory per shard that are not checkpointed yet; "
        "reading the shard pauses beyond it",
    )

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError("must be an http(s) URL")
        return value

    @model_validator(mode="after")
    def _starting(self) -> StreamReading:
        if self.aws_session_token is not None and self.aws_access_key_id is None:
            raise ValueError("aws_session_token needs aws_access_key_id and aws_secret_access_key")
        at = self.starting_position == "AT_TIMESTAMP"
        if at and self.starting_position_timestamp is None:
            raise ValueError("starting_position AT_TIMESTAMP needs starting_position_timestamp")
        if not at and self.starting_position_timestamp is not None:
            raise ValueError("starting_position_timestamp needs starting_position AT_TIMESTAMP")
        if self.tumbling_window_s and self.parallelization_factor > 1:
            # triggerd keeps one state per shard and window, carried from one batch to the
            # next (AWS documents no such limit: a documented difference).
            raise ValueError("tumbling_window_s needs parallelization_factor 1")
        return self

    @property
    def starting_epoch(self) -> float | None:
        ts = self.starting_position_timestamp
        if isinstance(ts, datetime):
            # Without an offset: UTC, as AWS reads its times (and triggerd its other ones),
            # never the daemon's local zone (west of UTC, the hours between would be skipped).
            return (ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)).timestamp()
        return ts
