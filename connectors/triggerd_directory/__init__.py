"""The `directory` source: a local directory's file changes as S3 event notifications.

Importing this package is cheap: watchfiles is imported only when a source starts.

The plugin (its config model: pydantic) is loaded on first use of `plugin`;
`sample_event` and `SAMPLE_OPTIONS` need neither (`triggerd generate-event`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from triggerd.events.s3 import S3_SAMPLE_OPTIONS, sample_s3_event
from triggerd.types import JSONDict, lazy_attributes

if TYPE_CHECKING:
    from ._plugin import DirectorySourceConfig as DirectorySourceConfig
    from ._plugin import create as create
    from ._plugin import plugin as plugin

__all__ = ["DirectorySourceConfig", "create", "plugin", "sample_event"]

#: What `_plugin` defines, imported from it on first use (PEP 562).
_LAZY = frozenset(["DirectorySourceConfig", "create", "plugin"])


SAMPLE_OPTIONS = S3_SAMPLE_OPTIONS


def sample_event(options: Mapping[str, str]) -> JSONDict:
    """`triggerd generate-event directory [bucket=..] [key=..] [event=created|modified|deleted]`."""
    return sample_s3_event(options)


__getattr__ = lazy_attributes(__name__, f"{__name__}._plugin", _LAZY)
