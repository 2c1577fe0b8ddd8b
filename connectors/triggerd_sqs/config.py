"""Config models of the `sqs` source and the `sqs` on-failure destination."""

from __future__ import annotations

import re
from typing import ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from triggerd.config.aws import AwsCredentials
from triggerd.types import DestinationConfig, SourceConfig, TriggerSettings

#: The largest batch AWS allows for a FIFO queue.
FIFO_MAX_BATCH_SIZE = 10
#: The largest batch AWS allows for a standard queue.
STANDARD_MAX_BATCH_SIZE = 10_000

_AWS_HOST = re.compile(r"^(?:sqs\.)?([a-z]{2}(?:-gov)?-[a-z]+-\d)\.(?:queue\.)?amazonaws\.com")


class AwsConnection(AwsCredentials):
    """Where the queue lives and how to sign requests (default: the standard credential chain:
    environment, shared config/credentials files, container and instance roles)."""

    queue_url: str = Field(
        description="The queue's URL, e.g. https://sqs.eu-west-1.amazonaws.com/123456789012/orders"
    )
    region: str | None = Field(
        default=None,
        description="Signing region (default: taken from an AWS queue URL, else the daemon's)",
    )
    endpoint_url: str | None = Field(
        default=None,
        description="SQS API endpoint for SQS-compatible servers (moto, ElasticMQ, LocalStack); "
        "default: the queue URL's scheme and host",
    )

    @field_validator("queue_url")
    @classmethod
    def _queue_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                "must be an http(s) URL such as https://sqs.<region>.amazonaws.com/<account>/<queue>"
            )
        if parts.path.strip("/") == "":
            raise ValueError("has no queue path (…/<account>/<queue>)")
        return value

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError("must be an http(s) URL")
        return value

    @model_validator(mode="after")
    def _token_needs_keys(self) -> AwsConnection:
        if self.aws_session_token is not None and self.aws_access_key_id is None:
            raise ValueError("aws_session_token needs aws_access_key_id and aws_secret_access_key")
        return self

    @property
    def is_fifo(self) -> bool:
        return urlsplit(self.queue_url).path.rstrip("/").endswith(".fifo")

    @property
    def queue_name(self) -> str:
        return urlsplit(self.queue_url).path.rstrip("/").rsplit("/", 1)[-1]

    def region_or(self, default: str) -> str:
        """The configured region, else the one in an AWS queue URL, else `default`."""
        if self.region:
            return self.region
        match = _AWS_HOST.match(urlsplit(self.queue_url).hostname or "")
        return match.group(1) if match else default

    def endpoint(self) -> str | None:
        """The API endpoint: configured, else None for AWS hosts (botocore knows them), else
        the queue URL's scheme and host (any SQS-compatible server)."""
        if self.endpoint_url:
            return self.endpoint_url
        parts = urlsplit(self.queue_url)
        if (parts.hostname or "").endswith(".amazonaws.com"):
            return None
        return f"{parts.scheme}://{parts.netloc}"


class SqsSourceConfig(SourceConfig, AwsConnection):
    """An SQS queue (standard or FIFO) polled like Lambda's SQS event source mapping."""

    invocation: ClassVar[Literal["sync", "async"]] = "sync"
    retry_owner: ClassVar[Literal["source", "pipeline"]] = "source"
    default_batch_size: ClassVar[int] = 10
    default_batching_window_s: ClassVar[float] = 0.0

    type: Literal["sqs"]
    wait_time_s: int = Field(
        default=20, ge=0, le=20, description="Long-poll wait of each ReceiveMessage call"
    )
    visibility_timeout_s: int | None = Field(
        default=None,
        ge=1,
        le=43200,
        description="Visibility timeout asked for on receive (default: the queue's)",
    )
    max_pollers: int = Field(
        default=5,
        ge=1,
        le=100,
        description="Concurrent ReceiveMessage calls; pollers are added while receives come "
        "back full and retire when they come back empty",
    )
    extend_visibility: bool = Field(
        default=True,
        description="Extend the visibility of messages still being processed "
        "(ChangeMessageVisibility heartbeat), so a slow invocation is not redelivered",
    )

    def for_recording(self, trigger: str) -> SourceConfig:
        """Messages a recording held (invisible, their visibility extended while it runs) are
        made visible again at once when it ends; a recording killed before that leaves them
        to the visibility timeout. Short polls (1 s), so that the receives under way when
        it ends finish quickly (`pause_receiving`)."""
        return self.model_copy(update={"nack_visibility_timeout_s": 0, "wait_time_s": 1})

    nack_visibility_timeout_s: int | None = Field(
        default=None,
        ge=0,
        le=43200,
        description="Visibility set on failed messages (0 = retry at once); default: leave "
        "them to the visibility timeout, as AWS does",
    )
    prefetch: int = Field(
        default=0,
        ge=0,
        le=10_000,
        description="Messages the pollers may hold before the pipeline takes them "
        "(default: 10 per poller)",
    )

    @field_validator("prefetch")
    @classmethod
    def _prefetch_holds_a_receive(cls, value: int) -> int:
        if 0 < value < 10:
            raise ValueError(
                "at least 10 (one ReceiveMessage returns up to 10 messages), or 0 for the "
                "default of 10 per poller"
            )
        return value

    window_required_above_batch_size: ClassVar[int | None] = 10

    # AWS allows 10 000 for a standard queue but 10 for FIFO. The trigger checks
    # `batch_size` against this on the instance, so the limit follows the queue URL.
    @property
    def max_batch_size(self) -> int:  # type: ignore[override]
        return FIFO_MAX_BATCH_SIZE if self.is_fifo else STANDARD_MAX_BATCH_SIZE

    @property
    def buffer_capacity(self) -> int:
        return max(self.prefetch or 10 * self.max_pollers, 10)

    def trigger_problem(self, trigger: TriggerSettings) -> str | None:
        """An on-failure destination receives a message only once maximum_retry_attempts ran
        out (an SQS message is never over the event size limit), so without a limit it would
        never receive anything."""
        attempts = trigger.maximum_retry_attempts
        if trigger.on_failure_config is not None and (attempts is None or attempts < 0):
            return (
                "on_failure: an SQS trigger sends a message there only after "
                "maximum_retry_attempts failed attempts, and none is set (or -1, infinite), so "
                "it would never receive anything: set maximum_retry_attempts (0-10000), or "
                "drop on_failure and use the queue's redrive policy"
            )
        return None


class SqsDestinationConfig(DestinationConfig, AwsConnection):
    """Send each on-failure record as the JSON body of one SQS message."""

    type: Literal["sqs"]

    @field_validator("queue_url")
    @classmethod
    def _not_fifo(cls, value: str) -> str:
        if urlsplit(value).path.rstrip("/").endswith(".fifo"):
            raise ValueError("a FIFO queue is not a valid on-failure destination (as in AWS)")
        return value
