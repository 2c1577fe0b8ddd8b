"""The plugin of `triggerd_directory` (see the package): its config model, `create` and
the hooks the CLI uses."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from triggerd.events.s3 import S3_SAMPLE_OPTIONS
from triggerd.types import Source, SourcePlugin, plugin_config

from . import sample_event
from .config import DirectorySourceConfig

if TYPE_CHECKING:
    from triggerd.types import SourceContext


def create(config: Any, ctx: SourceContext) -> Source:
    from .source import DirectorySource

    return DirectorySource(plugin_config(config, DirectorySourceConfig), ctx)


plugin = SourcePlugin(
    config_model=DirectorySourceConfig,
    create=create,
    sample_event=sample_event,
    sample_options=S3_SAMPLE_OPTIONS,
)

__all__ = ["DirectorySourceConfig", "create", "plugin", "sample_event"]
