"""What every translator returns, and the overrides file they share.

A `Translation` holds the triggerd config as plain data (what `tomllib.load` would return for
the equivalent TOML file: `daemon`, `functions`, `triggers`, ...) so that it goes through the
same validation as a hand-written file, and `Warning`s naming each property of the source
definition that has no triggerd equivalent or was not understood."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Translation", "TranslationWarning"]


@dataclass(frozen=True)
class TranslationWarning:
    """A property that was not carried over: where it is (`Resources.Fn.Properties.Events.
    Q.Properties.Foo`, `functions.fn.events[0].sqs.foo`) and why."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class Translation:
    """The triggerd config (TOML-shaped data) and the warnings of one translation."""

    config: dict[str, Any] = field(default_factory=dict)
    warnings: list[TranslationWarning] = field(default_factory=list)

    def warn(self, where: str, message: str) -> None:
        self.warnings.append(TranslationWarning(where, message))
