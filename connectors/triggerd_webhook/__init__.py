"""The `webhook` source: HTTP routes on the daemon's listen address, delivering API Gateway
REST (payload 1.0), HTTP API (payload 2.0) or Lambda function URL events.

Importing this package is cheap: the aiohttp handler code is imported only when a source is
created.

The plugin (its config model: pydantic) is loaded on first use of `plugin`;
`sample_event` and `SAMPLE_OPTIONS` need neither (`triggerd generate-event`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from triggerd.types import JSONDict, lazy_attributes

if TYPE_CHECKING:
    from ._plugin import WebhookSourceConfig as WebhookSourceConfig
    from ._plugin import plugin as plugin

__all__ = ["SAMPLE_OPTIONS", "WebhookSourceConfig", "plugin", "sample_event"]

#: What `_plugin` defines, imported from it on first use (PEP 562).
_LAZY = frozenset(["WebhookSourceConfig", "plugin"])


SAMPLE_OPTIONS = {
    "format": "payload format: 1.0 (REST API), 2.0 (HTTP API, default) or url (function URL)",
    "method": "HTTP method (default POST)",
    "path": "request path (default /orders/42)",
    "template": "route template the path matches, (default /orders/{id}; with path: the path)",
    "query": "raw query string, e.g. a=1&b=2 (default none)",
    "body": 'request body (default {"qty":1})',
    "stage": "stage name (default prod for 1.0, $default otherwise)",
}


def sample_event(options: Mapping[str, str]) -> JSONDict:
    from triggerd_webhook.samples import sample_event

    return sample_event(options)


__getattr__ = lazy_attributes(__name__, f"{__name__}._plugin", _LAZY)
