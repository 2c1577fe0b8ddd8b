"""Config model of the `dynamodb_streams` source (Lambda's DynamoDB Streams event source
mapping)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from triggerd.config.streams import StreamReading

__all__ = ["DynamoDBStreamsSourceConfig"]

_TABLE = re.compile(r"^[a-zA-Z0-9_.-]{3,255}$")
_STREAM_ARN = re.compile(
    r"^arn:aws[a-z-]*:dynamodb:([a-z0-9-]+):(\d{12}):table/([a-zA-Z0-9_.-]{3,255})/stream/\S+$"
)


class DynamoDBStreamsSourceConfig(StreamReading):
    """A DynamoDB table's stream, read shard by shard like Lambda's DynamoDB Streams event
    source mapping (daemons sharing a PostgreSQL state store split its shards by leases)."""

    type: Literal["dynamodb_streams"]
    stream: str = Field(description="The stream's ARN, or a table name (its latest stream is read)")

    @field_validator("stream")
    @classmethod
    def _stream(cls, value: str) -> str:
        if not (_TABLE.match(value) or _STREAM_ARN.match(value)):
            raise ValueError(
                "must be a table name (3-255 of a-z A-Z 0-9 _ . -) or a stream ARN "
                "arn:aws:dynamodb:<region>:<account>:table/<table>/stream/<label>"
            )
        return value

    @model_validator(mode="after")
    def _no_at_timestamp(self) -> DynamoDBStreamsSourceConfig:
        if self.starting_position == "AT_TIMESTAMP":
            raise ValueError("starting_position: DynamoDB Streams has TRIM_HORIZON and LATEST only")
        if self.records_per_call > 1000:
            raise ValueError("records_per_call: DynamoDB Streams' GetRecords returns at most 1000")
        return self

    @property
    def stream_arn(self) -> str | None:
        return self.stream if _STREAM_ARN.match(self.stream) else None

    @property
    def table_name(self) -> str:
        match = _STREAM_ARN.match(self.stream)
        return match.group(3) if match else self.stream

    def region_or(self, default: str) -> str:
        if self.region:
            return self.region
        match = _STREAM_ARN.match(self.stream)
        return match.group(1) if match else default
