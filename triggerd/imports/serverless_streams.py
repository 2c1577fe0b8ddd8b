"""serverless.yml's event-source-mapping events as poll triggers: `stream` (DynamoDB Streams,
Kinesis), `kafka` and `rabbitmq`, and the batch settings they share with `sqs`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from triggerd.imports.common import (
    one_shard_reader_per_window,
    warn_local_broker,
    warn_remote_kafka,
)
from triggerd.imports.serverless_context import SlsContext
from triggerd.imports.serverless_functions import on_failure
from triggerd.imports.serverless_refs import Ref, arn_parts

if TYPE_CHECKING:
    from triggerd.imports.serverless_functions import FunctionPlan

__all__ = ["batch_settings", "kafka_trigger", "rabbitmq_trigger", "stream_trigger"]

#: Source keys each stream source type takes (an override may make a stream a `postgres`
#: source, which has no starting position or tumbling windows).
_STREAM_SOURCE_KEYS = {
    "kinesis": {
        "starting_position",
        "starting_position_timestamp",
        "parallelization_factor",
        "tumbling_window_s",
    },
    "dynamodb_streams": {"starting_position", "parallelization_factor", "tumbling_window_s"},
    "postgres": {"parallelization_factor"},
}
_STREAM_KEYS = (
    "arn", "type", "batchSize", "batchWindow", "startingPosition", "startingPositionTimestamp",
    "maximumRetryAttempts", "maximumRecordAgeInSeconds", "bisectBatchOnFunctionError",
    "parallelizationFactor", "functionResponseType", "filterPatterns", "destinations",
    "tumblingWindowInSeconds", "enabled",
)  # fmt: skip
_KAFKA_KEYS = (
    "accessConfigurations", "bootstrapServers", "topic", "batchSize", "maximumBatchingWindow",
    "enabled", "startingPosition", "startingPositionTimestamp", "consumerGroupId",
    "filterPatterns",
)  # fmt: skip
_RABBITMQ_KEYS = (
    "arn", "queue", "basicAuthArn", "virtualHost", "batchSize", "maximumBatchingWindow",
    "enabled", "filterPatterns",
)  # fmt: skip


def batch_settings(
    ctx: SlsContext, body: dict[str, Any], where: str, trig: dict[str, Any], window_key: str
) -> None:
    """batchSize, the batching window, functionResponseType, filterPatterns, enabled."""
    size = ctx.integer(body.get("batchSize"), f"{where}.batchSize")
    if size is not None:
        trig["batch_size"] = size
    window = ctx.number(body.get(window_key), f"{where}.{window_key}")
    if window is not None:
        trig["batching_window_s"] = window
    response = body.get("functionResponseType")
    if response == "ReportBatchItemFailures":
        trig["report_batch_item_failures"] = True
    elif response is not None:
        ctx.warn(f"{where}.functionResponseType", f"{response!r}: only ReportBatchItemFailures")
    if "filterPatterns" in body:
        patterns = ctx.plain(body["filterPatterns"], f"{where}.filterPatterns")
        if isinstance(patterns, list):
            trig["filters"] = patterns
        elif patterns is not None:
            ctx.warn(f"{where}.filterPatterns", "must be a list of patterns: not carried over")
    enabled = ctx.boolean(body.get("enabled"), f"{where}.enabled")
    if enabled is False:
        trig["enabled"] = False


# --------------------------------------------------------------------------------------------
# stream


def stream_trigger(
    ctx: SlsContext, plan: FunctionPlan, value: Any, where: str
) -> list[dict[str, Any]]:
    body: dict[str, Any] = value if isinstance(value, dict) and "arn" in value else {"arn": value}
    arn_where = f"{where}.arn" if body is value else where
    kind = body.get("type")
    ref = ctx.reference(body["arn"], kind if kind in ("kinesis", "dynamodb") else "any", arn_where)
    if ref is None:
        return []
    if kind not in ("kinesis", "dynamodb"):
        kind = _stream_kind(ctx, ref.arn, ref.logical_id)
    if kind is None:
        ctx.warn(where, f"{ref.text}: set type (dynamodb or kinesis): not carried over")
        return []
    stype = "kinesis" if kind == "kinesis" else "dynamodb_streams"
    named = ref.arn or ref.name
    source = ctx.local_source(ref, {"type": stype, "stream": named} if named else None, stype)
    if source is None:
        ctx.warn(arn_where, f"{ref.text}: its name is not known: map it in the overrides file")
        return []
    source = _local_stream(ctx, ref, source, stype)
    trig: dict[str, Any] = {"function": plan.name, "source": source}
    if body is not value:
        return [trig]
    batch_settings(ctx, body, where, trig, window_key="batchWindow")
    _stream_source_keys(ctx, body, where, source)
    for key, target, read in (
        ("maximumRetryAttempts", "maximum_retry_attempts", ctx.integer),
        ("maximumRecordAgeInSeconds", "maximum_record_age_s", ctx.integer),
        ("bisectBatchOnFunctionError", "bisect_batch_on_function_error", ctx.boolean),
    ):
        given = read(body.get(key), f"{where}.{key}")
        if given is not None:
            trig[target] = given
    _stream_destinations(ctx, body.get("destinations"), f"{where}.destinations", trig)
    ctx.rest(body, _STREAM_KEYS, where)
    return [trig]


def _local_stream(ctx: SlsContext, ref: Ref, source: dict[str, Any], stype: str) -> dict[str, Any]:
    """An override that keeps the stream's AWS type but names no endpoint is read from the
    overrides' endpoint_url (never from AWS by surprise); one that maps a table's stream to
    PostgreSQL reads the table of that name, with the table's StreamViewType."""
    if source.get("type") == stype:
        return ctx.aws_defaults(source)
    if source.get("type") != "postgres":
        return source
    out = dict(source)
    if ref.name and "tables" not in out and "schemas" not in out:
        out["tables"] = [ref.name]
    declared = ctx.refs.resources.get(ref.logical_id or "")
    props = declared.get("Properties") if isinstance(declared, dict) else None
    spec = props.get("StreamSpecification") if isinstance(props, dict) else None
    view = spec.get("StreamViewType") if isinstance(spec, dict) else None
    if isinstance(view, str):
        out.setdefault("stream_view_type", view)
    return out


