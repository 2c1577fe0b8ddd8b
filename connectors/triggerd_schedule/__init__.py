"""The `schedule` source: EventBridge rules and EventBridge Scheduler on any machine.

Importing this package is cheap: APScheduler is imported only when a source is created.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from triggerd.types import JSONDict, Source, SourceContext, SourcePlugin, plugin_config
from triggerd_schedule.config import ScheduleSourceConfig


def _create(config: Any, ctx: SourceContext) -> Source:
    from triggerd_schedule.expressions import parse_schedule, require_apscheduler
    from triggerd_schedule.source import ScheduleSource

    schedule_config = plugin_config(config, ScheduleSourceConfig)
    require_apscheduler()
    schedule = parse_schedule(schedule_config.expression, schedule_config.timezone)
    return ScheduleSource(schedule_config, ctx, schedule)


SAMPLE_OPTIONS = {
    "rule": "the rule's (or schedule's) name in resources",
    "time": "the fire time, ISO-8601 (default 2024-05-01T12:00:00Z)",
    "region": "region (default us-east-1)",
    "account": "account id (default 123456789012)",
    "source": "aws.events (an EventBridge rule, default) or aws.scheduler",
}


def _sample_event(options: Mapping[str, str]) -> JSONDict:
    from triggerd_schedule.source import sample_event

    return sample_event(options)


plugin = SourcePlugin(
    config_model=ScheduleSourceConfig,
    create=_create,
    sample_event=_sample_event,
    sample_options=SAMPLE_OPTIONS,
)

__all__ = ["ScheduleSourceConfig", "plugin"]
