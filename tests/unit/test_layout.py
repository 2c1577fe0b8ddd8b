"""Boundaries the project keeps: the core never imports connectors; importing has no side
effects that need a running loop or a server."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


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
    from triggerd.config.plugins import Registry

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
