"""A serverless.yml function's `events` as `[[triggers]]`: sqs, s3, schedule, http, httpApi
here; stream, kafka and rabbitmq in `serverless_streams`; sns and eventBridge, whose services
triggerd does not have yet, each in one function that says so."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from triggerd.imports.common import file_destination
from triggerd.imports.fanout import bus_name, topic_name
from triggerd.imports.serverless_context import SlsContext
from triggerd.imports.serverless_functions import FunctionPlan, sqs_url
from triggerd.imports.serverless_streams import (
    batch_settings,
    kafka_trigger,
    rabbitmq_trigger,
    stream_trigger,
)

__all__ = ["translate_events"]

#: A trigger in the making: its table, or None when the event was not carried over.
Trigger = dict[str, Any] | None
Handler = Callable[[SlsContext, FunctionPlan, Any, str], list[dict[str, Any]]]

_RULE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_STAGE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_HTTP_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "ANY"})


def translate_events(ctx: SlsContext, plan: FunctionPlan, events: Any) -> list[dict[str, Any]]:
    """The triggers of one function, each named `<function>-<event type>-<index>`."""
    where = f"functions.{plan.name}.events"
    if events is None:
        return []
    if not isinstance(events, list):
        ctx.warn(where, "must be a list: not carried over")
        return []
    triggers: list[dict[str, Any]] = []
    for i, event in enumerate(events):
        at = f"{where}[{i}]"
        if not isinstance(event, dict) or len(event) != 1:
            ctx.warn(at, "an event is a mapping with one key, its type: not carried over")
            continue
        (kind, value), *_ = event.items()
        handler = _HANDLERS.get(kind)
        if handler is None:
            ctx.warn(f"{at}.{kind}", f"{kind} events have no triggerd source: not carried over")
            continue
        ctx.unmapped.clear()
        for n, trig in enumerate(handler(ctx, plan, value, f"{at}.{kind}")):
            suffix = f"-{n}" if n else ""
            named = {"name": f"{plan.name}-{kind.lower()}-{i}{suffix}", **trig}
            ctx.settle(named, f"{at}.{kind}")
            triggers.append(named)
        ctx.unmapped.clear()
    if plan.async_settings.keys and not plan.async_settings.used:
        ctx.warn(
            f"functions.{plan.name}",
            "maximumRetryAttempts / maximumEventAge / destinations apply to asynchronous "
            "events, and this function has none here (Invoke API Event calls use the daemon's "
            "defaults)",
        )
    return triggers


def _async(plan: FunctionPlan, trig: dict[str, Any]) -> dict[str, Any]:
    """An asynchronous trigger with the function's async settings."""
    plan.async_settings.used = plan.async_settings.used or bool(plan.async_settings.keys)
    return {**trig, **plan.async_settings.keys}


def _enabled(ctx: SlsContext, value: dict[str, Any], where: str, trig: dict[str, Any]) -> None:
    enabled = ctx.boolean(value.get("enabled"), f"{where}.enabled")
    if enabled is False:
        trig["enabled"] = False


# --------------------------------------------------------------------------------------------
# sqs


def _sqs(ctx: SlsContext, plan: FunctionPlan, value: Any, where: str) -> list[dict[str, Any]]:
    body: dict[str, Any] = value if isinstance(value, dict) and "arn" in value else {"arn": value}
    arn_where = f"{where}.arn" if body is value else where
    ref = ctx.reference(body["arn"], "queue", arn_where)
    if ref is None:
        return []
    url = sqs_url(ref.arn)
    source = ctx.local_source(ref, {"type": "sqs", "queue_url": url} if url else None, "sqs")
    if source is not None and source.get("type") == "rabbitmq" and ref.name:
        source = {"queue": ref.name, **source}  # the queue of the same name, as SAM's side
    if source is None:
        ctx.warn(
            arn_where,
            f"{ref.text}: no queue URL is known for it: map it in the overrides file "
            "(resources): not carried over",
        )
        return []
    trig: dict[str, Any] = {"function": plan.name, "source": dict(source)}
    if body is value:
        batch_settings(ctx, body, where, trig, window_key="maximumBatchingWindow")
        concurrency = ctx.integer(body.get("maximumConcurrency"), f"{where}.maximumConcurrency")
        if concurrency is not None:
            trig["maximum_concurrency"] = concurrency
        ctx.rest(body, ("arn", "maximumConcurrency", *_BATCH_KEYS), where)
    return [trig]


