"""The `s3` source: an S3-compatible bucket's object events, from its event notifications
(read from an SQS queue) or by polling its listing.

Importing this package is cheap: aiobotocore is imported only when a source starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from triggerd.events.s3 import S3_SAMPLE_OPTIONS, sample_s3_event
from triggerd.types import JSONDict, Source, SourceContext, SourcePlugin, plugin_config

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


def sample_event(options: Mapping[str, str]) -> JSONDict:
    """`triggerd generate-event s3 [-s bucket=..] [-s key=..] [-s event=created|deleted|<EventName>]
    (also region, size, etag, configuration_id)`."""
    return sample_s3_event(options)


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
