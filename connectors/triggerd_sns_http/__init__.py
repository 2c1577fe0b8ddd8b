"""The `sns_http` source: a route on the daemon's public listener subscribed to a real SNS
topic over HTTP(S). Messages are verified (signature, certificate host), subscriptions
confirmed, and notifications invoked with the `aws:sns` event.

Importing this package is cheap: aiohttp and cryptography are imported when a source is
created.

The plugin (its config model: pydantic) is loaded on first use of `plugin`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from triggerd.types import JSONDict

if TYPE_CHECKING:
    from ._plugin import SnsHttpSourceConfig as SnsHttpSourceConfig
    from ._plugin import plugin as plugin

__all__ = ["SnsHttpSourceConfig", "plugin", "sample_event"]

#: What `_plugin` defines, imported from it on first use (PEP 562).
_LAZY = frozenset(["SnsHttpSourceConfig", "plugin"])


def sample_event(options: Mapping[str, str]) -> JSONDict:
    from triggerd.fanout.sns.sample import sample_event as sample

    return sample(options)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import _plugin

        value = getattr(_plugin, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
