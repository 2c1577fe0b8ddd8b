"""Entry-point discovery of sources, destinations and backends.

The entry-point name is the config `type` (or `backend`). Plugins are loaded lazily, on first
use, so a missing optional dependency only matters for the configs that use it, and then says
which extra to install.
"""

from __future__ import annotations

import functools
import importlib
import re
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Literal, TypeVar, cast

from triggerd.types import BackendPlugin, DestinationPlugin, MissingExtraError, SourcePlugin

# importlib.metadata (with email's parser, about a fifth of `triggerd generate-event`) is
# imported by the functions that read installed metadata: triggerd's own plugins load
# without it.
if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

#: The distribution users install (`triggerd` on PyPI is an unrelated project).
DIST = "triggerd-daemon"


def install_hint(extra: str) -> str:
    """The command that installs an extra, for error messages."""
    return f"pip install '{DIST}[{extra}]'"


def import_extra(module: str, extra: str, needed_by: str) -> ModuleType:
    """Import an optional dependency's `module`, or raise MissingExtraError saying that
    `needed_by` needs it and which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        raise MissingExtraError(f"{needed_by} needs {top}: {install_hint(extra)}") from exc


def _normal(text: str) -> str:
    """Names as packaging compares extras: runs of `-`, `_` and `.` alike, any case."""
    return re.sub(r"[-_.]+", "-", text).lower()


#: The distribution name a requirement line starts with (PEP 508).
_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _installed(name: re.Match[str] | None) -> bool:
    import importlib.metadata

    if name is None:
        return False
    try:
        # Found, not read: a distribution's metadata is parsed (email's parser, about a
        # millisecond each) only to read a field, and none is needed here.
        importlib.metadata.distribution(name.group(1))
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


_REQUIRES_DIST = "requires-dist:"


@functools.cache
def _requirements(dist: str) -> tuple[str, ...] | None:
    """`dist`'s requirement lines (None when it has no installed metadata): read once per
    process, as `validate` asks for every extra a config uses. Picked from the METADATA
    file's header lines, not parsed by `importlib.metadata.requires`: its email parser reads
    the whole file, README included (some 140 kB), and the import of `email.parser` costs
    as much again."""
    import importlib.metadata

    try:
        found = importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return None
    # The file importlib.metadata reads: a .dist-info's METADATA, an .egg-info's PKG-INFO.
    text = found.read_text("METADATA") or found.read_text("PKG-INFO") or ""
    header = text.partition("\n\n")[0]  # the body (the description) is not read
    lines = tuple(
        line[len(_REQUIRES_DIST) :].strip()
        for line in header.splitlines()
        if line[: len(_REQUIRES_DIST)].lower() == _REQUIRES_DIST
    )
    # None there: an .egg-info's requires.txt, as importlib.metadata reads it.
    return lines or tuple(found.requires or ())


def missing_extra(extra: str) -> str | None:
    """The install hint when a package that `DIST[extra]` requires is not installed (None
    when all are, when the extra does not exist, or when triggerd runs from a source tree
    without installed metadata)."""
    requires = _requirements(DIST)
    if requires is None:
        return None
    # Only lines that name the extra can belong to it: parsing every requirement (and
    # importing `packaging` at all) is most of what this costs a command that reads a config.
    key = _normal(extra)
    lines = [line for line in requires if key in _normal(line)]
    if not lines or all(_installed(_NAME.match(line)) for line in lines):
        # Only a missing distribution can make a hint: when every one these lines name is
        # installed, which of them belong to the extra (packaging's marker parsing, about
        # a third of `triggerd validate`'s CPU) does not matter.
        return None
    import importlib.metadata

    from packaging.requirements import Requirement

    for line in lines:
        req = Requirement(line)
        if req.marker is None or not req.marker.evaluate({"extra": extra}):
            continue
        if req.marker.evaluate({"extra": ""}):
            continue  # a requirement of every install, not of this extra
        if req.name == DIST:
            continue  # an extra made of extras (`all`)
        try:
            importlib.metadata.version(req.name)
        except importlib.metadata.PackageNotFoundError:
            return install_hint(extra)
    return None


Kind = Literal["source", "destination", "backend"]
GROUPS: dict[Kind, str] = {
    "source": "triggerd.sources",
    "destination": "triggerd.destinations",
    "backend": "triggerd.backends",
}
_PLUGIN_TYPES: dict[Kind, type] = {
    "source": SourcePlugin,
    "destination": DestinationPlugin,
    "backend": BackendPlugin,
}
P = TypeVar("P", SourcePlugin, DestinationPlugin, BackendPlugin)


class BuiltinEntryPoint:
    """One of BUILTIN, loaded as its `importlib.metadata.EntryPoint` would be (`module:attr`)."""

    __slots__ = ("name", "value")

    def __init__(self, name: str, value: str) -> None:
        self.name = name
        self.value = value

    @property
    def module(self) -> str:
        return self.value.partition(":")[0]

    def load(self) -> object:
        module, _, attrs = self.value.partition(":")
        found: object = importlib.import_module(module)
        for attr in attrs.split("."):
            found = getattr(found, attr)
        return found


#: triggerd's own plugins by kind and name: the entry points pyproject.toml declares (a test
#: holds the two together). A config that names only these is loaded without reading the
#: entry points of every installed distribution (a scan of each one's metadata directory,
#: some 5 % of `triggerd validate` in a virtualenv of a hundred distributions).
BUILTIN: dict[Kind, dict[str, str]] = {
    "source": {
        "directory": "triggerd_directory:plugin",
        "schedule": "triggerd_schedule:plugin",
        "sqs": "triggerd_sqs:plugin",
        "rabbitmq": "triggerd_rabbitmq:plugin",
        "kafka": "triggerd_kafka:plugin",
        "s3": "triggerd_s3:plugin",
        "webhook": "triggerd_webhook:plugin",
        "postgres": "triggerd_postgres:plugin",
        "kinesis": "triggerd_kinesis:plugin",
        "dynamodb_streams": "triggerd_dynamodb_streams:plugin",
        "sns_http": "triggerd_sns_http:plugin",
    },
    "destination": {
        "file": "triggerd.delivery.destinations:file_plugin",
        "sqs": "triggerd_sqs:destination_plugin",
        "rabbitmq": "triggerd_rabbitmq:destination_plugin",
        "kafka": "triggerd_kafka:destination_plugin",
    },
    "backend": {
        "local": "triggerd.functions.backends.local_plugin:plugin",
        "http": "triggerd.functions.backends.http:plugin",
        "aws": "triggerd.functions.backends.aws:plugin",
    },
}


class UnknownPluginError(LookupError):
    def __init__(self, kind: Kind, name: str, known: list[str]) -> None:
        super().__init__(f"unknown {kind} type {name!r} (known: {', '.join(known) or 'none'})")


@dataclass
class Registry:
    """Plugins by kind and name; built from entry points or by hand in tests."""

    entry_points: dict[Kind, dict[str, EntryPoint | BuiltinEntryPoint]] = field(
        default_factory=dict
    )
    loaded: dict[Kind, dict[str, object]] = field(default_factory=dict)
    #: Whether the installed distributions' entry points are still to be read into
    #: `entry_points` (which holds the BUILTIN ones until then): on the first name that is
    #: not there, or when every name is asked for.
    discovering: bool = False

    @classmethod
    def discover(cls) -> Registry:
        """triggerd's own plugins now, the installed distributions' when one of theirs is
        first asked for (triggerd's own names are triggerd's)."""
        eps: dict[Kind, dict[str, EntryPoint | BuiltinEntryPoint]] = {
            kind: {name: BuiltinEntryPoint(name, value) for name, value in known.items()}
            for kind, known in BUILTIN.items()
        }
        return cls(entry_points=eps, discovering=True)

    def _discover(self) -> None:
        if not self.discovering:
            return
        self.discovering = False
        from importlib.metadata import entry_points

        every = entry_points()  # one pass over the installed distributions, not one per group
        for kind, group in GROUPS.items():
            found: dict[str, EntryPoint | BuiltinEntryPoint] = {
                ep.name: ep for ep in every.select(group=group)
            }
            self.entry_points[kind] = found | self.entry_points.get(kind, {})

    def register(self, kind: Kind, name: str, plugin: object) -> None:
        self.loaded.setdefault(kind, {})[name] = plugin

    def names(self, kind: Kind) -> list[str]:
        self._discover()
        return sorted(set(self.entry_points.get(kind, {})) | set(self.loaded.get(kind, {})))

    def knows(self, kind: Kind, name: str) -> bool:
        """Whether a plugin of that kind and name exists (installed or not)."""
        if name in self.loaded.get(kind, {}) or name in self.entry_points.get(kind, {}):
            return True
        return name in self.names(kind)

    def _entry_point(self, kind: Kind, name: str) -> EntryPoint | BuiltinEntryPoint:
        ep = self.entry_points.get(kind, {}).get(name)
        if ep is None and self.discovering:
            self._discover()
            ep = self.entry_points.get(kind, {}).get(name)
        if ep is None:
            raise UnknownPluginError(kind, name, self.names(kind))
        return ep

    def _load(self, kind: Kind, name: str) -> object:
        cache = self.loaded.setdefault(kind, {})
        if name in cache:
            return cache[name]
        ep = self._entry_point(kind, name)
        try:
            plugin = ep.load()
        except ImportError as exc:
            raise MissingExtraError(
                f"{kind} type {name!r} needs an optional dependency ({exc.name or exc}): "
                f"{install_hint(name)}"
            ) from exc
        if not isinstance(plugin, _PLUGIN_TYPES[kind]):
            raise TypeError(f"entry point {ep.value} is not a {_PLUGIN_TYPES[kind].__name__}")
        cache[name] = plugin
        return plugin

    def entry_module(self, kind: Kind, name: str) -> ModuleType | None:
        """The module a plugin's entry point names, imported without loading the plugin
        (None for a plugin registered by hand): what a module offers beside its plugin (a
        source's `sample_event`) may cost less than the plugin and its config model.
        UnknownPluginError, or MissingExtraError as loading the plugin would raise it."""
        if name in self.loaded.get(kind, {}):
            return None
        ep = self._entry_point(kind, name)
        try:
            return importlib.import_module(ep.module)
        except ImportError as exc:
            raise MissingExtraError(
                f"{kind} type {name!r} needs an optional dependency ({exc.name or exc}): "
                f"{install_hint(name)}"
            ) from exc

    def source(self, name: str) -> SourcePlugin:
        return cast(SourcePlugin, self._load("source", name))

    def destination(self, name: str) -> DestinationPlugin:
        return cast(DestinationPlugin, self._load("destination", name))

    def backend(self, name: str) -> BackendPlugin:
        return cast(BackendPlugin, self._load("backend", name))

    def load(self, kind: Kind, name: str) -> object:
        """The plugin of a kind by name (UnknownPluginError, or MissingExtraError naming the
        extra to install)."""
        return self._load(kind, name)

    def is_available(self, kind: Kind, name: str) -> bool:
        """Whether the plugin exists and loads (its extra is installed)."""
        try:
            self._load(kind, name)
        except (UnknownPluginError, MissingExtraError):
            return False
        return True

    def available(self, kind: Kind) -> dict[str, object]:
        """Every plugin of a kind that loads; ones whose extra is missing are left out."""
        out: dict[str, object] = {}
        for name in self.names(kind):
            try:
                out[name] = self._load(kind, name)
            except MissingExtraError:
                continue
        return out
