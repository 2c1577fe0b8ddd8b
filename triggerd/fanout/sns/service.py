"""The SNS actions: each takes the request's form and returns the result structure that
`wire.response_document` renders, or raises `SnsError`.

A publish is answered only once every delivery it causes is committed to the state store in
one transaction: one `aws:sns` event per matching `lambda` subscription on that function's
Event queue (the Invoke API's: retries, maximum event age, on-failure destination; for FIFO
topics through the per-group holding queue of `triggerd.fanout.sns.fifo`) and one SQS send
per matching `sqs` subscription on the SQS outbox (`triggerd.fanout.sns.sqs`)."""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import orjson

from triggerd.config.sns import FIFO_QUEUE_ON_STANDARD_TOPIC, SnsSettings, topic_name_problem
from triggerd.fanout.sns.fifo import FifoRelay, held_payload, holding_queue
from triggerd.fanout.sns.message import MAX_MESSAGE_BYTES, MAX_SUBJECT, Message, parse_attributes
from triggerd.fanout.sns.policy import FilterPolicy, compile_policy
from triggerd.fanout.sns.signing import Signer
from triggerd.fanout.sns.sqs import SqsOutbox
from triggerd.fanout.sns.topics import Subscription, Topic, config_topics
from triggerd.fanout.sns.wire import SnsError, entries, invalid, members, not_found
from triggerd.state.base import NewEvent, StateStore
from triggerd.state.sqlite import StateStoreError

__all__ = ["ACTIONS", "EventQueues", "SnsService"]

log = logging.getLogger("triggerd.sns")

#: The served actions and the IAM action each is authorized as.
ACTIONS = {
    "CreateTopic": "sns:CreateTopic",
    "GetTopicAttributes": "sns:GetTopicAttributes",
    "ListSubscriptions": "sns:ListSubscriptions",
    "ListSubscriptionsByTopic": "sns:ListSubscriptionsByTopic",
    "ListTopics": "sns:ListTopics",
    "Publish": "sns:Publish",
    "PublishBatch": "sns:Publish",
    "Subscribe": "sns:Subscribe",
    "Unsubscribe": "sns:Unsubscribe",
}
LIST_PAGE = 100
MAX_BATCH = 10
#: SNS FIFO's deduplication window.
DEDUP_WINDOW_S = 300.0
_PRUNE_EVERY_S = 60.0
_BATCH_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


class EventQueues(Protocol):
    """Per function: the name of its durable Event queue (the trigger its events are stored
    under) and a way to wake its invoker once new events are committed."""

    def queue_of(self, function: str) -> str | None: ...

    def wake(self, function: str) -> None: ...


