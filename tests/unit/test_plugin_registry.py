"""The registry knows triggerd's own plugins without reading the installed distributions'
entry points; it reads them for a name it does not know, or when every name is asked for."""

from __future__ import annotations

import importlib.metadata
import tomllib
from importlib.metadata import EntryPoints
from pathlib import Path

import pytest

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
