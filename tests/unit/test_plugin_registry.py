"""The registry knows triggerd's own plugins without reading the installed distributions'
entry points; it reads them for a name it does not know, or when every name is asked for."""

from __future__ import annotations

import importlib.metadata
import sys
import tomllib
from importlib.metadata import EntryPoints
from pathlib import Path

import pytest
from click.testing import CliRunner

from triggerd.cli.main import main
from triggerd.config.plugins import BUILTIN, GROUPS, Registry, UnknownPluginError

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_the_builtin_plugins_are_the_entry_points_pyproject_declares() -> None:
    declared = tomllib.loads(PYPROJECT.read_text())["project"]["entry-points"]
    assert {kind: declared[group] for kind, group in GROUPS.items()} == BUILTIN


def count_scans(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    scans: list[int] = []
    real = importlib.metadata.entry_points

    def entry_points() -> EntryPoints:
        scans.append(1)
        return real()

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    return scans


def test_a_builtin_plugin_loads_without_reading_the_installed_entry_points(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scans = count_scans(monkeypatch)
    registry = Registry.discover()
    assert registry.knows("source", "directory") and registry.knows("backend", "local")
    assert registry.is_available("destination", "file")
    assert registry.backend("local").config_model.__name__ == "LocalFunctionConfig"
    assert scans == []


def test_a_builtin_plugin_is_the_object_its_installed_entry_point_loads() -> None:
    registry = Registry.discover()
    installed = importlib.metadata.entry_points(group="triggerd.backends")["local"]
    assert registry.backend("local") is installed.load()


def test_an_unknown_name_reads_the_entry_points_once_and_lists_every_plugin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scans = count_scans(monkeypatch)
    registry = Registry.discover()
    assert not registry.knows("source", "nope")
    with pytest.raises(UnknownPluginError) as caught:
        registry.source("nope")
    assert scans == [1]
    assert str(caught.value) == (
        f"unknown source type 'nope' (known: {', '.join(sorted(BUILTIN['source']))})"
    )


def test_a_hand_built_registry_has_only_what_it_was_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scans = count_scans(monkeypatch)
    registry = Registry()
    assert registry.names("source") == [] and not registry.knows("backend", "local")
    assert scans == []


#: Another distribution's plugins, one of each kind, under a type name triggerd does not have.
ACME_MODULE = """
from typing import ClassVar, Literal

from triggerd.models import DestinationConfig, FunctionConfig, SourceConfig
from triggerd.types import BackendPlugin, DestinationPlugin, SourcePlugin


class AcmeSourceConfig(SourceConfig):
    type: Literal["acme"] = "acme"
    invocation: ClassVar[Literal["sync", "async"]] = "sync"


class AcmeDestinationConfig(DestinationConfig):
    type: Literal["acme"] = "acme"


class AcmeFunctionConfig(FunctionConfig):
    backend: Literal["acme"] = "acme"


source = SourcePlugin(AcmeSourceConfig, lambda config, ctx: None)
destination = DestinationPlugin(AcmeDestinationConfig, lambda config, ctx: None)
backend = BackendPlugin(AcmeFunctionConfig, lambda config, ctx: None)
"""

ACME_ENTRY_POINTS = """\
[triggerd.sources]
acme = acme_triggerd:source

[triggerd.destinations]
acme = acme_triggerd:destination

[triggerd.backends]
acme = acme_triggerd:backend
"""

ACME_CONFIG = """\
[functions.f]
backend = "acme"

[[triggers]]
name = "t"
function = "f"
source = { type = "acme" }
on_failure = { type = "acme" }
"""


@pytest.fixture
def acme_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A distribution installed as pip installs one: a module and its .dist-info (METADATA,
    entry_points.txt) in a directory on sys.path, read by importlib.metadata itself."""
    site = tmp_path / "site"
    info = site / "acme_triggerd-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-triggerd\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(ACME_ENTRY_POINTS)
    (site / "acme_triggerd.py").write_text(ACME_MODULE)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "acme_triggerd", raising=False)
    return tmp_path


def test_another_distributions_plugins_load_under_their_own_type_names(
    acme_installed: Path,
) -> None:
    registry = Registry.discover()
    for kind in GROUPS:
        assert registry.knows(kind, "acme") and registry.is_available(kind, "acme")
        assert "acme" in registry.names(kind)
        assert set(BUILTIN[kind]) < set(registry.names(kind))
    assert registry.source("acme") is sys.modules["acme_triggerd"].source


def test_validate_accepts_a_config_that_uses_another_distributions_plugins(
    acme_installed: Path,
) -> None:
    config = acme_installed / "t.toml"
    config.write_text(ACME_CONFIG)
    result = CliRunner().invoke(main, ["validate", str(config)])
    assert result.exit_code == 0, result.output
    assert "ok (1 functions, 1 triggers)" in result.output
    # A config that misspells it is told the other distribution's name too.
    config.write_text(
        ACME_CONFIG.replace('{ type = "acme" }\non_failure', '{ type = "acmee" }\non_failure')
    )
    result = CliRunner().invoke(main, ["validate", str(config)])
    assert result.exit_code == 2, result.output
    assert "unknown source type 'acmee' (did you mean 'acme'?)" in result.output