def _stream_destinations(
    ctx: SlsContext, destinations: Any, where: str, trig: dict[str, Any]
) -> None:
    if not isinstance(destinations, dict):
        return
    for key, target in destinations.items():
        if key != "onFailure":
            ctx.warn(f"{where}.{key}", "only onFailure exists for streams")
            continue
        table = on_failure(ctx, target, f"{where}.onFailure")
        if table is not None:
            trig["on_failure"] = table


def _stream_kind(ctx: SlsContext, arn: str | None, logical_id: str | None) -> str | None:
    parts = arn_parts(arn) if arn else None
    if parts and parts[0] in ("kinesis", "dynamodb"):
        return parts[0]
    if logical_id:
        resource = ctx.refs.resources.get(logical_id)
        rtype = resource.get("Type") if isinstance(resource, dict) else None
        return {"AWS::Kinesis::Stream": "kinesis", "AWS::DynamoDB::Table": "dynamodb"}.get(
            str(rtype)
        )
    return None


def _stream_source_keys(
    ctx: SlsContext, body: dict[str, Any], where: str, source: dict[str, Any]
) -> None:
    accepted = _STREAM_SOURCE_KEYS.get(str(source.get("type")), set())
    wanted: dict[str, tuple[str, Any]] = {}
    position = ctx.text(body.get("startingPosition"), f"{where}.startingPosition")
    if position:
        wanted["starting_position"] = ("startingPosition", position)
    stamp = ctx.number(body.get("startingPositionTimestamp"), f"{where}.startingPositionTimestamp")
    if stamp is not None:
        wanted["starting_position_timestamp"] = ("startingPositionTimestamp", stamp)
    factor = ctx.integer(body.get("parallelizationFactor"), f"{where}.parallelizationFactor")
    if factor is not None:
        wanted["parallelization_factor"] = ("parallelizationFactor", factor)
    window = ctx.integer(body.get("tumblingWindowInSeconds"), f"{where}.tumblingWindowInSeconds")
    if window is not None:
        wanted["tumbling_window_s"] = ("tumblingWindowInSeconds", window)
    for target, (key, given) in wanted.items():
        if target in accepted:
            source[target] = given
        else:
            ctx.warn(f"{where}.{key}", f"a {source.get('type')} source has no {target}")
    one_shard_reader_per_window(source, ctx.warn, f"{where}.parallelizationFactor")


# --------------------------------------------------------------------------------------------
# kafka (self-managed)


