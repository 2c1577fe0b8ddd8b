"""The `sns_http` source: a route on the daemon's public listener subscribed to a real SNS
topic over HTTP(S). Messages are verified (signature, certificate host), subscriptions
confirmed, and notifications invoked with the `aws:sns` event.

Importing this package is cheap: aiohttp and cryptography are imported when a source is
created."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from triggerd.types import JSONDict, Source, SourceContext, SourcePlugin, plugin_config
from triggerd_sns_http.config import SnsHttpSourceConfig


def _create(config: Any, ctx: SourceContext) -> Source:
    from triggerd_sns_http.source import SnsHttpSource

    return SnsHttpSource(plugin_config(config, SnsHttpSourceConfig), ctx)


def _sample_event(options: Mapping[str, str]) -> JSONDict:
    from triggerd.fanout.sns.sample import sample_event

    return sample_event(options)


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
