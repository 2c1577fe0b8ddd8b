"""Boundaries the project keeps: the core never imports connectors; every connector folder is
named in every list of connectors (mypy, import-linter, entry points); importing has no side
effects that need a running loop or a server."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())
#: The connector packages, as the folders under connectors/ say.
CONNECTORS = sorted(
    p.name for p in (ROOT / "connectors").glob("triggerd_*") if (p / "__init__.py").is_file()
)


def _contract(name: str) -> dict[str, Any]:
    contracts = PYPROJECT["tool"]["importlinter"]["contracts"]
    found = [c for c in contracts if c["name"] == name]
    assert len(found) == 1, f"no import-linter contract named {name!r}"
    return dict(found[0])


def _connector_lists() -> dict[str, list[str]]:
    """Every hand-kept list of connector packages in pyproject.toml, by where it is."""
    mypy = PYPROJECT["tool"]["mypy"]["packages"]
    roots = PYPROJECT["tool"]["importlinter"]["root_packages"]
    return {
        "[tool.mypy] packages": [p for p in mypy if p.startswith("triggerd_")],
        "[tool.importlinter] root_packages": [p for p in roots if p.startswith("triggerd_")],
        "forbidden_modules of 'The core never imports a connector'": _contract(
            "The core never imports a connector"
        )["forbidden_modules"],
        "source_modules of 'Connectors never import the daemon or the CLI'": _contract(
            "Connectors never import the daemon or the CLI"
        )["source_modules"],
        "modules of 'Connectors are independent of each other'": _contract(
            "Connectors are independent of each other"
        )["modules"],
    }


def test_connectors_are_found() -> None:
    assert {"triggerd_sqs", "triggerd_directory", "triggerd_webhook"} <= set(CONNECTORS)


@pytest.mark.parametrize("where", sorted(_connector_lists()))
def test_every_connector_list_names_every_connector_folder(where: str) -> None:
    # A connector added to connectors/ but not to one of these lists escapes mypy or an
    # architecture contract without anyone noticing.
    assert sorted(_connector_lists()[where]) == CONNECTORS


def test_entry_points_name_only_connector_folders_and_every_folder_has_one() -> None:
    groups = PYPROJECT["project"]["entry-points"]
    tops = {
        ref.split(":")[0].split(".")[0]
        for group in ("triggerd.sources", "triggerd.destinations", "triggerd.backends")
        for ref in groups[group].values()
    }
    assert sorted(t for t in tops if t != "triggerd") == CONNECTORS


def test_core_layers_contract_names_every_core_package() -> None:
    layers = _contract("The core's layers: each imports only the layers below it")["layers"]
    named = {name.strip() for layer in layers for name in layer.split("|")}
    # A core package missing from the layers would be free to import anything.
    packages = {
        f"triggerd.{p.stem}"
        for p in (ROOT / "triggerd").iterdir()
        if (p / "__init__.py").is_file() or (p.suffix == ".py" and not p.stem.startswith("__"))
    }
    assert packages == named


def test_core_never_imports_connectors() -> None:
    offenders = []
    for path in (ROOT / "triggerd").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [
                f"{path.relative_to(ROOT)}: {n}"
                for n in names
                if n.split(".")[0].startswith("triggerd_")
            ]
    assert offenders == []


def test_builtin_plugins_register_through_entry_points() -> None:
    import importlib.metadata

    from triggerd.config.plugins import BUILTIN, DIST, GROUPS, Registry

    # The registry knows them from BUILTIN without reading these: the installed
    # distribution must declare the same (what another tool, and the wheel, sees).
    eps = importlib.metadata.distribution(DIST).entry_points
    installed = {
        kind: {ep.name: ep.value for ep in eps if ep.group == group}
        for kind, group in GROUPS.items()
    }
    assert installed == BUILTIN
    reg = Registry.discover()
    assert {"directory", "schedule"} <= set(reg.names("source"))
    assert "file" in reg.names("destination")
    assert "local" in reg.names("backend")


def test_importing_every_module_is_quiet() -> None:
    # Every package a built-in plugin's entry point names, and the whole core.
    code = (
        "import importlib, importlib.metadata as md, pkgutil, triggerd\n"
        "groups = ('triggerd.sources', 'triggerd.destinations', 'triggerd.backends')\n"
        "tops = {e.module.split('.')[0] for g in groups for e in md.entry_points(group=g)}\n"
        "assert {'triggerd_sqs', 'triggerd_webhook'} <= tops, tops\n"
        "for pkg in [importlib.import_module(t) for t in sorted(tops)]:\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        if not m.name.endswith('__main__') and 'bootstrap' not in m.name:\n"
        "            importlib.import_module(m.name)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "" and out.stderr == ""


def test_dist_is_the_distribution_name() -> None:
    from triggerd.config.plugins import DIST

    assert PYPROJECT["project"]["name"] == DIST


def test_a_missing_extra_names_the_pip_install_that_fixes_it() -> None:
    from triggerd.config.plugins import import_extra
    from triggerd.types import MissingExtraError

    with pytest.raises(MissingExtraError) as info:
        import_extra("triggerd_no_such_client.sub", "kafka", "the kafka source")
    assert str(info.value) == (
        "the kafka source needs triggerd_no_such_client: pip install 'triggerd-daemon[kafka]'"
    )
    assert import_extra("json", "none", "nothing").dumps([]) == "[]"
