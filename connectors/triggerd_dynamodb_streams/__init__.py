"""The `dynamodb_streams` source (Lambda's DynamoDB Streams event source mapping).

Importing this package is cheap: aiobotocore is imported only when the source starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from triggerd.types import JSONDict, Source, SourceContext, SourcePlugin, plugin_config

from .config import DynamoDBStreamsSourceConfig

__all__ = ["DynamoDBStreamsSourceConfig", "create", "plugin", "sample_event"]


def create(config: Any, ctx: SourceContext) -> Source:
    from .source import DynamoDBStreamsSource

    return DynamoDBStreamsSource(plugin_config(config, DynamoDBStreamsSourceConfig), ctx)


def sample_event(options: Mapping[str, str]) -> JSONDict:
    from .shape import sample_event as sample

    return sample(options)


plugin = SourcePlugin(
    config_model=DynamoDBStreamsSourceConfig, create=create, sample_event=sample_event
)
