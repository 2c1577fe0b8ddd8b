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


SAMPLE_OPTIONS = {
    "format": "payload format: 1.0 (REST API), 2.0 (HTTP API, default) or url (function URL)",
    "method": "HTTP method (default POST)",
    "path": "request path (default /orders/42)",
    "template": "route template the path matches, (default /orders/{id}; with path: the path)",
    "query": "raw query string, e.g. a=1&b=2 (default none)",
    "body": 'request body (default {"qty":1})',
    "stage": "stage name (default prod for 1.0, $default otherwise)",
}


def _sample_event(options: Mapping[str, str]) -> JSONDict:
    from triggerd_webhook.source import sample_event

    return sample_event(options)


plugin = SourcePlugin(
    config_model=WebhookSourceConfig,
    create=_create,
    sample_event=_sample_event,
    sample_options=SAMPLE_OPTIONS,
)

__all__ = ["WebhookSourceConfig", "plugin"]
