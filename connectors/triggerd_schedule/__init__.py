"""The `schedule` source: EventBridge rules and EventBridge Scheduler on any machine.

Importing this package is cheap: APScheduler is imported only when a source is created.

The plugin (its config model: pydantic) is loaded on first use of `plugin`;
`sample_event` and `SAMPLE_OPTIONS` need neither (`triggerd generate-event`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from triggerd.types import JSONDict, lazy_attributes

if TYPE_CHECKING:
    from ._plugin import ScheduleSourceConfig as ScheduleSourceConfig
    from ._plugin import plugin as plugin

__all__ = ["SAMPLE_OPTIONS", "ScheduleSourceConfig", "plugin", "sample_event"]

#: What `_plugin` defines, imported from it on first use (PEP 562).
_LAZY = frozenset(["ScheduleSourceConfig", "plugin"])


SAMPLE_OPTIONS = {
    "rule": "the rule's (or schedule's) name in resources",
    "time": "the fire time, ISO-8601 (default 2024-05-01T12:00:00Z)",
    "region": "region (default us-east-1)",
    "account": "account id (default 123456789012)",
    "source": "aws.events (an EventBridge rule, default) or aws.scheduler",
}


def sample_event(options: Mapping[str, str]) -> JSONDict:
    from triggerd_schedule.events import sample_event

    return sample_event(options)


__getattr__ = lazy_attributes(__name__, f"{__name__}._plugin", _LAZY)