def kafka_trigger(
    ctx: SlsContext, plan: FunctionPlan, value: Any, where: str
) -> list[dict[str, Any]]:
    if not isinstance(value, dict):
        ctx.warn(where, "must be a mapping (topic, bootstrapServers, ...): not carried over")
        return []
    topic = ctx.required_str(value.get("topic"), f"{where}.topic")
    servers = value.get("bootstrapServers")
    listed = (
        [ctx.text(s, f"{where}.bootstrapServers") for s in servers]
        if isinstance(servers, list)
        else [ctx.text(servers, f"{where}.bootstrapServers")]
    )
    bootstrap = [s for s in listed if s]
    found = ctx.override(",".join(bootstrap), *bootstrap) if bootstrap else None
    source: dict[str, Any] = {"type": "kafka", "topics": [topic]}
    if found is not None:
        source.update(found.options)
    elif bootstrap:
        source["bootstrap_servers"] = bootstrap
        warn_remote_kafka(ctx.warn, f"{where}.bootstrapServers", bootstrap, ",".join(bootstrap))
    else:
        ctx.warn(f"{where}.bootstrapServers", "required: not carried over")
        return []
    _access(ctx, value.get("accessConfigurations"), f"{where}.accessConfigurations", found)
    trig: dict[str, Any] = {"function": plan.name, "source": source}
    batch_settings(ctx, value, where, trig, window_key="maximumBatchingWindow")
    position = ctx.text(value.get("startingPosition"), f"{where}.startingPosition")
    if position:
        source["starting_position"] = position
    stamp = ctx.number(value.get("startingPositionTimestamp"), f"{where}.startingPositionTimestamp")
    if stamp is not None:
        source["starting_position_timestamp"] = stamp
    group = ctx.text(value.get("consumerGroupId"), f"{where}.consumerGroupId")
    if group:
        source["group_id"] = group
    ctx.rest(value, _KAFKA_KEYS, where)
    return [trig]


def _access(ctx: SlsContext, access: Any, where: str, override: Any) -> None:
    """accessConfigurations: VPC placement means nothing locally; credentials and
    certificates live in Secrets Manager, which triggerd does not read: the overrides file
    gives the connection (sasl_*, ssl_*) instead."""
    if not isinstance(access, dict):
        return
    for key in access:
        if key.startswith("vpc"):
            ctx.warn(f"{where}.{key}", "VPC placement has no local meaning")
        elif override is None:
            ctx.warn(
                f"{where}.{key}",
                "a Secrets Manager secret, not read by triggerd: give the cluster's credentials "
                "(sasl_*, ssl_*) in the overrides file",
            )


# --------------------------------------------------------------------------------------------
# rabbitmq (Amazon MQ)


def rabbitmq_trigger(
    ctx: SlsContext, plan: FunctionPlan, value: Any, where: str
) -> list[dict[str, Any]]:
    if not isinstance(value, dict):
        ctx.warn(where, "must be a mapping (arn, queue, ...): not carried over")
        return []
    queue = ctx.required_str(value.get("queue"), f"{where}.queue")
    ref = ctx.reference(value.get("arn"), "broker", f"{where}.arn")
    if ref is None:
        return []
    source: dict[str, Any] = {"type": "rabbitmq", "queue": queue}
    found = ctx.override(*ref.keys())
    if found is not None:
        source.update(found.options)
    else:
        # As SAM's side: never the broker on AWS without an override.
        warn_local_broker(ctx.warn, f"{where}.arn", ref.logical_id or ref.text, queue)
        if "basicAuthArn" in value:
            ctx.warn(
                f"{where}.basicAuthArn",
                "the broker's credentials are a Secrets Manager secret, not read by triggerd: "
                "give username and password in the overrides file (guest/guest until then)",
            )
    if ref.arn:
        source["broker_arn"] = ref.arn
    vhost = ctx.text(value.get("virtualHost"), f"{where}.virtualHost")
    if vhost and "url" not in source:
        source["virtual_host"] = vhost
    elif vhost:
        ctx.warn(f"{where}.virtualHost", "the override's url names the virtual host")
    trig: dict[str, Any] = {"function": plan.name, "source": source}
    batch_settings(ctx, value, where, trig, window_key="maximumBatchingWindow")
    ctx.rest(value, _RABBITMQ_KEYS, where)
    return [trig]
