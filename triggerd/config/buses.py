"""`[[event_buses]]`: EventBridge-compatible event buses, their rules and the rules' targets
(`triggerd.fanout.events` serves them; docs/eventbridge.md).

Validated here, once, with the key that is wrong named: a rule's `event_pattern` compiles in
the filter engine (`triggerd.events.filters`), a target's input settings compile in
`triggerd.events.eventbridge`, and the functions targets name exist (`bus_problems`, checked
with the rest of the config's references)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import orjson
from pydantic import Field, field_validator, model_validator

from triggerd.events.eventbridge import InputError, TargetInput, compile_target_input
from triggerd.events.filters import CompiledFilter, FilterPatternError, compile_filters
from triggerd.types import Model, empty_list

__all__ = [
    "DEFAULT_BUS",
    "ArchiveConfig",
    "EventBusConfig",
    "InputTransformer",
    "RuleConfig",
    "RuleTarget",
    "bus_problems",
]

DEFAULT_BUS = "default"
#: AWS's limit of targets per rule.
MAX_TARGETS = 5


class InputTransformer(Model):
    input_paths_map: dict[str, str] = Field(
        default_factory=dict,
        description="Variable name -> JSON path into the event (at most 100), e.g. "
        'state = "$.detail.state"',
    )
    input_template: str = Field(
        description="What the target receives: JSON with <variable> placeholders (quoted: "
        "the value's text inside a string; unquoted: the value's JSON), plus "
        "<aws.events.rule-name>, <aws.events.rule-arn>, <aws.events.event.ingestion-time>, "
        "<aws.events.event> and <aws.events.event.json>"
    )


class RuleTarget(Model):
    function: str = Field(description="The function invoked (asynchronously) per matched event")
    id: str | None = Field(
        None,
        pattern=r"^[\.\-_A-Za-z0-9]{1,64}$",
        description="The target's Id as ListTargetsByRule reports it (default: the function)",
    )
    input: str | dict[str, Any] | list[Any] | None = Field(
        None, description="Constant JSON sent instead of the event (JSON text or a table)"
    )
    input_path: str | None = Field(
        None, description="JSON path: send only this part of the event, e.g. $.detail"
    )
    input_transformer: InputTransformer | None = None

    @property
    def target_id(self) -> str:
        return self.id or self.function

    @property
    def input_json(self) -> str | None:
        """`input` as the JSON text AWS's Input holds."""
        if self.input is None or isinstance(self.input, str):
            return self.input
        return orjson.dumps(self.input).decode()

    def compiled_input(self) -> TargetInput:
        transformer = self.input_transformer
        return compile_target_input(
            input_json=self.input_json,
            input_path=self.input_path,
            paths_map=transformer.input_paths_map if transformer else None,
            template=transformer.input_template if transformer else None,
        )

    @model_validator(mode="after")
    def _input_compiles(self) -> RuleTarget:
        try:
            self.compiled_input()
        except InputError as exc:
            raise ValueError(str(exc)) from None
        return self


class RuleConfig(Model):
    name: str = Field(pattern=r"^[\.\-_A-Za-z0-9]{1,64}$", description="The rule's name")
    description: str | None = Field(None, max_length=512)
    event_pattern: dict[str, Any] | str = Field(
        description="EventBridge event pattern (a table, or its JSON text) matched against "
        "every event put on the bus"
    )
    state: Literal["ENABLED", "DISABLED"] = Field(
        "ENABLED", description="DISABLED: the rule matches nothing until enabled again"
    )
    targets: list[RuleTarget] = Field(
        min_length=1, max_length=MAX_TARGETS, description="At most 5 targets, as in AWS"
    )

    @field_validator("event_pattern")
    @classmethod
    def _pattern_compiles(cls, value: dict[str, Any] | str) -> dict[str, Any] | str:
        _compile_pattern(value)
        return value

    @property
    def pattern_json(self) -> str:
        """The pattern as the JSON text DescribeRule returns."""
        if isinstance(self.event_pattern, str):
            return self.event_pattern
        return orjson.dumps(self.event_pattern).decode()

    def compiled_pattern(self) -> CompiledFilter:
        return compile_filters([self.event_pattern], max_filters=1)

    @model_validator(mode="after")
    def _unique_target_ids(self) -> RuleConfig:
        ids = [t.target_id for t in self.targets]
        duplicated = sorted({i for i in ids if ids.count(i) > 1})
        if duplicated:
            raise ValueError(f"targets: duplicate target id {duplicated[0]!r} (set id)")
        return self


class ArchiveConfig(Model):
    """Keep the bus's events in the state store, for `triggerd events replay`."""

    retention_days: int = Field(
        0, ge=0, le=36500, description="Days an archived event is kept; 0 keeps it forever"
    )
    event_pattern: dict[str, Any] | str | None = Field(
        None, description="Archive only the events that match this pattern (default: all)"
    )

    @field_validator("event_pattern")
    @classmethod
    def _pattern_compiles(cls, value: dict[str, Any] | str | None) -> dict[str, Any] | str | None:
        if value is not None:
            _compile_pattern(value)
        return value

    def compiled_pattern(self) -> CompiledFilter:
        """Matches every event when no pattern is set."""
        return compile_filters([] if self.event_pattern is None else [self.event_pattern])


def _compile_pattern(value: dict[str, Any] | str) -> CompiledFilter:
    try:
        return compile_filters([value], max_filters=1)
    except FilterPatternError as exc:
        raise ValueError(f"invalid event pattern{str(exc).removeprefix('filter[0]')}") from None


class EventBusConfig(Model):
    name: str = Field(
        DEFAULT_BUS,
        pattern=r"^[/\.\-_A-Za-z0-9]{1,256}$",
        description='The bus name PutEvents names in EventBusName (default: "default")',
    )
    description: str | None = Field(None, max_length=512)
    rules: list[RuleConfig] = Field(default_factory=empty_list)
    archive: ArchiveConfig | None = Field(
        None, description="Archive the bus's events in the state store for replays"
    )

    @property
    def archive_name(self) -> str:
        """The archive's name, as its ARN (`archive/NAME`) and replays name it."""
        return self.name.replace("/", "-") + "-archive"

    @model_validator(mode="after")
    def _unique_rules(self) -> EventBusConfig:
        names = [r.name for r in self.rules]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"rules: duplicate rule name {duplicated[0]!r}")
        return self


def bus_problems(buses: list[EventBusConfig], functions: Mapping[str, Any]) -> list[str]:
    """References the daemon cannot resolve: a bus declared twice, a target's unknown
    function."""
    problems: list[str] = []
    seen: set[str] = set()
    for b, bus in enumerate(buses):
        if bus.name in seen:
            problems.append(f"event_buses.{b}.name: bus {bus.name!r} is declared twice")
        seen.add(bus.name)
        for r, rule in enumerate(bus.rules):
            for t, target in enumerate(rule.targets):
                if target.function not in functions:
                    problems.append(
                        f"event_buses.{b}.rules.{r}.targets.{t}.function: no function "
                        f"{target.function!r}"
                    )
    return problems
