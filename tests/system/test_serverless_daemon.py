"""A serverless.yml with HTTP API and REST events, translated and run by `triggerd run` as a
subprocess: its local Python handler answers over the public listener with the environment
the file's variables gave it."""

from __future__ import annotations

import json
import re
import shutil
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.system.conftest import Daemon, free_port
from triggerd.imports.serverless import translate_serverless

pytestmark = pytest.mark.system

SERVICE = Path(__file__).resolve().parents[1] / "data" / "serverless" / "http"
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def toml_value(value: Any) -> str:
    """A TOML inline value; strings have `$` doubled, as the config loader reads `$$` as one
    `$` (so a value is never taken for `${VAR}`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value.replace("$", "$$"))  # JSON's escapes are TOML's too
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML for {value!r}")


def toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key)


def render(config: dict[str, Any]) -> str:
    """The translated config as a TOML file: [daemon], [functions.NAME], [[triggers]]."""
    lines = ["[daemon]"]
    lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in config["daemon"].items()]
    for name, table in config["functions"].items():
        lines.append(f"\n[functions.{toml_key(name)}]")
        lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in table.items()]
    for trig in config["triggers"]:
        lines.append("\n[[triggers]]")
        lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in trig.items()]
    return "\n".join(lines) + "\n"


def test_render_round_trips_through_tomllib() -> None:
    data = {"daemon": {"x": "a$b"}, "functions": {"f": {"e": {"K.1": 'v\n"q"'}}}, "triggers": []}
    back = tomllib.loads(render(data))
    assert back["daemon"]["x"] == "a$$b" and back["functions"]["f"]["e"] == {"K.1": 'v\n"q"'}


def call(url: str, method: str) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, method=method, data=b"{}" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.status, json.loads(resp.read())


def test_translated_service_answers_over_http(tmp_path: Path) -> None:
    shutil.copytree(SERVICE, tmp_path, dirs_exist_ok=True)
    t = translate_serverless(
        tmp_path / "serverless.yml",
        overrides=None,
        options={"stage": "e2e"},
        environ={"GREETING": "hej"},
    )
    assert t.warnings == []
    port = free_port()
    t.config["daemon"].update(
        {
            "listen": f"127.0.0.1:{port}",
            "control_listen": "",
            "state": "sqlite:///state/state.db",
            "shutdown_timeout_s": 5,
        }
    )
    daemon = Daemon(tmp_path, render(t.config))
    try:
        daemon.start(ready_timeout=120)
        status, body = call(f"http://127.0.0.1:{port}/greet/ana", "GET")
        assert status == 200
        assert body == {
            "message": "hej, ana",
            "stage": "e2e",
            "payload": "2.0",
            "method": "GET",
            "function": "greet",
        }
        status, body = call(f"http://127.0.0.1:{port}/v1/greet/bo", "POST")
        assert (status, body["payload"], body["message"]) == (200, "1.0", "hej, bo")
        assert daemon.terminate() == 0
    finally:
        daemon.stop()
