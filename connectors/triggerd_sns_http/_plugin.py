"""The plugin of `triggerd_sns_http` (see the package): its config model, `create` and
the hooks the CLI uses."""

from __future__ import annotations

from typing import Any

from triggerd.types import Source, SourceContext, SourcePlugin, plugin_config
from triggerd_sns_http.config import SnsHttpSourceConfig

from . import sample_event as _sample_event


def _create(config: Any, ctx: SourceContext) -> Source:
    from triggerd_sns_http.source import SnsHttpSource

    return SnsHttpSource(plugin_config(config, SnsHttpSourceConfig), ctx)


def _sample_options() -> dict[str, str]:
    from triggerd.fanout.sns.sample import SAMPLE_OPTIONS

    return dict(SAMPLE_OPTIONS)


plugin = SourcePlugin(
    config_model=SnsHttpSourceConfig,
    create=_create,
    sample_event=_sample_event,
    sample_options=_sample_options(),
)

__all__ = ["SnsHttpSourceConfig", "plugin"]