_BATCH_KEYS = (
    "batchSize",
    "maximumBatchingWindow",
    "functionResponseType",
    "filterPatterns",
    "enabled",
)


# --------------------------------------------------------------------------------------------
# s3


def _s3(ctx: SlsContext, plan: FunctionPlan, value: Any, where: str) -> list[dict[str, Any]]:
    body: dict[str, Any] = value if isinstance(value, dict) else {"bucket": value}
    ref = ctx.reference(body.get("bucket"), "bucket", f"{where}.bucket" if body is value else where)
    if ref is None:
        return []
    default = {"type": "s3", "bucket": ref.name} if ref.name else None
    source = ctx.local_source(ref, default, "s3")
    if source is None:
        ctx.warn(where, f"{ref.text}: no bucket name is known: map it in the overrides file")
        return []
    event = ctx.text(body.get("event"), f"{where}.event") or "s3:ObjectCreated:*"
    prefix, suffix = _rules(ctx, body.get("rules"), f"{where}.rules")
    trig: dict[str, Any] = {"function": plan.name, "source": source}
    if source.get("type") == "directory":
        source.update(_directory_selection(event, prefix, suffix))
        if not source["events"]:  # tagging, restore...: a directory never changes so
            trig["enabled"] = False
            ctx.warn(
                f"{where}.event",
                f"{event}: a directory has no such change: the trigger is disabled",
            )
            source["events"] = ["created"]  # a valid table, for the disabled trigger
    else:
        source["events"] = [event]
        if prefix:
            source["prefix"] = prefix
        if suffix:
            source["suffix"] = suffix
    for key in ("existing", "forceDeploy"):
        if key in body:
            ctx.warn(f"{where}.{key}", "noted: triggerd reads the bucket, it never creates one")
    ctx.rest(body, ("bucket", "event", "rules", "existing", "forceDeploy"), where)
    return [_async(plan, trig)]


def _rules(ctx: SlsContext, rules: Any, where: str) -> tuple[str, str]:
    prefix = suffix = ""
    if rules is None:
        return prefix, suffix
    if not isinstance(rules, list):
        ctx.warn(where, "must be a list of {prefix} / {suffix}: not carried over")
        return prefix, suffix
    for i, rule in enumerate(rules):
        if isinstance(rule, dict) and set(rule) <= {"prefix", "suffix"}:
            prefix = ctx.text(rule.get("prefix"), f"{where}[{i}].prefix") or prefix
            suffix = ctx.text(rule.get("suffix"), f"{where}[{i}].suffix") or suffix
        else:
            ctx.warn(f"{where}[{i}]", "only prefix and suffix rules exist: not carried over")
    return prefix, suffix


def _directory_selection(event: str, prefix: str, suffix: str) -> dict[str, Any]:
    """An S3 event type and key rules as a `directory` source's `events` and `include`."""
    name = event.removeprefix("s3:")
    kinds: list[str] = []
    if name.startswith("ObjectCreated:"):
        kinds = ["created", "modified"]
    elif name.startswith("ObjectRemoved:"):
        kinds = ["deleted"]
    out: dict[str, Any] = {"events": kinds}
    if prefix:
        out["include"] = [f"{prefix}*{suffix}", f"{prefix}*/**/*{suffix}"]
    elif suffix:
        # S3 key suffixes match at any depth, as SAM's side gives them.
        out["include"] = [f"*{suffix}", f"*/**/*{suffix}"]
    return out


# --------------------------------------------------------------------------------------------
# schedule


