"""`[sns]`: the SNS-compatible topics served on the control listener (triggerd.fanout.sns).

Topics and their subscriptions are declared here; the Query API can add more at run time
(kept in the state store). A subscription delivers to a function of this config (`lambda`)
or to an SQS queue served elsewhere (`sqs`, through `endpoint_url`)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import orjson
from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from triggerd.config.aws import AwsCredentials
from triggerd.events.filters import FilterPatternError, compile_filters
from triggerd.types import Model, empty_list

__all__ = [
    "FIFO_QUEUE_ON_STANDARD_TOPIC",
    "TOPIC_NAME",
    "LambdaSubscription",
    "SnsSettings",
    "SqsEndpoint",
    "SqsSubscription",
    "TopicConfig",
    "check_filter_policy",
    "nested_policy",
    "topic_name_problem",
]

#: AWS's rule for topic names (a FIFO topic's name ends in `.fifo`, counted in the 256).
TOPIC_NAME = re.compile(r"^[A-Za-z0-9_-]{1,251}(\.fifo)?$")
#: SNS refuses this subscription (and SQS would refuse every send: no MessageGroupId).
FIFO_QUEUE_ON_STANDARD_TOPIC = "FIFO SQS Queues can not be subscribed to standard SNS topics"
#: AWS's limit on a filter policy's JSON text.
MAX_FILTER_POLICY_CHARS = 256 * 1024
#: SNS's limits on a filter policy's keys and combinations of values.
MAX_FILTER_POLICY_KEYS = 5
MAX_FILTER_POLICY_COMBINATIONS = 150


def topic_name_problem(name: str, fifo: bool) -> str | None:
    """Why `name` is not a valid topic name for a (FIFO) topic; None when it is."""
    if not TOPIC_NAME.match(name) or len(name) > 256:
        return (
            "Topic names must be made up of only uppercase and lowercase ASCII letters, "
            "numbers, underscores, and hyphens, and must be between 1 and 256 characters long."
        )
    if fifo != name.endswith(".fifo"):
        return "Fifo Topic names must end with .fifo and Standard Topic cannot end with .fifo"
    return None


def check_filter_policy(policy: Any) -> dict[str, Any]:
    """The policy as an object (JSON text is parsed), compiled once to find its mistakes;
    ValueError naming the problem."""
    if isinstance(policy, str):
        if len(policy) > MAX_FILTER_POLICY_CHARS:
            raise ValueError("the filter policy is over 256 KB")
        try:
            policy = orjson.loads(policy)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"the filter policy is not JSON: {exc}") from None
    if not isinstance(policy, dict):
        raise ValueError("a filter policy is a JSON object")
    _check_policy_limits(policy)
    try:
        compile_filters([policy], max_filters=1)
    except FilterPatternError as exc:
        raise ValueError(str(exc).removeprefix("filter[0]").lstrip(": ")) from None
    return policy


def _check_policy_limits(policy: dict[str, Any]) -> None:
    """SNS's own rules on top of the pattern language (the engine also serves EventBridge,
    which allows more): at most 5 keys, at most 150 combinations (the product of the number of
    values of each key, summed over `$or` branches), no `wildcard` operator."""
    keys: set[str] = set()

    def walk(node: dict[str, Any], path: str) -> int:
        combinations = 1
        for key, value in node.items():
            if key == "$or" and isinstance(value, list):
                branches = [walk(b, path) for b in value if isinstance(b, dict)]
                combinations *= max(1, sum(branches))
            elif isinstance(value, dict):
                combinations *= walk(value, f"{path}{key}.")
            else:
                keys.add(path + key)
                values = value if isinstance(value, list) else [value]
                if any(_has_wildcard(v) for v in values):
                    raise ValueError(f"{path}{key}: Unrecognized match type wildcard")
                combinations *= max(1, len(values))
        return combinations

    combinations = walk(policy, "")
    if len(keys) > MAX_FILTER_POLICY_KEYS:
        raise ValueError(f"Filter policy can not have more than {MAX_FILTER_POLICY_KEYS} keys")
    if combinations > MAX_FILTER_POLICY_COMBINATIONS:
        raise ValueError(
            f"Filter policy is too complex: {combinations} combinations of values, at most "
            f"{MAX_FILTER_POLICY_COMBINATIONS}"
        )


def nested_policy(policy: dict[str, Any]) -> bool:
    """Whether the policy has nested keys (only scope MessageBody may, as in SNS)."""
    for key, value in policy.items():
        if key == "$or" and isinstance(value, list):
            if any(isinstance(b, dict) and nested_policy(b) for b in value):
                return True
        elif isinstance(value, dict):
            return True
    return False


NESTED_ATTRIBUTE_POLICY = (
    "Filter policy scope MessageAttributes does not support nested filter policy"
)


def _has_wildcard(value: Any) -> bool:
    if isinstance(value, dict):
        return "wildcard" in value or any(_has_wildcard(v) for v in value.values())
    return False


class _SubscriptionBase(Model):
    filter_policy: dict[str, Any] | None = Field(
        None,
        description="AWS's subscription filter policy (an object, or JSON text); messages "
        "that do not match are not delivered",
    )
    filter_policy_scope: Literal["MessageAttributes", "MessageBody"] = Field(
        "MessageAttributes",
        description="What the filter policy matches: the message attributes or the message "
        "body (parsed as JSON)",
    )

    @field_validator("filter_policy", mode="before")
    @classmethod
    def _policy(cls, value: Any) -> Any:
        return None if value is None else check_filter_policy(value)

    @model_validator(mode="after")
    def _scope(self) -> _SubscriptionBase:
        if (
            self.filter_policy is not None
            and self.filter_policy_scope == "MessageAttributes"
            and nested_policy(self.filter_policy)
        ):
            raise ValueError(f"filter_policy: {NESTED_ATTRIBUTE_POLICY}")
        return self


class LambdaSubscription(_SubscriptionBase):
    """Deliver each message to a function of this config as an `aws:sns` event."""

    protocol: Literal["lambda"] = "lambda"
    function: str = Field(description="A function of this config ([functions.NAME])")


class SqsSubscription(_SubscriptionBase):
    """Send each message to an SQS queue (the SNS JSON envelope, or the raw message)."""

    protocol: Literal["sqs"]
    queue: str = Field(
        description="The name of a queue in [[sns.sqs_endpoints]] (its `name`), or its ARN"
    )
    raw_message_delivery: bool = Field(
        False, description="Send the message itself rather than SNS's JSON envelope"
    )


def _protocol(value: Any) -> str:
    """`protocol` picks the model; without one a subscription is to a function."""
    if isinstance(value, dict):
        return str(value.get("protocol", "lambda"))
    return str(getattr(value, "protocol", "lambda"))


Subscription = Annotated[
    Annotated[LambdaSubscription, Tag("lambda")] | Annotated[SqsSubscription, Tag("sqs")],
    Discriminator(_protocol),
]


class TopicConfig(Model):
    name: str = Field(description="The topic's name (FIFO topics end in .fifo)")
    fifo: bool = Field(False, description="A FIFO topic (MessageGroupId, deduplication)")
    content_based_deduplication: bool = Field(
        False,
        description="FIFO: deduplicate by the SHA-256 of the message when no "
        "MessageDeduplicationId is given",
    )
    subscriptions: list[Subscription] = Field(default_factory=empty_list)

    @model_validator(mode="after")
    def _name(self) -> TopicConfig:
        problem = topic_name_problem(self.name, self.fifo)
        if problem is not None:
            raise ValueError(f"name {self.name!r}: {problem}")
        if self.content_based_deduplication and not self.fifo:
            raise ValueError("content_based_deduplication is for FIFO topics only")
        return self


class SqsEndpoint(AwsCredentials):
    """An SQS queue that topics may deliver to (SendMessage through aiobotocore)."""

    name: str = Field(description="The queue's name (its ARN's last part)", pattern=r"^[\w.-]+$")
    queue_url: str = Field(description="The queue's URL")
    endpoint_url: str | None = Field(None, description="SQS endpoint (default: AWS's)")
    region: str | None = Field(None, description="Default: the daemon's region")
    account_id: str | None = Field(
        None,
        pattern=r"^\d{12}$",
        description="The account in the queue's ARN (default: the one in queue_url's path, "
        "as SQS's queue URLs name it, else the daemon's)",
    )

    def _url_parts(self) -> list[str]:
        return [p for p in urlsplit(self.queue_url).path.split("/") if p]

    @property
    def fifo(self) -> bool:
        """A FIFO queue (its name, the URL's last part, ends in `.fifo`)."""
        parts = self._url_parts()
        return bool(parts) and parts[-1].endswith(".fifo")

    def arn(self, region: str, account_id: str) -> str:
        """The queue's ARN: `account_id` (and `region`) only when the config and the URL name
        none (`https://sqs.REGION.amazonaws.com/ACCOUNT/NAME`; moto and LocalStack the same)."""
        parts = self._url_parts()
        url_account = parts[-2] if len(parts) >= 2 and re.fullmatch(r"\d{12}", parts[-2]) else None
        account = self.account_id or url_account or account_id
        return f"arn:aws:sqs:{self.region or region}:{account}:{self.name}"


class SnsSettings(Model):
    topics: list[TopicConfig] = Field(default_factory=empty_list)
    sqs_endpoints: list[SqsEndpoint] = Field(
        default_factory=empty_list,
        description="SQS queues that subscriptions (configured or Subscribe) may deliver to",
    )
    max_topics: int = Field(
        1000, ge=1, le=100_000, description="Topics in all, configured and created"
    )
    max_subscriptions_per_topic: int = Field(100, ge=1, le=12_500_000)
    sqs_retry_max_age_s: float = Field(
        21_600,
        ge=60,
        description="How long an SQS delivery that fails is retried before it is dropped "
        "(with an error log line)",
    )
    signing_key_file: str | None = Field(
        None,
        description="An RSA private key (PEM, 2048 bits or more) that signs each notification "
        "as SNS does, so handlers can verify it against signing_cert_url's certificate "
        "(default: no real signature); needs the sns_http extra",
    )
    signing_cert_url: str | None = Field(
        None,
        pattern=r"^https://[^\s@/]+/\S*$",
        description="Where the key's certificate is served (https); the events' SigningCertUrl",
    )
    signature_version: Literal["1", "2"] = Field(
        "1", description="1: SHA1withRSA, 2: SHA256withRSA, as SNS's SignatureVersion"
    )

    @model_validator(mode="after")
    def _unique(self) -> SnsSettings:
        problems = []
        seen: set[str] = set()
        for i, topic in enumerate(self.topics):
            if topic.name in seen:
                problems.append(f"topics.{i}.name: topic {topic.name!r} is declared twice")
            seen.add(topic.name)
        queues = {q.name: q for q in self.sqs_endpoints}
        if len(queues) != len(self.sqs_endpoints):
            problems.append("sqs_endpoints: two queues have the same name")
        for i, topic in enumerate(self.topics):
            for j, sub in enumerate(topic.subscriptions):
                if not isinstance(sub, SqsSubscription):
                    continue
                queue = queues.get(sub.queue.rsplit(":", 1)[-1])
                where = f"topics.{i}.subscriptions.{j}.queue"
                if queue is None:
                    problems.append(f"{where}: {sub.queue!r} is not in sns.sqs_endpoints")
                elif queue.fifo and not topic.fifo:
                    problems.append(f"{where}: {FIFO_QUEUE_ON_STANDARD_TOPIC}")
        if (self.signing_key_file is None) != (self.signing_cert_url is None):
            problems.append("signing_key_file and signing_cert_url go together")
        if "signature_version" in self.model_fields_set and self.signing_key_file is None:
            problems.append(
                "signature_version: only notifications signed with signing_key_file have one "
                "(without it Signature is a digest and SignatureVersion is always 1)"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self
