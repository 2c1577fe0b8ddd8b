"""The plugin of `triggerd_schedule` (see the package): its config model, `create` and
the hooks the CLI uses."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from triggerd.types import Source, SourcePlugin, plugin_config
from triggerd_schedule.config import ScheduleSourceConfig

from . import SAMPLE_OPTIONS
from . import sample_event as _sample_event

if TYPE_CHECKING:
    from triggerd.types import SourceContext


def _create(config: Any, ctx: SourceContext) -> Source:
    from triggerd_schedule.expressions import parse_schedule, require_apscheduler
    from triggerd_schedule.source import ScheduleSource

    schedule_config = plugin_config(config, ScheduleSourceConfig)
    require_apscheduler()
    schedule = parse_schedule(schedule_config.expression, schedule_config.timezone)
    return ScheduleSource(schedule_config, ctx, schedule)


plugin = SourcePlugin(
    config_model=ScheduleSourceConfig,
    create=_create,
    sample_event=_sample_event,
    sample_options=SAMPLE_OPTIONS,
)

__all__ = ["ScheduleSourceConfig", "plugin"]