def _schedule(ctx: SlsContext, plan: FunctionPlan, value: Any, where: str) -> list[dict[str, Any]]:
    body: dict[str, Any] = value if isinstance(value, dict) else {"rate": value}
    rates = body.get("rate")
    expressions = rates if isinstance(rates, list) else [rates]
    source: dict[str, Any] = {"type": "schedule"}
    trig: dict[str, Any] = {"function": plan.name}
    _enabled(ctx, body, where, trig)
    if "input" in body:
        given = body["input"]
        if isinstance(given, str):
            try:
                given = json.loads(given)
            except ValueError:
                given = None
        data = ctx.plain(given, f"{where}.input")
        if isinstance(data, dict):
            source["input"] = data
        elif data is not None or given is None:
            ctx.warn(f"{where}.input", "must be a JSON object: not carried over")
    name = ctx.text(body.get("name"), f"{where}.name")
    if name and _RULE_NAME.match(name):
        source["rule_name"] = name
    elif name:
        ctx.warn(f"{where}.name", f"{name!r} is not a rule name (1-64 of A-Za-z0-9._-)")
    if body.get("method") == "scheduler":
        source["source_name"] = "aws.scheduler"
    zone = ctx.text(body.get("timezone"), f"{where}.timezone")
    if zone:
        source["timezone"] = zone
    ctx.rest(body, ("rate", "enabled", "input", "name", "method", "timezone"), where)
    out = []
    for n, expression in enumerate(expressions):
        text = ctx.text(expression, f"{where}.rate[{n}]" if isinstance(rates, list) else where)
        if text:
            out.append(_async(plan, {**trig, "source": {**source, "expression": text}}))
    return out


# --------------------------------------------------------------------------------------------
# http (API Gateway REST, payload 1.0) and httpApi (HTTP API, payload 2.0 by default)


def _http(ctx: SlsContext, plan: FunctionPlan, value: Any, where: str) -> list[dict[str, Any]]:
    body = _route(ctx, value, where, short_form="GET users/create")
    if body is None:
        return []
    source = _webhook(ctx, body, where, payload="1.0")
    if source is None:
        return []
    if _STAGE.match(ctx.stage):
        source["stage"] = ctx.stage
    cors = body.get("cors")
    if cors:
        mapped = _cors(ctx, cors, f"{where}.cors", rest_api=True)
        if mapped:
            source["cors"] = mapped
    integration = body.get("integration")
    if integration not in (None, "lambda-proxy", "aws_proxy", "AWS_PROXY"):
        ctx.warn(
            f"{where}.integration",
            f"{integration}: only the Lambda proxy integration exists locally (the function "
            "gets the proxy event)",
        )
    ctx.rest(body, ("path", "method", "cors", "integration"), where)
    return [{"function": plan.name, "source": source}]


def _http_api(ctx: SlsContext, plan: FunctionPlan, value: Any, where: str) -> list[dict[str, Any]]:
    if value == "*":
        value = {"method": "ANY", "path": "/{proxy+}"}
    body = _route(ctx, value, where, short_form="GET /users")
    if body is None:
        return []
    settings = ctx.provider.get("httpApi")
    settings = settings if isinstance(settings, dict) else {}
    payload = ctx.text(settings.get("payload"), "provider.httpApi.payload") or "2.0"
    if payload not in ("1.0", "2.0"):
        ctx.warn("provider.httpApi.payload", f"{payload!r} is not 1.0 or 2.0: 2.0 is used")
        payload = "2.0"
    source = _webhook(ctx, body, where, payload=payload)
    if source is None:
        return []
    if settings.get("cors"):
        mapped = _cors(ctx, settings["cors"], "provider.httpApi.cors", rest_api=False)
        if mapped:
            source["cors"] = mapped
    ctx.rest(body, ("path", "method"), where)
    return [{"function": plan.name, "source": source}]


def _route(ctx: SlsContext, value: Any, where: str, short_form: str) -> dict[str, Any] | None:
    if isinstance(value, dict):
        return value
    text = ctx.text(value, where)
    if text is None:
        return None
    method, _, path = text.strip().partition(" ")
    if not path:
        ctx.warn(where, f"{text!r} is not `METHOD path` (e.g. {short_form}): not carried over")
        return None
    return {"method": method, "path": path.strip()}


