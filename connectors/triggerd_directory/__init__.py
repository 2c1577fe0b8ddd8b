"""The `directory` source: a local directory's file changes as S3 event notifications.

Importing this package is cheap: watchfiles is imported only when a source starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from triggerd.events.s3 import S3_SAMPLE_OPTIONS, sample_s3_event
from triggerd.types import JSONDict, Source, SourceContext, SourcePlugin, plugin_config

from .config import DirectorySourceConfig


def create(config: Any, ctx: SourceContext) -> Source:
    from .source import DirectorySource

    return DirectorySource(plugin_config(config, DirectorySourceConfig), ctx)


def sample_event(options: Mapping[str, str]) -> JSONDict:
    """`triggerd generate-event directory [bucket=..] [key=..] [event=created|modified|deleted]`."""
    return sample_s3_event(options)


plugin = SourcePlugin(
    config_model=DirectorySourceConfig,
    create=create,
    sample_event=sample_event,
    sample_options=S3_SAMPLE_OPTIONS,
)

__all__ = ["DirectorySourceConfig", "create", "plugin", "sample_event"]
