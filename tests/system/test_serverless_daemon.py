"""A serverless.yml with HTTP API and REST events run by `triggerd run --serverless` as a
subprocess: its local Python handler answers over the public listener with the environment
the file's variables (`--opt`, the environment) gave it; and `triggerd import serverless`'s
output (render_toml) is a config file the loader reads to the same functions and routes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.system.conftest import free_port
from tests.system.sam_support import daemon_overrides, get, start_with_overrides, stop
from triggerd.config.load import load_config
from triggerd.config.plugins import Registry
from triggerd.imports.common import render_toml
from triggerd.imports.serverless import translate_serverless

pytestmark = pytest.mark.system

SERVICE = Path(__file__).resolve().parents[1] / "data" / "serverless" / "http"


def test_import_output_is_the_config_run_serverless_serves(tmp_path: Path) -> None:
    shutil.copytree(SERVICE, tmp_path, dirs_exist_ok=True)
    t = translate_serverless(
        tmp_path / "serverless.yml",
        overrides=None,
        options={"stage": "e2e"},
        environ={"GREETING": "hej $HOME"},
    )
    assert t.warnings == []
    (tmp_path / "triggerd.toml").write_text(render_toml(t.config))
    cfg = load_config(str(tmp_path / "triggerd.toml"), Registry.discover())
    greet = cfg.function_map["greet"]
    assert greet.environment == {"GREETING": "hej $HOME", "STAGE": "e2e"}  # type: ignore[attr-defined]
    routes = sorted(
        (t.source_config.method, t.source_config.path)  # type: ignore[attr-defined]
        for t in cfg.trigger_list
    )
    assert routes == [("GET", "/greet/{name}"), ("POST", "/v1/greet/{name}")]


def test_run_serverless_answers_over_http(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(SERVICE, tmp_path, dirs_exist_ok=True)
    port = free_port()
    monkeypatch.setenv("GREETING", "hej")
    proc = start_with_overrides(
        tmp_path,
        daemon_overrides(tmp_path, port),
        "serverless",
        "serverless.yml",
        "--opt",
        "stage=e2e",
        "--no-watch",
    )
    try:
        status, body = get(f"http://127.0.0.1:{port}/greet/ana")
        assert status == 200
        assert body == {
            "message": "hej, ana",
            "stage": "e2e",
            "payload": "2.0",
            "method": "GET",
            "function": "greet",
        }
        status, body = get(f"http://127.0.0.1:{port}/v1/greet/bo", data=b"{}")
        assert (status, body["payload"], body["message"]) == (200, "1.0", "hej, bo")
        summary = (tmp_path / "stdout.log").read_text()
        assert "trigger greet-httpapi-0: webhook -> greet" in summary
    finally:
        stop(proc)
    assert proc.returncode == 0