class SnsService:
    def __init__(
        self,
        settings: SnsSettings,
        *,
        region: str,
        account_id: str,
        functions: Mapping[str, str],
        queues: EventQueues,
        state: StateStore,
        outbox: SqsOutbox,
        relay: FifoRelay | None = None,
        signer: Signer | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.region = region
        self.account_id = account_id
        #: Function name -> ARN; looked up at each Subscribe (the daemon's is live: a reload
        #: adds and removes functions).
        self.functions = functions
        self.queues = queues
        self.state = state
        self.outbox = outbox
        self.relay = relay or FifoRelay([], state=state, queues=queues, clock=clock)
        self.clock = clock
        self.signer = signer
        self.topics: dict[str, Topic] = config_topics(
            settings, region=region, account_id=account_id, queue_arns=outbox.queue_arns
        )
        self._sequence = 0
        self._pruned_at = 0.0

    # ---- start-up ----

    async def load(self) -> None:
        """The topics and subscriptions created through the API in earlier runs."""
        rows = await self.state.sns_list()
        for arn, kind, raw in rows:
            if kind == "topic" and arn not in self.topics:
                try:
                    self.topics[arn] = Topic.from_doc(arn, orjson.loads(raw))
                except (KeyError, ValueError) as exc:
                    log.error("sns.topic_unreadable", extra={"topic": arn, "error": str(exc)})
        for arn, kind, raw in rows:
            if kind != "subscription":
                continue
            try:
                sub = Subscription.from_doc(arn, orjson.loads(raw))
            except (SnsError, KeyError, ValueError) as exc:
                # Stored by another version, or its policy no longer compiles: kept in the
                # store, not served.
                log.error(
                    "sns.subscription_unreadable",
                    extra={"subscription": arn, "error": str(exc)[:300]},
                )
                continue
            topic = self.topics.get(sub.topic_arn)
            if topic is None or (sub.protocol != "lambda" and not self._endpoint_known(sub)):
                log.warning("sns.subscription_dropped", extra={"subscription": arn})
                continue
            if not self._endpoint_known(sub):
                # Kept, as SNS keeps a subscription whose function was deleted: listed and
                # removable, its deliveries skipped until a reload brings the function back.
                log.warning(
                    "sns.subscriber_missing", extra={"subscription": arn, "function": sub.target}
                )
            topic.subscriptions[arn] = sub

    def _endpoint_known(self, sub: Subscription) -> bool:
        if sub.protocol == "lambda":
            return sub.target in self.functions
        return sub.target in self.outbox.queue_arns

    # ---- helpers ----

    def topic_arn_of(self, form: Mapping[str, str], action: str) -> str | None:
        """The topic an action is on (the resource it is authorized on); None for ListTopics
        and Unsubscribe (checked once the subscription is found)."""
        if action == "CreateTopic":
            return f"arn:aws:sns:{self.region}:{self.account_id}:{form.get('Name', '')}"
        if action in ("ListTopics", "ListSubscriptions", "Unsubscribe"):
            return None
        return form.get("TopicArn") or form.get("TargetArn") or ""

    def _topic(self, arn: str | None) -> Topic:
        if not arn:
            raise invalid("Invalid parameter: TopicArn")
        topic = self.topics.get(arn)
        if topic is None:
            raise not_found("Topic does not exist")
        return topic

    # ---- actions ----

    async def call(self, action: str, form: Mapping[str, str]) -> dict[str, Any] | None:
        handlers = {
            "CreateTopic": self.create_topic,
            "GetTopicAttributes": self.get_topic_attributes,
            "ListSubscriptions": self.list_subscriptions,
            "ListSubscriptionsByTopic": self.list_subscriptions_by_topic,
            "ListTopics": self.list_topics,
            "Publish": self.publish,
            "PublishBatch": self.publish_batch,
            "Subscribe": self.subscribe,
            "Unsubscribe": self.unsubscribe,
        }
        handler = handlers.get(action)
        if handler is None:
            raise SnsError("InvalidAction", f"Could not find operation {action[:60]}")
        result = await handler(form)
        return result

    async def create_topic(self, form: Mapping[str, str]) -> dict[str, Any]:
        name = form.get("Name", "")
        attrs = {k: v.get("value", "") for k, v in entries(form, "Attributes").items()}
        unknown = set(attrs) - {"FifoTopic", "ContentBasedDeduplication", "DisplayName"}
        if unknown:
            raise invalid(
                f"Invalid parameter: Attributes Reason: Unknown attribute {min(unknown)!r}"
            )
        if any(k.startswith("Tags.member.") for k in form):
            # Tags have no API here to read or act on them: refused, never kept unseen.
            raise invalid("Invalid parameter: Tags: topic tags are not supported by triggerd")
        fifo = _bool_attr(attrs, "FifoTopic")
        cbd = _bool_attr(attrs, "ContentBasedDeduplication")
        problem = topic_name_problem(name, fifo)
        if problem is not None:
            raise invalid(
                f"Invalid parameter: Topic Name: {problem}"
                if name
                else "Invalid parameter: Topic Name"
            )
        if cbd and not fifo:
            raise invalid(
                "Invalid parameter: Attributes Reason: ContentBasedDeduplication is only "
                "available for FIFO topics"
            )
        arn = f"arn:aws:sns:{self.region}:{self.account_id}:{name}"
        existing = self.topics.get(arn)
        if existing is not None:
            # CreateTopic is idempotent for the same attributes, as in SNS.
            if existing.fifo != fifo or existing.content_based_deduplication != cbd:
                raise invalid(
                    "Invalid parameter: Attributes Reason: Topic already exists with different "
                    "attributes"
                )
            return {"TopicArn": arn}
        if len(self.topics) >= self.settings.max_topics:
            raise SnsError("TopicLimitExceeded", "Topic limit exceeded", 403)
        display_name = attrs.get("DisplayName", "")
        if len(display_name) > 100:
            raise invalid("Invalid parameter: DisplayName: at most 100 characters")
        topic = Topic(name, arn, fifo, cbd, display_name=display_name)
        await self.state.sns_put(arn, "topic", topic.doc())
        self.topics[arn] = topic
        log.info("sns.topic_created", extra={"topic": arn})
        return {"TopicArn": arn}

    async def list_topics(self, form: Mapping[str, str]) -> dict[str, Any]:
        arns = sorted(self.topics)
        token = form.get("NextToken")
        start = 0
        if token:
            start = next((i for i, a in enumerate(arns) if a > token), len(arns))
            if token not in self.topics and not token.startswith("arn:aws:sns:"):
                raise invalid("Invalid parameter: NextToken")
        page = arns[start : start + LIST_PAGE]
        more = start + LIST_PAGE < len(arns)
        return {
            "Topics": [{"TopicArn": a} for a in page],
            "NextToken": page[-1] if more else None,
        }

    async def get_topic_attributes(self, form: Mapping[str, str]) -> dict[str, Any]:
        topic = self._topic(form.get("TopicArn"))
        return {"Attributes": ("entries", topic.attributes(self.account_id))}

    async def list_subscriptions_by_topic(self, form: Mapping[str, str]) -> dict[str, Any]:
        topic = self._topic(form.get("TopicArn"))
        return self._subscription_page(topic.subscriptions, form.get("NextToken"))

    async def list_subscriptions(self, form: Mapping[str, str]) -> dict[str, Any]:
        """Every topic's subscriptions, 100 a page (`NextToken`: the last ARN listed)."""
        subs = {a: sub for topic in self.topics.values() for a, sub in topic.subscriptions.items()}
        return self._subscription_page(subs, form.get("NextToken"))

    def _subscription_page(
        self, subs: Mapping[str, Subscription], token: str | None
    ) -> dict[str, Any]:
        arns = sorted(subs)
        start = next((i for i, a in enumerate(arns) if a > token), len(arns)) if token else 0
        page = arns[start : start + LIST_PAGE]
        more = start + LIST_PAGE < len(arns)
        return {
            "Subscriptions": [
                {
                    "SubscriptionArn": s.arn,
                    "Owner": self.account_id,
                    "Protocol": s.protocol,
                    "Endpoint": s.endpoint,
                    "TopicArn": s.topic_arn,
                }
                for s in (subs[a] for a in page)
            ],
            "NextToken": page[-1] if more else None,
        }

    async def subscribe(self, form: Mapping[str, str]) -> dict[str, Any]:
        topic = self._topic(form.get("TopicArn"))
        protocol, endpoint = form.get("Protocol", ""), form.get("Endpoint", "")
        attrs = {k: v.get("value", "") for k, v in entries(form, "Attributes").items()}
        unknown = set(attrs) - {"FilterPolicy", "FilterPolicyScope", "RawMessageDelivery"}
        if unknown:
            raise invalid(
                f"Invalid parameter: Attributes Reason: Unknown attribute {min(unknown)!r}"
            )
        target = self._target(protocol, endpoint)
        raw = _bool_attr(attrs, "RawMessageDelivery")
        if raw and protocol != "sqs":
            raise invalid(
                "Invalid parameter: Attributes Reason: RawMessageDelivery: Invalid value "
                "[true]. Must be false for this protocol."
            )
        policy = None
        if attrs.get("FilterPolicy"):
            policy = compile_policy(
                attrs["FilterPolicy"], attrs.get("FilterPolicyScope", "MessageAttributes")
            )
        if protocol == "sqs" and self.outbox.endpoints[target].fifo and not topic.fifo:
            raise invalid(
                "Invalid parameter: Invalid parameter: Endpoint Reason: "
                + FIFO_QUEUE_ON_STANDARD_TOPIC
            )
        for sub in topic.subscriptions.values():
            if sub.protocol == protocol and sub.endpoint == endpoint:
                # Idempotent for the same attributes, as in SNS; not a silent no-op for
                # others (the caller would think a new filter policy applied).
                if sub.raw != raw or _policy_of(sub.policy) != _policy_of(policy):
                    raise invalid(
                        "Invalid parameter: Attributes Reason: Subscription already exists "
                        "with different attributes"
                    )
                return {"SubscriptionArn": sub.arn}
        if len(topic.subscriptions) >= self.settings.max_subscriptions_per_topic:
            raise SnsError("SubscriptionLimitExceeded", "Subscription limit exceeded", 403)
        sub = Subscription(
            f"{topic.arn}:{uuid.uuid4()}",
            topic.arn,
            protocol,  # type: ignore[arg-type]
            endpoint,
            target,
            raw,
            policy,
        )
        await self.state.sns_put(sub.arn, "subscription", sub.doc())
        topic.subscriptions[sub.arn] = sub
        log.info("sns.subscribed", extra={"topic": topic.arn, "subscription": sub.arn})
        return {"SubscriptionArn": sub.arn}

    def _target(self, protocol: str, endpoint: str) -> str:
        """The function or configured queue a Subscribe's endpoint names."""
        if protocol == "lambda":
            prefix = f"arn:aws:lambda:{self.region}:{self.account_id}:function:"
            name = endpoint.removeprefix(prefix)
            if not endpoint.startswith(prefix) or name not in self.functions:
                raise invalid(
                    f"Invalid parameter: Lambda endpoint ARN: {endpoint[:200]!r} is not a "
                    f"function of this endpoint ({prefix}<name>)"
                )
            return name
        if protocol == "sqs":
            for name, arn in self.outbox.queue_arns.items():
                if arn == endpoint:
                    return name
            raise invalid(
                f"Invalid parameter: SQS endpoint ARN: {endpoint[:200]!r} is not a queue in "
                "sns.sqs_endpoints"
            )
        raise invalid(
            f"Invalid parameter: Protocol: {protocol[:40]!r} is not served here (lambda, sqs)"
        )

    async def unsubscribe(self, form: Mapping[str, str]) -> None:
        arn = form.get("SubscriptionArn", "")
        topic = self.topics.get(arn.rpartition(":")[0])
        sub = topic.subscriptions.get(arn) if topic is not None else None
        if topic is None or sub is None:
            raise not_found("Subscription does not exist")
        if sub.configured:
            raise invalid(
                "Invalid parameter: SubscriptionArn: the subscription is declared in the "
                "config file; remove it there"
            )
        await self.state.sns_delete(arn)
        del topic.subscriptions[arn]
        return None

    # ---- publishing ----

    async def publish(self, form: Mapping[str, str]) -> dict[str, Any]:
        if "PhoneNumber" in form:
            raise invalid("Invalid parameter: PhoneNumber: SMS is not served here")
        topic = self._topic(form.get("TopicArn") or form.get("TargetArn"))
        message = self._message(topic, form)
        stored = await self._fan_out(topic, [message])
        return {"MessageId": stored[0].message_id, "SequenceNumber": stored[0].sequence_number}

    async def publish_batch(self, form: Mapping[str, str]) -> dict[str, Any]:
        topic = self._topic(form.get("TopicArn"))
        items = members(form, "PublishBatchRequestEntries")
        if not items:
            raise SnsError("EmptyBatchRequest", "The batch request doesn't contain any entries")
        if len(items) > MAX_BATCH:
            raise SnsError(
                "TooManyEntriesInBatchRequest",
                f"The batch request contains more entries than permissible ({MAX_BATCH}).",
            )
        ids = [i.get("Id", "") for i in items]
        for entry_id in ids:
            if not entry_id or len(entry_id) > 80 or not set(entry_id) <= _BATCH_ID_CHARS:
                raise SnsError(
                    "InvalidBatchEntryId",
                    "A batch entry id can only contain alphanumeric characters, hyphens and "
                    "underscores. It can be at most 80 letters long.",
                )
        if len(set(ids)) != len(ids):
            raise SnsError(
                "BatchEntryIdsNotDistinct",
                "Two or more batch entries in the request have the same Id.",
            )
        messages: list[Message] = []
        failed: list[dict[str, Any]] = []
        good_ids: list[str] = []
        total = 0
        for entry_id, fields in zip(ids, items, strict=True):
            try:
                message = self._message(topic, fields)
            except SnsError as exc:
                failed.append(
                    {
                        "Id": entry_id,
                        "Code": exc.code,
                        "Message": exc.message,
                        "SenderFault": exc.sender,
                    }
                )
                continue
            total += message.size()
            messages.append(message)
            good_ids.append(entry_id)
        if total > MAX_MESSAGE_BYTES:
            raise SnsError(
                "BatchRequestTooLong",
                f"The length of all the batch messages put together is more than the limit "
                f"({MAX_MESSAGE_BYTES} bytes).",
            )
        if topic.fifo:
            stored = await self._fan_out_fifo_batch(topic, messages, good_ids, failed)
        else:
            stored = await self._fan_out(topic, messages) if messages else []
        return {
            "Successful": [
                {"Id": i, "MessageId": m.message_id, "SequenceNumber": m.sequence_number}
                for i, m in zip(good_ids, stored, strict=False)
            ],
            "Failed": failed,
        }

    async def _fan_out_fifo_batch(
        self,
        topic: Topic,
        messages: list[Message],
        ids: list[str],
        failed: list[dict[str, Any]],
    ) -> list[Message]:
        """A FIFO batch is committed entry by entry (each its own deduplication check); when
        the store fails partway, the entries already committed stay Successful (they will be
        delivered) and this one and the rest are Failed, so the answer says exactly what was
        stored rather than a 500 for a batch that was half stored."""
        stored: list[Message] = []
        for n, message in enumerate(messages):
            try:
                stored.append(await self._fan_out_fifo(topic, message))
            except StateStoreError as exc:
                log.error(
                    "sns.not_stored",
                    extra={"topic": topic.arn, "entries": len(messages) - n, "error": str(exc)},
                )
                failed.extend(
                    {
                        "Id": entry_id,
                        "Code": "InternalError",
                        "Message": "The entry could not be stored",
                        "SenderFault": False,
                    }
                    for entry_id in ids[n:]
                )
                break
        return stored

    def _message(self, topic: Topic, form: Mapping[str, str]) -> Message:
        body = form.get("Message")
        if not body:
            raise invalid("Invalid parameter: Empty message")
        subject = form.get("Subject")
        if subject is not None and (
            not subject
            or len(subject) > MAX_SUBJECT
            or not subject.isprintable()
            or not subject.isascii()
        ):
            raise invalid(
                "Invalid parameter: Subject: it must be ASCII text without line breaks or "
                f"control characters, 1 to {MAX_SUBJECT} characters"
            )
        structure = form.get("MessageStructure")
        if structure is not None and structure != "json":
            raise invalid("Invalid parameter: MessageStructure")
        if structure == "json":
            _check_structure(body)
        attributes = parse_attributes(entries(form, "MessageAttributes", key="Name"))
        group, dedup = form.get("MessageGroupId"), form.get("MessageDeduplicationId")
        if topic.fifo:
            if not group:
                raise invalid(
                    "Invalid parameter: The MessageGroupId parameter is required for FIFO topics"
                )
            if not dedup and not topic.content_based_deduplication:
                raise invalid(
                    "Invalid parameter: The topic should either have ContentBasedDeduplication "
                    "enabled or MessageDeduplicationId provided explicitly"
                )
            for label, value in (("MessageGroupId", group), ("MessageDeduplicationId", dedup)):
                if value is not None and not (
                    0 < len(value) <= 128 and value.isascii() and value.isprintable()
                ):
                    raise invalid(f"Invalid parameter: {label}")
            dedup = dedup or hashlib.sha256(body.encode()).hexdigest()
        elif dedup is not None:
            raise invalid(
                "Invalid parameter: MessageDeduplicationId Reason: The request includes "
                "MessageDeduplicationId parameter that is not valid for this topic type"
            )
        message = Message(
            message_id=str(uuid.uuid4()),
            topic_arn=topic.arn,
            body=body,
            subject=subject,
            attributes=attributes,
            timestamp=self.clock(),
            group_id=group,
            dedup_id=dedup,
            structure=structure,
            signer=self.signer,
        )
        if message.size() > MAX_MESSAGE_BYTES:
            raise invalid("Invalid parameter: Message too long")
        return message

    async def _fan_out(self, topic: Topic, messages: list[Message]) -> list[Message]:
        """Commit every delivery of `messages`; the messages as stored (a FIFO duplicate is
        the earlier message it repeats)."""
        if topic.fifo:
            return [await self._fan_out_fifo(topic, m) for m in messages]
        events = [e for m in messages for e in self._deliveries(topic, m)]
        if events:
            await self.state.enqueue(events)
            self._wake(events)
        return messages

    async def _fan_out_fifo(self, topic: Topic, message: Message) -> Message:
        scope = f"sns-dedup:{topic.arn}"
        dedup_id = message.dedup_id
        assert dedup_id is not None
        now = self.clock()
        await self._prune_dedup(scope, now)
        previous = await self.state.get_checkpoint(scope, dedup_id)
        if previous is not None:
            seen = orjson.loads(previous)
            if now - seen["at"] < DEDUP_WINDOW_S:
                return message.stored_as(seen["id"], seen["seq"])
            await self.state.set_checkpoints(scope, {dedup_id: None})
        # Taken here, after the awaits above and with nothing awaited until the enqueue is
        # issued, so sequence numbers grow in the order the deliveries are queued (the time
        # read before the awaits may be older than a concurrent publish's).
        self._sequence = max(self._sequence + 1, int(self.clock() * 1000) * 10**7)
        seq = f"{self._sequence:020d}"
        message = message.stored_as(message.message_id, seq)
        events = self._deliveries(topic, message)
        mark = orjson.dumps({"at": now, "id": message.message_id, "seq": seq}).decode()
        if not await self.state.enqueue_unless_checkpoint(events, scope, dedup_id, mark):
            seen = orjson.loads(await self.state.get_checkpoint(scope, dedup_id) or "{}")
            return message.stored_as(seen.get("id", message.message_id), seen.get("seq", seq))
        self._wake(events)
        return message

    async def _prune_dedup(self, scope: str, now: float) -> None:
        if now - self._pruned_at < _PRUNE_EVERY_S:
            return
        self._pruned_at = now
        marks = await self.state.list_checkpoints(scope)
        expired: dict[str, str | None] = {
            k: None for k, v in marks.items() if now - orjson.loads(v)["at"] >= DEDUP_WINDOW_S
        }
        if expired:
            await self.state.set_checkpoints(scope, expired)

    def _deliveries(self, topic: Topic, message: Message) -> list[NewEvent]:
        now = self.clock()
        events: list[NewEvent] = []
        for sub in topic.subscriptions.values():
            if sub.policy is not None and not sub.policy.matches(message):
                continue
            rid = str(uuid.uuid4())
            if sub.protocol == "lambda":
                queue = self.queues.queue_of(sub.target)
                if queue is None:
                    # The function is gone (a reload removed it; a subscription made through
                    # the API outlives it): as in SNS, the publish stands for the others and
                    # this delivery fails on the service's side.
                    log.warning(
                        "sns.subscriber_missing",
                        extra={
                            "subscription": sub.arn,
                            "function": sub.target,
                            "message_id": message.message_id,
                        },
                    )
                    continue
                payload = message.lambda_event(region=self.region, subscription_arn=sub.arn)
                if topic.fifo:
                    # Held, and released one per group at a time (triggerd.fanout.sns.fifo).
                    queue = holding_queue(sub.target)
                    payload = held_payload(f"{sub.arn}\x00{message.group_id}", payload)
                events.append(NewEvent(queue, sub.target, payload, rid, now, now))
            else:
                events.append(self.outbox.event(sub, message, self.region, rid, now))
        return events

    def _wake(self, events: list[NewEvent]) -> None:
        for trigger, function in {(e.trigger, e.function) for e in events}:
            if not function:
                self.outbox.wake()
            elif trigger == holding_queue(function):
                self.relay.wake(function)
            else:
                self.queues.wake(function)


def _policy_of(policy: FilterPolicy | None) -> tuple[Any, str] | None:
    return None if policy is None else (policy.policy, policy.scope)


def _check_structure(body: str) -> None:
    """MessageStructure=json: the body is an object of strings with a `default` key."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict) or not all(isinstance(v, str) for v in doc.values()):
        raise invalid("Invalid parameter: Message Structure - JSON message body failed to parse")
    if "default" not in doc:
        raise invalid(
            "Invalid parameter: Message Structure - No default entry in JSON message body"
        )


def _bool_attr(attrs: Mapping[str, str], name: str) -> bool:
    """A true/false attribute (case-insensitive, as SNS reads it); anything else is refused
    rather than read as false."""
    value = attrs.get(name, "false")
    if value.lower() not in ("true", "false"):
        raise invalid(
            f"Invalid parameter: Attributes Reason: {name}: Invalid value [{value[:40]}]. "
            "Must be true or false."
        )
    return value.lower() == "true"
