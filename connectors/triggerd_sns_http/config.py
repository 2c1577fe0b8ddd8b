"""Config model of the `sns_http` source: a route on the public listener that a real SNS topic
delivers to (an HTTP/HTTPS subscription), verified and then invoked with the `aws:sns` event."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from triggerd.types import InputFile, SourceConfig, empty_list


class SnsHttpSourceConfig(SourceConfig):
    """Notifications from real SNS topics, verified, then invoked asynchronously."""

    invocation: ClassVar[Literal["sync", "async"]] = "async"

    type: Literal["sns_http"]
    path: str = Field(description="The route's path on the public listener, e.g. /sns/orders")
    topics: list[str] = Field(
        default_factory=empty_list,
        description="Topic ARNs whose messages are accepted (default: any topic; anyone can "
        "subscribe your endpoint to a topic of theirs, so list yours)",
    )
    cert_hosts: list[str] = Field(
        default_factory=empty_list,
        description="Hosts (host or host:port) SigningCertURL and SubscribeURL may name, https "
        "only; default: sns.<region>.amazonaws.com of the message's topic",
    )
    confirm_subscriptions: bool = Field(
        True,
        description="Confirm a SubscriptionConfirmation by GET of its SubscribeURL (false: "
        "log it and answer 200; confirm by hand)",
    )
    ca_file: InputFile | None = Field(
        None,
        description="PEM CA bundle trusted for the HTTPS fetches of certificates and "
        "SubscribeURLs (default: the system's)",
    )
    fetch_timeout_s: float = Field(
        5.0, gt=0, le=60, description="Timeout of a certificate fetch or a confirmation GET"
    )
    cert_cache_s: float = Field(
        3600.0, ge=0, description="How long a fetched signing certificate is kept"
    )
    max_body_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        le=1024 * 1024 * 4,
        description="Largest request body accepted (an SNS message is at most 256 KB, "
        "more once JSON-escaped)",
    )
    accept_timeout_s: float = Field(
        10.0,
        gt=0,
        description="How long a notification waits to be durably queued before the answer is "
        "503 (SNS then retries)",
    )
    queue_size: int = Field(1000, ge=1, description="Notifications waiting to be queued")

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/") or "{" in value:
            raise ValueError("a fixed path starting with /")
        return value

    @field_validator("topics")
    @classmethod
    def _topics(cls, value: list[str]) -> list[str]:
        for arn in value:
            if not arn.startswith("arn:aws") or ":sns:" not in arn:
                raise ValueError(f"{arn!r} is not an SNS topic ARN")
        return value

    def for_recording(self, trigger: str) -> SourceConfig:
        """A recording confirms no subscription (it logs the confirmation request): it must
        not change the topic's subscriptions."""
        return self.model_copy(update={"confirm_subscriptions": False})

    def http_routes(self) -> list[tuple[str, str]]:
        return [("POST", self.path)]
