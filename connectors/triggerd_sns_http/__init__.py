"""The `sns_http` source: a route on the daemon's public listener subscribed to a real SNS
topic over HTTP(S). Messages are verified (signature, certificate host), subscriptions
confirmed, and notifications invoked with the `aws:sns` event.

Importing this package is cheap: aiohttp and cryptography are imported when a source is
created.

The plugin (its config model: pydantic) is loaded on first use of `plugin`;
`sample_event` and `SAMPLE_OPTIONS` (the SNS notification's sample, imported on first use of
either) need neither (`triggerd generate-event`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from triggerd.types import JSONDict, lazy_attributes

if TYPE_CHECKING:
    from triggerd.fanout.sns.sample import SAMPLE_OPTIONS as SAMPLE_OPTIONS

    from ._plugin import SnsHttpSourceConfig as SnsHttpSourceConfig
    from ._plugin import plugin as plugin

__all__ = ["SAMPLE_OPTIONS", "SnsHttpSourceConfig", "plugin", "sample_event"]

#: What `_plugin` defines, imported from it on first use (PEP 562).
_LAZY = frozenset(["SnsHttpSourceConfig", "plugin"])


def sample_event(options: Mapping[str, str]) -> JSONDict:
    from triggerd.fanout.sns.sample import sample_event as sample

    return sample(options)


_plugin_attribute = lazy_attributes(__name__, f"{__name__}._plugin", _LAZY)
_sample_attribute = lazy_attributes(__name__, "triggerd.fanout.sns.sample", ["SAMPLE_OPTIONS"])


def __getattr__(name: str) -> Any:
    if name == "SAMPLE_OPTIONS":
        return _sample_attribute(name)
    return _plugin_attribute(name)