def _webhook(
    ctx: SlsContext, body: dict[str, Any], where: str, payload: str
) -> dict[str, Any] | None:
    method = (ctx.text(body.get("method"), f"{where}.method") or "ANY").upper()
    if method == "*":
        method = "ANY"
    path = ctx.text(body.get("path"), f"{where}.path")
    if path is None or method not in _HTTP_METHODS:
        ctx.warn(where, "needs a path and an HTTP method: not carried over")
        return None
    return {
        "type": "webhook",
        "method": method,
        "path": "/" + path.strip().lstrip("/"),
        "payload_format": payload,
    }


def _cors(ctx: SlsContext, cors: Any, where: str, rest_api: bool) -> dict[str, Any] | None:
    """`cors: true`, or the framework's object form (REST: origin(s), headers,
    allowCredentials, maxAge; HTTP API: allowedOrigins, allowedHeaders, allowedMethods,
    allowCredentials, exposedResponseHeaders, maxAge), as the webhook's CORS settings."""
    if cors is True:
        return {"allow_origins": ["*"]}
    if not isinstance(cors, dict):
        ctx.warn(where, "must be true or a mapping: not carried over")
        return None
    keys = (
        {
            "origin": "allow_origins",
            "origins": "allow_origins",
            "headers": "allow_headers",
            "methods": "allow_methods",
        }
        if rest_api
        else {
            "allowedOrigins": "allow_origins",
            "allowedHeaders": "allow_headers",
            "allowedMethods": "allow_methods",
            "exposedResponseHeaders": "expose_headers",
        }
    )
    out: dict[str, Any] = {}
    for key, target in keys.items():
        if key in cors:
            given = cors[key]
            items = given if isinstance(given, list) else [given]
            texts = [t for t in (ctx.text(x, f"{where}.{key}") for x in items) if t]
            if texts:
                out[target] = texts
    credentials = ctx.boolean(cors.get("allowCredentials"), f"{where}.allowCredentials")
    if credentials is not None:
        out["allow_credentials"] = credentials
    age = ctx.integer(cors.get("maxAge"), f"{where}.maxAge")
    if age is not None:
        out["max_age_s"] = age
    ctx.rest(cors, (*keys, "allowCredentials", "maxAge"), where)
    out.setdefault("allow_origins", ["*"])
    return out


# --------------------------------------------------------------------------------------------
# sns and eventBridge: triggerd's own topics and buses (served on the control listener)


def _sns(ctx: SlsContext, plan: FunctionPlan, value: Any, where: str) -> list[dict[str, Any]]:
    """A subscription of the function on an `[sns]` topic: `topicName`, or the topic's
    `arn` (a name alone is a topic the framework creates)."""
    body: dict[str, Any] = value if isinstance(value, dict) else {"arn": value}
    name = ctx.text(body.get("topicName"), f"{where}.topicName")
    if name is None:
        ref = ctx.reference(body.get("arn"), "topic", f"{where}.arn" if body is value else where)
        if ref is None:
            return []
        name = ref.name or (topic_name(ref.arn) if ref.arn else None)
        if name is None:
            ctx.warn(where, f"{ref.text}: the topic's name is not known: set topicName")
            return []
    subscription: dict[str, Any] = {"function": plan.name}
    policy = ctx.plain(body.get("filterPolicy"), f"{where}.filterPolicy")
    if policy is not None:
        subscription["filter_policy"] = policy
    scope = ctx.text(body.get("filterPolicyScope"), f"{where}.filterPolicyScope")
    if scope:
        subscription["filter_policy_scope"] = scope
    for key, why in (
        ("displayName", "the topic's display name is not kept"),
        ("redrivePolicy", "a delivery that fails is retried as an asynchronous invocation"),
    ):
        if key in body:
            ctx.warn(f"{where}.{key}", f"noted: {why}")
    ctx.rest(
        body,
        ("arn", "topicName", "filterPolicy", "filterPolicyScope", "displayName", "redrivePolicy"),
        where,
    )
    ctx.out.fanout.subscribe(topic_name(name), subscription)
    _delivered(ctx, plan)
    return []


