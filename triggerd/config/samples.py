"""generate-event's samples, shared by the CLI (`triggerd generate-event`) and the test
harness (`FunctionUnderTest.invoke_sample`): a source plugin's `sample_event`, or a service
triggerd serves itself (`eventbridge`, `sns`), with the options each takes.

A source package may offer `sample_event` and `SAMPLE_OPTIONS` at its top level, beside the
plugin its entry point names: they are used without loading the plugin (the built-in
connectors build their plugin, with its pydantic config model, on first use)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from triggerd.config.plugins import Registry

#: generate-event for the services triggerd serves itself (not source plugins): the module
#: with their `sample_event` and `SAMPLE_OPTIONS` (imported by name: they live above this
#: layer).
SERVICE_SAMPLES: dict[str, str] = {
    "eventbridge": "triggerd.fanout.events.sample",
    "sns": "triggerd.fanout.sns.sample",
}

#: Other names generate-event takes for a source type: AWS's (`sam local generate-event
#: dynamodb`).
SAMPLE_ALIASES: dict[str, str] = {"dynamodb": "dynamodb_streams"}

SampleMaker = Callable[[Mapping[str, str]], Any]


def sample_names(registry: Registry) -> list[str]:
    """Every name generate-event takes: the source types, their aliases and the
    services."""
    sources = registry.names("source")
    aliases = {a for a, source in SAMPLE_ALIASES.items() if source in sources}
    return sorted({*sources, *aliases, *SERVICE_SAMPLES})


def sample_maker(registry: Registry, source: str) -> tuple[SampleMaker | None, Mapping[str, str]]:
    """The sample builder for `source` (None: the source has none) and the options it takes;
    UnknownPluginError / MissingExtraError as the registry raises them."""
    source = SAMPLE_ALIASES.get(source, source)
    if source in SERVICE_SAMPLES:
        module = importlib.import_module(SERVICE_SAMPLES[source])
        return module.sample_event, module.SAMPLE_OPTIONS
    # A source package's own `sample_event` and `SAMPLE_OPTIONS`, when it has them, are the
    # plugin's without its config model (and pydantic): most of generate-event's start-up.
    package = registry.entry_module("source", source)
    make, options = getattr(package, "sample_event", None), getattr(package, "SAMPLE_OPTIONS", None)
    if callable(make) and isinstance(options, Mapping):
        return make, options
    plugin = registry.source(source)
    return plugin.sample_event, plugin.sample_options


def unknown_options(options: Iterable[str], known: Iterable[str]) -> list[str]:
    """The options not in `known`; a known `PREFIX.NAME` stands for any `PREFIX.<name>`
    (sns: `attr.NAME`)."""
    names = list(known)
    prefixes = tuple(o.removesuffix("NAME") for o in names if o.endswith(".NAME"))
    return sorted(k for k in options if k not in names and not k.startswith(prefixes))
