"""The plugin of `triggerd_s3` (see the package): its config model, `create` and
the hooks the CLI uses."""

from __future__ import annotations

from typing import Any

from triggerd.events.s3 import S3_SAMPLE_OPTIONS
from triggerd.types import Source, SourceContext, SourcePlugin, plugin_config

from . import sample_event
from .client import require_aiobotocore
from .config import S3SourceConfig


def create(config: Any, ctx: SourceContext) -> Source:
    s3_config = plugin_config(config, S3SourceConfig)
    require_aiobotocore()
    if s3_config.mode == "notifications":
        from .notifications import NotificationSource

        return NotificationSource(s3_config, ctx)
    from .poll import PollSource

    return PollSource(s3_config, ctx)


async def check(config: Any, trigger: str, region: str) -> None:
    """`triggerd validate --connect`: the bucket (and the notification queue) answer with
    these credentials, in the source's region else the daemon's `region` (ConfigError naming
    it; RetryableError when unreachable)."""
    require_aiobotocore()
    from .check import check as check_s3

    await check_s3(plugin_config(config, S3SourceConfig), trigger, region)


plugin = SourcePlugin(
    config_model=S3SourceConfig,
    create=create,
    sample_event=sample_event,
    sample_options=S3_SAMPLE_OPTIONS,
    check_in_region=check,
)

__all__ = ["S3SourceConfig", "check", "create", "plugin", "sample_event"]