def _event_bridge(
    ctx: SlsContext, plan: FunctionPlan, value: Any, where: str
) -> list[dict[str, Any]]:
    """A rule on an `[[event_buses]]` bus with the function as its target; a rule with a
    `schedule` is a schedule, and becomes one."""
    if not isinstance(value, dict):
        ctx.warn(where, "must be a mapping (pattern, eventBus, schedule...): not carried over")
        return []
    if "schedule" in value:
        body = {"rate": value["schedule"], **{k: v for k, v in value.items() if k != "schedule"}}
        return _schedule(ctx, plan, body, where)
    pattern = ctx.plain(value.get("pattern"), f"{where}.pattern")
    if not isinstance(pattern, dict):
        ctx.warn(f"{where}.pattern", "required (an event pattern): not carried over")
        return []
    bus = value.get("eventBus")
    bus_text = "default"
    if bus is not None:
        ref = ctx.reference(bus, "any", f"{where}.eventBus")
        if ref is None:
            return []
        bus_text = bus_name(ref.arn or ref.name or ref.text)
    rule: dict[str, Any] = {
        "name": ctx.text(value.get("name"), f"{where}.name") or _rule_name(plan.name, where),
        "event_pattern": pattern,
        "targets": [_bus_target(ctx, plan, value, where)],
    }
    description = ctx.text(value.get("description"), f"{where}.description")
    if description:
        rule["description"] = description
    if ctx.boolean(value.get("enabled"), f"{where}.enabled") is False:
        rule["state"] = "DISABLED"
    for key in ("retryPolicy", "deadLetterQueueArn"):
        if key in value:
            ctx.warn(
                f"{where}.{key}",
                "EventBridge's delivery retries are not simulated (the function's retries and "
                "on-failure destination come from its own settings)",
            )
    ctx.rest(
        value,
        (
            "pattern", "eventBus", "input", "inputPath", "inputTransformer", "name",
            "description", "enabled", "retryPolicy", "deadLetterQueueArn",
        ),
        where,
    )  # fmt: skip
    ctx.out.fanout.rule(bus_text, rule)
    _delivered(ctx, plan)
    return []


def _bus_target(
    ctx: SlsContext, plan: FunctionPlan, value: dict[str, Any], where: str
) -> dict[str, Any]:
    """The rule's target: the function, with input, inputPath or inputTransformer."""
    target: dict[str, Any] = {"function": plan.name}
    for key, target_key in (("input", "input"), ("inputPath", "input_path")):
        given = ctx.plain(value.get(key), f"{where}.{key}")
        if given is not None:
            target[target_key] = given
    transformer = value.get("inputTransformer")
    if isinstance(transformer, dict):
        target["input_transformer"] = {
            "input_paths_map": ctx.plain(transformer.get("inputPathsMap"), where) or {},
            "input_template": str(transformer.get("inputTemplate", "")),
        }
    return target


def _delivered(ctx: SlsContext, plan: FunctionPlan) -> None:
    """The function's async settings (maximumRetryAttempts, maximumEventAge,
    destinations.onFailure) as `[async_invocation.NAME]`: what topics and buses deliver."""
    if not plan.async_settings.keys or plan.name in ctx.out.fanout.async_invocation:
        return
    plan.async_settings.used = True
    keys = dict(plan.async_settings.keys)
    for pending, at, why in ctx.pending_files:
        if pending is keys.get("on_failure"):
            keys["on_failure"] = file_destination(ctx.out, at, plan.name, why, "serverless.yml")
    ctx.out.fanout.async_invocation[plan.name] = keys


def _rule_name(function: str, where: str) -> str:
    """The framework's rule name for an unnamed rule: `<function>-rule-<n>`, n counting the
    function's events from 1."""
    found = re.search(r"\[(\d+)\]", where)
    return f"{function}-rule-{int(found.group(1)) + 1 if found else 1}"


_HANDLERS: dict[str, Handler] = {
    "sqs": _sqs,
    "s3": _s3,
    "schedule": _schedule,
    "http": _http,
    "httpApi": _http_api,
    "stream": stream_trigger,
    "kafka": kafka_trigger,
    "rabbitmq": rabbitmq_trigger,
    "sns": _sns,
    "eventBridge": _event_bridge,
}
