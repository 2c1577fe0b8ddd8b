"""AWS SAM templates to triggerd config: `translate_sam` (docs/sam.md).

Reading and resolving the template is `sam_template`; functions `sam_functions`; their
events `sam_events`; the AWS resources events name, and the overrides that map them to local
ones, `sam_resources`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from triggerd.imports.common import Overrides, Translation, apply_trigger_overrides
from triggerd.imports.sam_api import CARRIED
from triggerd.imports.sam_events import EventTranslator
from triggerd.imports.sam_functions import FUNCTION_TYPE, FunctionTranslator, merge_globals
from triggerd.imports.sam_resources import Resources
from triggerd.imports.sam_template import Template, Unresolved, load_template
from triggerd.types import ConfigError

__all__ = ["translate_sam"]

#: Resource types that events, layers and destinations refer to: translated through those,
#: never on their own.
REFERENCED = {
    "AWS::Serverless::LayerVersion",
    "AWS::Lambda::LayerVersion",
    "AWS::Serverless::Api",
    "AWS::Serverless::HttpApi",
    "AWS::SQS::Queue",
    "AWS::S3::Bucket",
    "AWS::DynamoDB::Table",
    "AWS::Serverless::SimpleTable",
    "AWS::Kinesis::Stream",
    "AWS::MSK::Cluster",
    "AWS::MSK::ServerlessCluster",
    "AWS::AmazonMQ::Broker",
    "AWS::SNS::Topic",
    "AWS::Events::EventBus",
}


def translate_sam(
    path: Path,
    *,
    overrides: Overrides | None,
    parameters: Mapping[str, str],
) -> Translation:
    """The triggerd config equivalent to the SAM template at `path`: one local function per
    `AWS::Serverless::Function`, one trigger per entry of its `Events`. Paths in it (code,
    layers) are relative to the template's directory, as CodeUri is. `parameters` win over
    the overrides file's, which win over the template's defaults. Raises ConfigError when the
    template cannot be read; everything else that is not carried over is a warning."""
    overrides = overrides or Overrides()
    data = load_template(path)
    out = Translation()
    tpl = Template.create(data, {**overrides.parameters, **parameters})
    for where, message in tpl.problems:
        out.warn(where, message)
    for key in sorted(data):
        if key not in (
            "AWSTemplateFormatVersion",
            "Transform",
            "Description",
            "Parameters",
            "Conditions",
            "Mappings",
            "Globals",
            "Resources",
            "Outputs",
            "Metadata",
        ):
            out.warn(key, "section not carried over")
    _check_globals(data, out)
    daemon: dict[str, Any] = {"region": tpl.region, "account_id": tpl.account}
    daemon.update(overrides.daemon)
    try:
        functions, triggers = _translate_functions(tpl, out, overrides)
    except RecursionError:
        raise ConfigError([f"{path}: values nested too deeply to resolve"]) from None
    _apply_trigger_overrides(triggers, overrides)
    for name in sorted(set(overrides.functions) - set(functions)):
        out.warn(f"overrides.functions.{name}", "no such function in the template")
    for name in sorted(set(overrides.triggers) - {t["name"] for t in triggers}):
        out.warn(f"overrides.triggers.{name}", "no such trigger (<Function>-<Event>)")
    out.config = {"daemon": daemon, "functions": functions, "triggers": triggers}
    out.fanout.apply(out.config, out.warn)
    return out


def _translate_functions(
    tpl: Template, out: Translation, overrides: Overrides
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    functions: dict[str, Any] = {}
    triggers: list[dict[str, Any]] = []
    fn_translator = FunctionTranslator(tpl, out, overrides)
    resources = Resources(tpl, out, overrides)
    events = EventTranslator(tpl, out, resources, _source_fields())
    globals_ = _mapping(
        _mapping(tpl.data.get("Globals"), "Globals", out).get("Function"), "Globals.Function", out
    )
    for logical_id, res in tpl.resources.items():
        kind = res.get("Type") if isinstance(res, dict) else None
        where = f"Resources.{logical_id}"
        if kind != FUNCTION_TYPE:
            if kind not in REFERENCED:
                out.warn(where, f"{kind} resources are not translated")
            continue
        if not _included(tpl, res, where, out):
            continue
        build = (res.get("Metadata") or {}).get("BuildMethod")
        if build is not None:
            out.warn(
                f"{where}.Metadata.BuildMethod",
                f"the code is built by `sam build` ({build}): CodeUri is run as it is, so "
                "point it (or the overrides' settings.code) at the built code",
            )
        if not isinstance(res.get("Properties") or {}, dict):
            out.warn(f"{where}.Properties", "not a mapping: the function is not translated")
            continue
        try:
            props = merge_globals(globals_, dict(res.get("Properties") or {}))
            info = fn_translator.translate(logical_id, props)
            if info is None:
                continue
            fn_triggers = []
            for name, spec in _mapping(props.get("Events"), f"{info.where}.Events", out).items():
                trigger = events.translate(info, str(name), spec)
                if trigger is not None:
                    fn_triggers.append(trigger)
            _async_settings(tpl, out, info.where, props, fn_triggers, events)
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            out.warn(where, f"not translated: a value is not of the expected kind ({exc!r})")
            continue
        functions[logical_id] = info.table
        triggers.extend(fn_triggers)
    resources.warn_unused()
    return functions, triggers


def _mapping(node: Any, where: str, out: Translation) -> dict[str, Any]:
    """`node` as a mapping: {} when absent, and with a warning when it is something else."""
    if node is None:
        return {}
    if not isinstance(node, dict):
        out.warn(where, "not a mapping: not carried over")
        return {}
    return dict(node)


def _apply_trigger_overrides(triggers: list[dict[str, Any]], overrides: Overrides) -> None:
    apply_trigger_overrides(triggers, overrides.triggers)


def _check_globals(data: dict[str, Any], out: Translation) -> None:
    found = data.get("Globals")
    sections: dict[str, Any] = found if isinstance(found, dict) else {}
    for section, keys in sections.items():
        if section not in ("Function", "Api", "HttpApi", "SimpleTable"):
            out.warn(f"Globals.{section}", "not carried over")
            continue
        if section not in ("Api", "HttpApi") or not isinstance(keys, dict):
            continue
        carried = CARRIED[f"AWS::Serverless::{section}"]
        for key in sorted(set(keys) - carried):
            out.warn(f"Globals.{section}.{key}", "not carried over to the webhook routes")


def _included(tpl: Template, res: dict[str, Any], where: str, out: Translation) -> bool:
    """False (with a warning) when the resource's Condition is false."""
    condition = res.get("Condition")
    if condition is None:
        return True
    try:
        if tpl.condition(str(condition)):
            return True
        out.warn(where, f"condition {condition} is false: not translated")
    except Unresolved as exc:
        out.warn(f"{where}.Condition", f"not translated: {exc}")
    return False


