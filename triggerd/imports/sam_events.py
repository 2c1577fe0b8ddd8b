"""Each `Events` entry of a SAM function to a `[[triggers]]` table: the event types with a
triggerd source, their properties in Lambda's event-source-mapping vocabulary, and a warning
for every property that is not carried over."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from triggerd.config.buses import DEFAULT_BUS
from triggerd.imports.common import Translation, one_shard_reader_per_window
from triggerd.imports.fanout import bus_name
from triggerd.imports.sam_api import api_source, http_api_source
from triggerd.imports.sam_functions import FunctionInfo
from triggerd.imports.sam_props import Props, as_bool
from triggerd.imports.sam_resources import Resources, resource
from triggerd.imports.sam_template import Template, Unresolved

#: ESM properties that are trigger keys: SAM name -> (triggerd key, conversion).
TRIGGER_KEYS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "BatchSize": ("batch_size", int),
    "MaximumBatchingWindowInSeconds": ("batching_window_s", float),
    "MaximumRetryAttempts": ("maximum_retry_attempts", int),
    "BisectBatchOnFunctionError": ("bisect_batch_on_function_error", bool),
    "MaximumRecordAgeInSeconds": ("maximum_record_age_s", float),
    "Enabled": ("enabled", bool),
}
#: ESM properties that are source keys (kept when the source type has the option).
SOURCE_KEYS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "StartingPosition": ("starting_position", str),
    "StartingPositionTimestamp": ("starting_position_timestamp", float),
    "ParallelizationFactor": ("parallelization_factor", int),
    "TumblingWindowInSeconds": ("tumbling_window_s", int),
}
#: Source options the translation sets when the event has them, whatever the source type.
OPTIONAL = {target for target, _ in SOURCE_KEYS.values()} | {
    "broker_arn",
    "cluster_arn",
    "group_id",
    "events",
    "prefix",
    "suffix",
    "include",
    "path_style",
}
#: Event types delivered by triggerd's fan-out services (an [sns] topic, an event bus).
FANOUT = {"SNS", "EventBridgeRule", "CloudWatchEvent"}


class EventTranslator:
    def __init__(
        self,
        tpl: Template,
        out: Translation,
        resources: Resources,
        source_fields: Callable[[str], set[str] | None],
    ) -> None:
        self.tpl, self.out, self.res = tpl, out, resources
        self.source_fields = source_fields

    def translate(self, fn: FunctionInfo, event: str, spec: Any) -> dict[str, Any] | None:
        where = f"{fn.where}.Events.{event}"
        if not isinstance(spec, dict):
            self.out.warn(where, "not a mapping: not translated")
            return None
        kind = str(spec.get("Type"))
        for key in spec:
            if key not in ("Type", "Properties"):
                self.out.warn(f"{where}.{key}", "not carried over")
        if kind in FANOUT:
            self._fanout(fn, event, kind, where, spec.get("Properties"))
            return None
        handler = {
            "SQS": self._sqs,
            "S3": self._s3,
            "Schedule": self._schedule,
            "ScheduleV2": self._schedule_v2,
            "Api": lambda kind, props, trigger: api_source(props),
            "HttpApi": lambda kind, props, trigger: http_api_source(props),
            "Kinesis": self._stream,
            "DynamoDB": self._stream,
            "MQ": self._mq,
            "SelfManagedKafka": self._kafka,
            "MSK": self._kafka,
        }.get(kind)
        if handler is None:
            self.out.warn(
                f"{where}.Type", f"event type {kind} has no triggerd source: not translated"
            )
            return None
        props = Props(self.tpl, self.out, f"{where}.Properties", spec.get("Properties"))
        trigger: dict[str, Any] = {"name": f"{fn.name}-{event}", "function": fn.name}
        try:
            source = handler(kind, props, trigger)
        except Unresolved as exc:
            self.out.warn(where, f"not translated: {exc}")
            return None
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            self.out.warn(where, f"not translated: a value is not of the expected kind ({exc!r})")
            return None
        props.finish()
        if source is None:
            return None
        trigger["source"] = self._keep_known(source, f"{where}.Properties")
        return trigger

    def _fanout(self, fn: FunctionInfo, event: str, kind: str, where: str, raw: Any) -> None:
        """SNS, EventBridgeRule and CloudWatchEvent: a subscription of the function on an
        `[sns]` topic, or a rule on an `[[event_buses]]` bus with the function as target."""
        props = Props(self.tpl, self.out, f"{where}.Properties", raw)
        try:
            if kind == "SNS":
                self._sns(fn, props)
            else:
                self._bus_rule(fn, event, props)
        except Unresolved as exc:
            self.out.warn(where, f"not translated: {exc}")
            return
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            self.out.warn(where, f"not translated: a value is not of the expected kind ({exc!r})")
            return
        props.finish()

    def _sns(self, fn: FunctionInfo, props: Props) -> None:
        node = props.node("Topic")
        if node is None:
            raise Unresolved("Topic is required")
        topic = resource(self.tpl, node)
        subscription: dict[str, Any] = {"function": fn.name}
        policy = props.take("FilterPolicy")
        if policy is not None:
            subscription["filter_policy"] = policy
        scope = props.take("FilterPolicyScope")
        if scope is not None:
            subscription["filter_policy_scope"] = str(scope)
        if props.take("SqsSubscription"):
            self.out.warn(
                f"{props.where}.SqsSubscription",
                "noted: messages are delivered to the function directly, without the SQS "
                "queue SAM puts in between",
            )
        for key, why in (
            ("Region", "the topic is served by triggerd whatever its region"),
            ("RedrivePolicy", "a delivery that fails is retried as an asynchronous invocation"),
        ):
            if props.take(key) is not None:
                self.out.warn(f"{props.where}.{key}", f"noted: {why}")
        settings: dict[str, Any] = {}
        if topic.logical_id is not None:
            declared = self.tpl.resources[topic.logical_id].get("Properties") or {}
            dedup = declared.get("ContentBasedDeduplication")
            if dedup is not None and as_bool(self.tpl.resolve(dedup)):
                settings["content_based_deduplication"] = True
        self.out.fanout.subscribe(topic.name, subscription, **settings)

    def _bus_rule(self, fn: FunctionInfo, event: str, props: Props) -> None:
        pattern = props.take("Pattern")
        if not isinstance(pattern, dict):
            raise Unresolved("Pattern is required (an event pattern)")
        bus = bus_name(str(props.take("EventBusName") or DEFAULT_BUS))
        target: dict[str, Any] = {"function": fn.name}
        given = props.take("Target")
        if isinstance(given, dict) and given.get("Id"):
            target["id"] = str(given["Id"])
        raw_input = props.take("Input")
        if raw_input is not None:
            target["input"] = raw_input
        path = props.take("InputPath")
        if path is not None:
            target["input_path"] = str(path)
        transformer = props.take("InputTransformer")
        if isinstance(transformer, dict):
            target["input_transformer"] = {
                "input_paths_map": dict(transformer.get("InputPathsMap") or {}),
                "input_template": str(transformer.get("InputTemplate", "")),
            }
        state = str(props.take("State") or "ENABLED").upper()
        enabled = props.take("Enabled")
        rule: dict[str, Any] = {
            "name": str(props.take("RuleName") or f"{fn.name}-{event}"),
            "event_pattern": pattern,
            "targets": [target],
        }
        if state == "DISABLED" or (enabled is not None and not as_bool(enabled)):
            rule["state"] = "DISABLED"
        self.delivery_retries(props)
        self.out.fanout.rule(bus, rule)

    def _keep_known(self, source: dict[str, Any], where: str) -> dict[str, Any]:
        """`source` without the options the translation adds that its type does not have
        (the overrides may have changed the type); other keys are left for the loader to
        check, so a mistake in the overrides file is an error naming it."""
        fields = self.source_fields(str(source.get("type")))
        if fields is None:
            return source
        kept = {}
        for key, value in source.items():
            if key not in OPTIONAL or key in fields:
                kept[key] = value
            else:
                self.out.warn(where, f"the {source['type']} source has no {key}: left out")
        return kept

    # ---- shared ESM properties -----------------------------------------------------------

    def _esm(self, props: Props, trigger: dict[str, Any], source: dict[str, Any]) -> None:
        for sam, (key, cast) in TRIGGER_KEYS.items():
            value = props.take(sam)
            if value is not None:
                trigger[key] = as_bool(value) if cast is bool else cast(value)
        for sam, (key, cast) in SOURCE_KEYS.items():
            value = props.take(sam)
            if value is not None:
                source[key] = cast(value)
        one_shard_reader_per_window(source, self.out.warn, f"{props.where}.ParallelizationFactor")
        types = props.take("FunctionResponseTypes") or []
        for value in [types] if isinstance(types, str) else types:
            if value == "ReportBatchItemFailures":
                trigger["report_batch_item_failures"] = True
            else:
                where = f"{props.where}.FunctionResponseTypes"
                self.out.warn(where, f"{value!r}: only ReportBatchItemFailures: left out")
        scaling = props.take("ScalingConfig") or {}
        for key in scaling:
            if key == "MaximumConcurrency":
                trigger["maximum_concurrency"] = int(scaling["MaximumConcurrency"])
            else:
                self.out.warn(f"{props.where}.ScalingConfig.{key}", "not carried over")
        self._filters(props, trigger)
        node = props.node("DestinationConfig")
        if isinstance(node, dict):
            self.destination(node, f"{props.where}.DestinationConfig", trigger)

    def _filters(self, props: Props, trigger: dict[str, Any]) -> None:
        criteria = props.take("FilterCriteria") or {}
        where = f"{props.where}.FilterCriteria"
        for key in criteria:
            if key != "Filters":
                self.out.warn(f"{where}.{key}", "not carried over")
        filters: list[Any] = []
        for i, item in enumerate(criteria.get("Filters") or []):
            pattern = item.get("Pattern") if isinstance(item, dict) else None
            if isinstance(pattern, str):
                try:
                    filters.append(json.loads(pattern))
                except json.JSONDecodeError:
                    self.out.warn(f"{where}.Filters.{i}", "not JSON: left out")
            elif isinstance(pattern, dict):
                filters.append(pattern)
            else:
                self.out.warn(f"{where}.Filters.{i}", "no Pattern (a JSON object): left out")
        if filters:
            trigger["filters"] = filters

    def destination(self, node: dict[str, Any], where: str, trigger: dict[str, Any]) -> None:
        for key in node:
            if key != "OnFailure":
                self.out.warn(f"{where}.{key}", "not carried over (on-failure destinations only)")
        failure = node.get("OnFailure") or {}
        if "Destination" in failure:
            trigger["on_failure"] = self.res.destination(
                failure["Destination"], f"{where}.OnFailure", trigger["name"]
            )

    # ---- event types ---------------------------------------------------------------------

    def _sqs(self, kind: str, props: Props, trigger: dict[str, Any]) -> dict[str, Any]:
        res = resource(self.tpl, props.node("Queue"))
        source, enabled = self.res.sqs_source(res, f"{props.where}.Queue")
        self._esm(props, trigger, source)
        if not enabled:  # after Enabled: a queue with no local equivalent is never read
            trigger["enabled"] = False
        if trigger.pop("on_failure", None) is not None:
            self.out.warn(
                f"{props.where}.DestinationConfig",
                "SQS mappings have no on-failure destination (the queue's redrive policy is "
                "it): left out",
            )
        return source

    def _stream(self, kind: str, props: Props, trigger: dict[str, Any]) -> dict[str, Any]:
        res = resource(self.tpl, props.node("Stream"))
        target = "kinesis" if kind == "Kinesis" else "dynamodb_streams"
        source, enabled = self.res.stream_source(target, res, f"{props.where}.Stream")
        self._esm(props, trigger, source)
        if not enabled:  # after Enabled: a stream with no local equivalent is never read
            trigger["enabled"] = False
        return source

    def _mq(self, kind: str, props: Props, trigger: dict[str, Any]) -> dict[str, Any] | None:
        queues = props.take("Queues") or []
        broker = props.node("Broker")
        res = resource(self.tpl, broker) if broker is not None else None
        if res is not None and res.logical_id is not None:
            engine = (self.tpl.resources[res.logical_id].get("Properties") or {}).get("EngineType")
            if isinstance(engine, str) and engine.upper() != "RABBITMQ":
                self.out.warn(f"{props.where}.Broker", f"{engine} brokers have no triggerd source")
                return None
        if not queues:
            raise Unresolved("Queues names no queue")
        if len(queues) > 1:
            self.out.warn(f"{props.where}.Queues", f"only the first queue is read ({queues[0]})")
        source = self.res.broker_source(res, str(queues[0]), f"{props.where}.Broker")
        self._esm(props, trigger, source)
        return source

    def _kafka(self, kind: str, props: Props, trigger: dict[str, Any]) -> dict[str, Any]:
        topics = [str(t) for t in props.take("Topics") or []]
        source: dict[str, Any] = {"type": "kafka", "topics": topics}
        if kind == "MSK":
            res = resource(self.tpl, props.node("Stream"))
            if res.value.startswith("arn:"):  # MSK's events: aws:kafka and the cluster's ARN
                source["cluster_arn"] = res.value
            source.update(self.res.kafka_servers(res.keys(), None, f"{props.where}.Stream"))
        else:
            servers = [str(s) for s in props.take("KafkaBootstrapServers") or []]
            keys = (",".join(servers), *servers)
            source.update(self.res.kafka_servers(keys, servers, props.where))
        group = props.take("ConsumerGroupId")
        for config in ("AmazonManagedKafkaEventSourceConfig", "SelfManagedKafkaEventSourceConfig"):
            group = (props.take(config) or {}).get("ConsumerGroupId", group)
        if group:
            source["group_id"] = str(group)
        self._esm(props, trigger, source)
        return source

    def _s3(self, kind: str, props: Props, trigger: dict[str, Any]) -> dict[str, Any]:
        res = resource(self.tpl, props.node("Bucket"))
        source, enabled = self.res.bucket_source(res, f"{props.where}.Bucket")
        if not enabled:
            trigger["enabled"] = False
        events = props.take("Events") or []
        events = [events] if isinstance(events, str) else [str(e) for e in events]
        prefix = suffix = ""
        rules = ((props.take("Filter") or {}).get("S3Key") or {}).get("Rules") or []
        for rule in rules:
            name = str(rule.get("Name", "")).lower()
            if name == "prefix":
                prefix = str(rule.get("Value", ""))
            elif name == "suffix":
                suffix = str(rule.get("Value", ""))
        if source["type"] == "directory":
            unmatched = _directory_rules(source, events, prefix, suffix)
            for event in unmatched:
                self.out.warn(
                    f"{props.where}.Events", f"{event}: a directory has no such change: left out"
                )
            if unmatched and "events" not in source:  # none left: nothing would match
                trigger["enabled"] = False
                self.out.warn(
                    f"{props.where}.Events", "no event type left: the trigger is disabled"
                )
        else:
            for key, value in (("events", events), ("prefix", prefix), ("suffix", suffix)):
                if value:
                    source.setdefault(key, value)
        return source

    def _schedule(self, kind: str, props: Props, trigger: dict[str, Any]) -> dict[str, Any]:
        source: dict[str, Any] = {"type": "schedule", "expression": str(props.take("Schedule"))}
        self._schedule_common(props, trigger, source, "Enabled")
        return source

    def _schedule_v2(self, kind: str, props: Props, trigger: dict[str, Any]) -> dict[str, Any]:
        source: dict[str, Any] = {
            "type": "schedule",
            "expression": str(props.take("ScheduleExpression")),
            "source_name": "aws.scheduler",
        }
        zone = props.take("ScheduleExpressionTimezone")
        if zone:
            source["timezone"] = str(zone)
        self._schedule_common(props, trigger, source, None)
        return source

    def _schedule_common(
        self, props: Props, trigger: dict[str, Any], source: dict[str, Any], enabled_key: str | None
    ) -> None:
        if enabled_key is not None and "Enabled" in props:
            trigger["enabled"] = as_bool(props.take("Enabled"))
        if "State" in props:
            trigger["enabled"] = str(props.take("State")).upper() == "ENABLED"
        name = props.take("Name")
        if name:
            source["rule_name"] = str(name)
        raw = props.take("Input")
        if raw is not None:
            try:
                value = json.loads(raw) if isinstance(raw, str) else raw
            except json.JSONDecodeError:
                value = None
            if isinstance(value, dict):
                source["input"] = value
            else:
                self.out.warn(f"{props.where}.Input", "not a JSON object: left out")
        self.delivery_retries(props)

    def delivery_retries(self, props: Props) -> None:
        """RetryPolicy and DeadLetterConfig of a rule's target are EventBridge's retries
        of delivering to Lambda, not the function's asynchronous retries (those come from
        EventInvokeConfig / DeadLetterQueue): delivery does not fail locally."""
        for key in ("RetryPolicy", "DeadLetterConfig"):
            if key in props:
                props.node(key)
                self.out.warn(
                    f"{props.where}.{key}",
                    "EventBridge's delivery retries are not simulated (the function's retries "
                    "and on-failure destination come from EventInvokeConfig / DeadLetterQueue)",
                )

    def retry_policy(self, policy: dict[str, Any], where: str, trigger: dict[str, Any]) -> None:
        if "MaximumRetryAttempts" in policy:
            attempts = int(policy["MaximumRetryAttempts"])
            if attempts > 2:
                self.out.warn(
                    f"{where}.MaximumRetryAttempts",
                    f"{attempts} is over the 2 retries of an asynchronous trigger: 2",
                )
            trigger["maximum_retry_attempts"] = min(attempts, 2)
        if "MaximumEventAgeInSeconds" in policy:
            age = float(policy["MaximumEventAgeInSeconds"])
            clamped = min(max(age, 60.0), 21600.0)
            if clamped != age:
                self.out.warn(
                    f"{where}.MaximumEventAgeInSeconds", f"{age:g} out of 60-21600: {clamped:g}"
                )
            trigger["maximum_event_age_s"] = clamped


def _directory_rules(
    source: dict[str, Any], events: list[str], prefix: str, suffix: str
) -> list[str]:
    """S3 event types and key filter rules as a directory source's change kinds and globs;
    returns the event types a directory has no change for (tagging, restore...)."""
    kinds: set[str] = set()
    unmatched: list[str] = []
    for event in events:
        if "ObjectCreated" in event:
            kinds.update(("created", "modified"))
        elif "ObjectRemoved" in event:
            kinds.add("deleted")
        else:
            unmatched.append(event)
    if kinds:
        source.setdefault("events", sorted(kinds))
    if prefix or suffix:
        head, _, rest = prefix.rpartition("/")
        head = f"{head}/" if head else ""
        # Files directly under the prefix's directory, and in its subdirectories.
        globs = [f"{head}{rest}*{suffix}", f"{head}{rest}*/**/*{suffix}"]
        source.setdefault("include", globs)
    return unmatched
