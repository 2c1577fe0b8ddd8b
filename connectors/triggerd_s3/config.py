"""Config model of the `s3` source, and the S3 notification-config style key and event rules."""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from triggerd.config.aws import AwsCredentials
from triggerd.events.s3 import is_valid_bucket_name
from triggerd.types import SourceConfig

#: Event types an S3 notification configuration can select (without the `s3:` prefix).
KNOWN_EVENTS = frozenset(
    {
        "ObjectCreated:*",
        "ObjectCreated:Put",
        "ObjectCreated:Post",
        "ObjectCreated:Copy",
        "ObjectCreated:CompleteMultipartUpload",
        "ObjectRemoved:*",
        "ObjectRemoved:Delete",
        "ObjectRemoved:DeleteMarkerCreated",
        "ObjectRestore:*",
        "ObjectRestore:Post",
        "ObjectRestore:Completed",
        "ObjectRestore:Delete",
        "ObjectTagging:*",
        "ObjectTagging:Put",
        "ObjectTagging:Delete",
        "ObjectAcl:Put",
        "LifecycleExpiration:*",
        "LifecycleExpiration:Delete",
        "LifecycleExpiration:DeleteMarkerCreated",
        "LifecycleTransition",
        "IntelligentTiering",
        "Replication:*",
        "Replication:OperationFailedReplication",
        "Replication:OperationMissedThreshold",
        "Replication:OperationReplicatedAfterThreshold",
        "Replication:OperationNotTracked",
        "ReducedRedundancyLostObject",
    }
)

_URL_RE = re.compile(r"^https?://[^\s/]+(/\S*)?$")


#: Keys that only one mode reads: set in the other mode they would do nothing.
_MODE_ONLY = {
    "poll": {"poll_interval_s", "page_size", "starting_position"},
    "notifications": {"sqs_endpoint_url", "wait_time_s"},
}


class S3SourceConfig(SourceConfig, AwsCredentials):
    """An S3-compatible bucket: its event notifications read from an SQS queue, or its
    listing polled and diffed against the state store."""

    invocation: ClassVar[Literal["sync", "async"]] = "async"

    type: Literal["s3"]
    bucket: str = Field(description="Bucket name (3-63 characters, S3 naming rules).")
    mode: Literal["notifications", "poll"] = Field(
        default="poll",
        description="`notifications`: read the bucket's event notifications from `queue_url`; "
        "`poll`: list the bucket every `poll_interval_s` and diff against the last listing.",
    )
    queue_url: str | None = Field(
        default=None, description="SQS queue the bucket publishes to (notifications mode)."
    )
    prefix: str = Field(default="", description="Only keys starting with this (S3 filter rule).")
    suffix: str = Field(default="", description="Only keys ending with this (S3 filter rule).")
    events: list[str] = Field(
        default=["s3:ObjectCreated:*", "s3:ObjectRemoved:*"],
        min_length=1,
        validate_default=True,
        description="Event types, as in an S3 notification configuration (`s3:` optional; "
        "`ObjectCreated:*` selects every ObjectCreated event).",
    )
    poll_interval_s: float = Field(
        default=60.0, gt=0, le=86400, description="Poll mode: pause between two listings."
    )
    page_size: int = Field(
        default=1000, ge=1, le=1000, description="Poll mode: MaxKeys of each ListObjectsV2 page."
    )
    starting_position: Literal["LATEST", "TRIM_HORIZON"] = Field(
        default="LATEST",
        description="Poll mode, very first start: LATEST records the objects present as seen "
        "without events; TRIM_HORIZON emits ObjectCreated:Put for each.",
    )
    region: str | None = Field(default=None, description="Region (default: the daemon's).")
    endpoint_url: str | None = Field(
        default=None, description="S3 endpoint (MinIO, Ceph, moto, ...); default AWS."
    )
    sqs_endpoint_url: str | None = Field(
        default=None, description="SQS endpoint for notifications mode (default: endpoint_url)."
    )
    path_style: bool = Field(
        default=False, description="Path-style addressing (http://host/bucket/key)."
    )
    configuration_id: str = Field(
        default="triggerd",
        description="`s3.configurationId` of poll-mode events, and of notifications that "
        "carry none.",
    )
    account_id: str | None = Field(
        default=None, description="Bucket owner principal in events (default: daemon's account)."
    )
    wait_time_s: int = Field(
        default=20, ge=0, le=20, description="Notifications mode: SQS long-poll WaitTimeSeconds."
    )

    @field_validator("bucket")
    @classmethod
    def _valid_bucket(cls, value: str) -> str:
        if not is_valid_bucket_name(value):
            raise ValueError(
                f"{value!r} is not a valid S3 bucket name (3-63 characters: lower-case "
                "letters, digits, '.' and '-', starting and ending with a letter or digit)"
            )
        return value

    @field_validator("events")
    @classmethod
    def _known_events(cls, value: list[str]) -> list[str]:
        out: list[str] = []
        for item in value:
            name = item.removeprefix("s3:")
            if name not in KNOWN_EVENTS:
                raise ValueError(
                    f"unknown S3 event type {item!r} (for example s3:ObjectCreated:*, "
                    "s3:ObjectCreated:Put, s3:ObjectRemoved:*, s3:ObjectRemoved:Delete)"
                )
            out.append(name)
        return out

    @field_validator("endpoint_url", "sqs_endpoint_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not _URL_RE.match(value):
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _mode_keys(self) -> S3SourceConfig:
        if self.mode == "notifications" and not self.queue_url:
            raise ValueError(
                "queue_url is required in notifications mode (the SQS queue the bucket "
                "publishes its event notifications to)"
            )
        if self.mode == "poll" and self.queue_url:
            raise ValueError("queue_url is only used in notifications mode (set mode)")
        other = "notifications" if self.mode == "poll" else "poll"
        unused = sorted(_MODE_ONLY[other] & self.model_fields_set)
        if unused:
            raise ValueError(f"{', '.join(unused)}: only used in {other} mode (set mode)")
        return self

    # ---- rules ---------------------------------------------------------------------------

    def key_matches(self, key: str) -> bool:
        """The prefix and suffix filter rules of an S3 notification configuration."""
        return key.startswith(self.prefix) and key.endswith(self.suffix)

    def event_selected(self, event_name: str) -> bool:
        """`ObjectCreated:Put` is selected by `ObjectCreated:Put` or `ObjectCreated:*`."""
        for rule in self.events:
            if rule == event_name or (rule.endswith("*") and event_name.startswith(rule[:-1])):
                return True
        return False

    def secrets(self) -> list[str]:
        """Secret values to redact from error text."""
        return [
            s.get_secret_value()
            for s in (self.aws_access_key_id, self.aws_secret_access_key, self.aws_session_token)
            if s is not None and s.get_secret_value()
        ]
