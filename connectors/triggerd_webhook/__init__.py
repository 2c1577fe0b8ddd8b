"""The `webhook` source: HTTP routes on the daemon's listen address, delivering API Gateway
REST (payload 1.0), HTTP API (payload 2.0) or Lambda function URL events.

Importing this package is cheap: the aiohttp handler code is imported only when a source is
created.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from triggerd.types import JSONDict, Source, SourceContext, SourcePlugin, plugin_config
from triggerd_webhook.config import WebhookSourceConfig


def _create(config: Any, ctx: SourceContext) -> Source:
    from triggerd_webhook.source import WebhookSource

    return WebhookSource(plugin_config(config, WebhookSourceConfig), ctx)


def _sample_event(options: Mapping[str, str]) -> JSONDict:
    from triggerd_webhook.source import sample_event

    return sample_event(options)


plugin = SourcePlugin(config_model=WebhookSourceConfig, create=_create, sample_event=_sample_event)

__all__ = ["WebhookSourceConfig", "plugin"]
