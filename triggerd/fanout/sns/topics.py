"""Topics and subscriptions: those the config declares and those created through the API
(kept in the state store's `sns_resources`, loaded again at start)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from triggerd.config.sns import LambdaSubscription, SnsSettings, TopicConfig
from triggerd.fanout.sns.policy import FilterPolicy, compile_policy

__all__ = ["Subscription", "Topic", "config_topics"]

_NS = uuid.UUID("0b7f3e9a-5c1d-4b2e-9a44-7e1c2d3f4a5b")


@dataclass(slots=True)
class Subscription:
    arn: str
    topic_arn: str
    protocol: Literal["lambda", "sqs"]
    #: The function's ARN, or the queue's.
    endpoint: str
    #: The function's name, or the queue's name in [[sns.sqs_endpoints]].
    target: str
    raw: bool = False
    policy: FilterPolicy | None = None
    configured: bool = False

    def attributes(self, owner: str) -> dict[str, str]:
        attrs = {
            "SubscriptionArn": self.arn,
            "TopicArn": self.topic_arn,
            "Protocol": self.protocol,
            "Endpoint": self.endpoint,
            "Owner": owner,
            "RawMessageDelivery": "true" if self.raw else "false",
            "PendingConfirmation": "false",
            "ConfirmationWasAuthenticated": "true",
        }
        if self.policy is not None:
            attrs["FilterPolicy"] = orjson.dumps(self.policy.policy).decode()
            attrs["FilterPolicyScope"] = self.policy.scope
        return attrs

    def doc(self) -> bytes:
        """What the state store keeps of an API-created subscription."""
        return orjson.dumps(
            {
                "topic_arn": self.topic_arn,
                "protocol": self.protocol,
                "endpoint": self.endpoint,
                "target": self.target,
                "raw": self.raw,
                "policy": None if self.policy is None else self.policy.policy,
                "scope": None if self.policy is None else self.policy.scope,
            }
        )

    @classmethod
    def from_doc(cls, arn: str, doc: dict[str, Any]) -> Subscription:
        policy = doc.get("policy")
        return cls(
            arn=arn,
            topic_arn=doc["topic_arn"],
            protocol=doc["protocol"],
            endpoint=doc["endpoint"],
            target=doc["target"],
            raw=bool(doc.get("raw")),
            policy=None if policy is None else compile_policy(policy, doc["scope"]),
        )


@dataclass(slots=True)
class Topic:
    name: str
    arn: str
    fifo: bool = False
    content_based_deduplication: bool = False
    configured: bool = False
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    #: CreateTopic's DisplayName attribute (shown by GetTopicAttributes).
    display_name: str = ""

    def attributes(self, owner: str) -> dict[str, str]:
        subs = len(self.subscriptions)
        attrs = {
            "TopicArn": self.arn,
            "Owner": owner,
            "DisplayName": self.display_name,
            "SubscriptionsConfirmed": str(subs),
            "SubscriptionsPending": "0",
            "SubscriptionsDeleted": "0",
            "Policy": orjson.dumps(
                {
                    "Version": "2008-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"AWS": "*"},
                            "Action": ["SNS:Publish", "SNS:Subscribe"],
                            "Resource": self.arn,
                            "Condition": {"StringEquals": {"AWS:SourceOwner": owner}},
                        }
                    ],
                }
            ).decode(),
            "EffectiveDeliveryPolicy": orjson.dumps(
                {"http": {"defaultHealthyRetryPolicy": {"numRetries": 3}}}
            ).decode(),
        }
        if self.fifo:
            attrs["FifoTopic"] = "true"
            attrs["ContentBasedDeduplication"] = (
                "true" if self.content_based_deduplication else "false"
            )
        return attrs

    def doc(self) -> bytes:
        return orjson.dumps(
            {
                "name": self.name,
                "fifo": self.fifo,
                "cbd": self.content_based_deduplication,
                "display_name": self.display_name,
            }
        )

    @classmethod
    def from_doc(cls, arn: str, doc: dict[str, Any]) -> Topic:
        return cls(
            doc["name"],
            arn,
            bool(doc["fifo"]),
            bool(doc["cbd"]),
            display_name=str(doc.get("display_name", "")),
        )


def config_topics(
    settings: SnsSettings, *, region: str, account_id: str, queue_arns: dict[str, str]
) -> dict[str, Topic]:
    """The configured topics, with subscription ARNs that stay the same across restarts."""
    topics: dict[str, Topic] = {}
    for tcfg in settings.topics:
        arn = f"arn:aws:sns:{region}:{account_id}:{tcfg.name}"
        topic = Topic(tcfg.name, arn, tcfg.fifo, tcfg.content_based_deduplication, True)
        for index, scfg in enumerate(tcfg.subscriptions):
            sub = _config_subscription(tcfg, index, scfg, arn, region, account_id, queue_arns)
            topic.subscriptions[sub.arn] = sub
        topics[arn] = topic
    return topics


def _config_subscription(
    tcfg: TopicConfig,
    index: int,
    scfg: Any,
    topic_arn: str,
    region: str,
    account_id: str,
    queue_arns: dict[str, str],
) -> Subscription:
    sub_id = uuid.uuid5(_NS, f"{topic_arn}\x00{index}\x00{scfg.protocol}")
    policy = None
    if scfg.filter_policy is not None:
        policy = compile_policy(scfg.filter_policy, scfg.filter_policy_scope)
    if isinstance(scfg, LambdaSubscription):
        endpoint = f"arn:aws:lambda:{region}:{account_id}:function:{scfg.function}"
        return Subscription(
            f"{topic_arn}:{sub_id}",
            topic_arn,
            "lambda",
            endpoint,
            scfg.function,
            False,
            policy,
            True,
        )
    queue = scfg.queue.rsplit(":", 1)[-1]
    return Subscription(
        f"{topic_arn}:{sub_id}",
        topic_arn,
        "sqs",
        queue_arns[queue],
        queue,
        scfg.raw_message_delivery,
        policy,
        True,
    )
