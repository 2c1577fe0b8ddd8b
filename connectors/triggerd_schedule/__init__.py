"""The `schedule` source: EventBridge rules and EventBridge Scheduler on any machine.

Importing this package is cheap: APScheduler is imported only when a source is created.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from triggerd.types import JSONDict, Source, SourceContext, SourcePlugin
from triggerd_schedule.config import ScheduleSourceConfig


def _create(config: Any, ctx: SourceContext) -> Source:
    from triggerd_schedule.expressions import parse_schedule, require_apscheduler
    from triggerd_schedule.source import ScheduleSource

    if not isinstance(config, ScheduleSourceConfig):
        raise TypeError(f"expected ScheduleSourceConfig, got {type(config).__name__}")
    require_apscheduler()
    return ScheduleSource(config, ctx, parse_schedule(config.expression, config.timezone))


def _sample_event(options: Mapping[str, str]) -> JSONDict:
    from triggerd_schedule.source import sample_event

    return sample_event(options)


plugin = SourcePlugin(config_model=ScheduleSourceConfig, create=_create, sample_event=_sample_event)

__all__ = ["ScheduleSourceConfig", "plugin"]
