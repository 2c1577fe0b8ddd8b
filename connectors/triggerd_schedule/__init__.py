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


def _sample_event(options: Mapping[str, str]) -> JSONDict:
    from triggerd_schedule.source import sample_event

    return sample_event(options)


plugin = SourcePlugin(config_model=ScheduleSourceConfig, create=_create, sample_event=_sample_event)

__all__ = ["ScheduleSourceConfig", "plugin"]
