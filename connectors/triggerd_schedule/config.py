"""Config model of the `schedule` source (EventBridge rules / EventBridge Scheduler)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from triggerd.types import SourceConfig
from triggerd_schedule.expressions import ScheduleError, load_zone, parse_schedule


class ScheduleSourceConfig(SourceConfig):
    """Fire a function on a schedule, with the event EventBridge sends for it."""

    invocation: ClassVar[Literal["sync", "async"]] = "async"

    type: Literal["schedule"]
    expression: str = Field(
        description=(
            "rate(1 minute) / rate(5 minutes) / rate(2 hours) / rate(1 day); "
            "cron(Minutes Hours Day-of-month Month Day-of-week Year) as AWS writes it; "
            "or a 5-field crontab line such as '*/5 * * * *'."
        )
    )
    timezone: str = Field(
        "UTC", description="IANA time zone cron expressions are evaluated in (rates use UTC)."
    )
    catch_up: Literal["none", "latest", "all"] = Field(
        "none",
        description=(
            "Ticks missed while the daemon was down (or late by more than misfire_grace_s): "
            "none = skip them, latest = deliver only the most recent, all = deliver them all "
            "(the most recent max_catch_up)."
        ),
    )
    max_catch_up: int = Field(1000, ge=1, description="Most missed ticks delivered by 'all'.")
    misfire_grace_s: float = Field(
        60.0,
        ge=0,
        description="A tick this late (restart, suspend, back-pressure) still counts as on time.",
    )
    source_name: Literal["aws.events", "aws.scheduler"] = Field(
        "aws.events",
        description="aws.events = EventBridge rule; aws.scheduler = EventBridge Scheduler.",
    )
    rule_name: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._-]{1,64}$",
        description="Rule (or schedule) name in the event's resources ARN; default: trigger name.",
    )
    input: dict[str, Any] | None = Field(
        None,
        description="Deliver this JSON instead of the Scheduled Event (as Scheduler targets do).",
    )
    region: str | None = Field(None, description="Region in the event; default: the daemon's.")
    account_id: str | None = Field(
        None, pattern=r"^\d{12}$", description="Account in the event; default: the daemon's."
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            load_zone(value)
        except ScheduleError as exc:
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _catch_up_limit(self) -> ScheduleSourceConfig:
        if "max_catch_up" in self.model_fields_set and self.catch_up != "all":
            raise ValueError('max_catch_up: only used with catch_up = "all"')
        return self

    @model_validator(mode="after")
    def _valid_expression(self) -> ScheduleSourceConfig:
        try:
            schedule = parse_schedule(self.expression, self.timezone)
        except ScheduleError as exc:
            raise ValueError(str(exc)) from None
        if not schedule.fires_ever():
            raise ValueError(
                f"schedule expression {self.expression!r} never fires: no date matches its "
                "day-of-month, day-of-week, month and year fields (such as 30 February)"
            )
        return self
