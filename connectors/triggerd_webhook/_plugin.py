"""The plugin of `triggerd_webhook` (see the package): its config model, `create` and
the hooks the CLI uses."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from triggerd.types import Source, SourcePlugin, plugin_config
from triggerd_webhook.config import WebhookSourceConfig

from . import SAMPLE_OPTIONS
from . import sample_event as _sample_event

if TYPE_CHECKING:
    from triggerd.types import SourceContext


def _create(config: Any, ctx: SourceContext) -> Source:
    from triggerd_webhook.source import WebhookSource

    return WebhookSource(plugin_config(config, WebhookSourceConfig), ctx)


plugin = SourcePlugin(
    config_model=WebhookSourceConfig,
    create=_create,
    sample_event=_sample_event,
    sample_options=SAMPLE_OPTIONS,
)

__all__ = ["WebhookSourceConfig", "plugin"]