def _source_fields() -> Any:
    """The options of each installed source type (None when it cannot be loaded)."""
    from triggerd.config.plugins import Registry

    registry = Registry.discover()
    cache: dict[str, set[str] | None] = {}

    def fields(kind: str) -> set[str] | None:
        if kind not in cache:
            try:
                model = registry.source(kind).config_model
                cache[kind] = set(model.model_fields)
            except Exception:  # a missing extra or an unknown type: the loader names it
                cache[kind] = None
        return cache[kind]

    return fields


#: Sources invoked asynchronously, which EventInvokeConfig and DeadLetterQueue apply to.
ASYNC_SOURCES = {"s3", "directory", "schedule"}


def _async_settings(
    tpl: Template,
    out: Translation,
    where: str,
    props: dict[str, Any],
    triggers: list[dict[str, Any]],
    events: EventTranslator,
) -> None:
    """EventInvokeConfig and DeadLetterQueue: the retries, event age and on-failure
    destination of the function's asynchronous triggers."""
    pushed = [t for t in triggers if t["source"].get("type") in ASYNC_SOURCES]
    function = where.split(".")[1]
    delivered: dict[str, Any] = {"name": function, "source": {}}
    if function in out.fanout.targets:
        # What SNS topics and event buses deliver: the function's own async queue.
        pushed.append(delivered)
    config = props.get("EventInvokeConfig") or {}
    dead = props.get("DeadLetterQueue") or {}
    if (config or dead) and not pushed:
        what = "EventInvokeConfig" if config else "DeadLetterQueue"
        out.warn(f"{where}.{what}", "the function has no asynchronous trigger here to apply it to")
        return
    try:
        config = tpl.resolve(config)
    except Unresolved as exc:
        out.warn(f"{where}.EventInvokeConfig", f"not carried over: {exc}")
        config = {}
    for key in config:
        if key not in ("MaximumRetryAttempts", "MaximumEventAgeInSeconds", "DestinationConfig"):
            out.warn(f"{where}.EventInvokeConfig.{key}", "not carried over")
    for trigger in pushed:
        events.retry_policy(config, f"{where}.EventInvokeConfig", trigger)
        destination = config.get("DestinationConfig") or {}
        if isinstance(destination, dict) and destination:
            events.destination(destination, f"{where}.EventInvokeConfig.DestinationConfig", trigger)
        if dead and "on_failure" not in trigger:
            if str(dead.get("Type", "SQS")).upper() != "SQS":
                out.warn(f"{where}.DeadLetterQueue", "only SQS queues are mapped: a file instead")
            trigger["on_failure"] = events.res.destination(
                dead.get("TargetArn"), f"{where}.DeadLetterQueue", trigger["name"]
            )
    settings = {k: v for k, v in delivered.items() if k not in ("name", "source")}
    if settings:
        out.fanout.async_invocation[function] = settings
