"""Config model of the `kinesis` source (Lambda's Kinesis event source mapping)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from triggerd.config.streams import StreamReading

__all__ = ["KinesisSourceConfig"]

_STREAM_NAME = re.compile(r"^[a-zA-Z0-9_.-]{1,128}$")
_STREAM_ARN = re.compile(
    r"^arn:aws[a-z-]*:kinesis:([a-z0-9-]+):(\d{12}):stream/([a-zA-Z0-9_.-]{1,128})$"
)


class KinesisSourceConfig(StreamReading):
    """A Kinesis data stream, read shard by shard like Lambda's Kinesis event source mapping
    (daemons sharing a PostgreSQL state store split its shards by leases)."""

    type: Literal["kinesis"]
    stream: str = Field(description="The stream's name or ARN")
    invoke_identity_arn: str | None = Field(
        default=None,
        description="`invokeIdentityArn` of each record (AWS: the mapping's execution role); "
        "default arn:aws:iam::<account>:role/triggerd",
    )

    @field_validator("stream")
    @classmethod
    def _stream(cls, value: str) -> str:
        if not (_STREAM_NAME.match(value) or _STREAM_ARN.match(value)):
            raise ValueError(
                "must be a stream name (1-128 of a-z A-Z 0-9 _ . -) or "
                "arn:aws:kinesis:<region>:<account>:stream/<name>"
            )
        return value

    @property
    def stream_name(self) -> str:
        match = _STREAM_ARN.match(self.stream)
        return match.group(3) if match else self.stream

    @property
    def stream_arn(self) -> str | None:
        return self.stream if _STREAM_ARN.match(self.stream) else None

    def region_or(self, default: str) -> str:
        if self.region:
            return self.region
        match = _STREAM_ARN.match(self.stream)
        return match.group(1) if match else default
