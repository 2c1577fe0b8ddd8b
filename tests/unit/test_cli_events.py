"""`triggerd generate-event eventbridge` and the checks `triggerd events replay` makes before it
asks the daemon (the replay itself: tests/integration/test_eventbridge.py)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from triggerd.cli.main import main


def test_generate_event_eventbridge_prints_a_bus_event() -> None:
    done = CliRunner().invoke(
        main,
        [
            "generate-event",
            "eventbridge",
            "--set",
            "source=com.shop",
            "--set",
            "detail-type=Order Placed",
            "--set",
            'detail={"id": 7}',
            "--set",
            "resources=arn:a,arn:b",
        ],
    )
    assert done.exit_code == 0, done.output
    event = json.loads(done.output)
    assert list(event) == [
        "version",
        "id",
        "detail-type",
        "source",
        "account",
        "time",
        "region",
        "resources",
        "detail",
    ]
    assert (event["source"], event["detail-type"], event["detail"]) == (
        "com.shop",
        "Order Placed",
        {"id": 7},
    )
    assert event["resources"] == ["arn:a", "arn:b"] and event["time"].endswith("Z")


def test_generate_event_eventbridge_refuses_bad_options() -> None:
    for option in ("detail=[1]", "detail={", "colour=red"):
        done = CliRunner().invoke(main, ["generate-event", "eventbridge", "--set", option])
        assert done.exit_code == 2, option
        assert done.output.startswith("triggerd: ")


CONFIG = """
[daemon]
state = "sqlite:///state.db"
listen = ""
control_listen = "127.0.0.1:9"

[functions.f]
handler = "app.handler"
code = "fn"

[[event_buses]]
name = "plain"
[[event_buses.rules]]
name = "r"
event_pattern = { source = ["x"] }
targets = [{ function = "f" }]

[[event_buses]]
name = "kept"
archive = {}
"""


def replay(tmp_path: Path, *args: str) -> tuple[int, str]:
    (tmp_path / "fn").mkdir(exist_ok=True)
    (tmp_path / "t.toml").write_text(CONFIG)
    done = CliRunner().invoke(
        main, ["events", "replay", *args, "-c", str(tmp_path / "t.toml")], env={}
    )
    return done.exit_code, done.output


def test_replay_names_what_the_config_lacks(tmp_path: Path) -> None:
    assert replay(tmp_path, "nope", "--since", "1h") == (
        2,
        "triggerd: no event bus 'nope' in the config\n",
    )
    code, out = replay(tmp_path, "plain", "--since", "1h")
    assert code == 2 and "has no archive" in out
    code, out = replay(tmp_path, "kept", "--since", "1h", "--rule", "r")
    assert code == 2 and "has no rule 'r'" in out
    code, out = replay(tmp_path, "kept", "--since", "yesterday")
    assert code == 2 and "--since" in out


def test_replay_without_a_daemon_is_exit_9(tmp_path: Path) -> None:
    code, out = replay(tmp_path, "kept", "--since", "1h")
    assert code == 9 and "cannot be reached" in out


def test_replay_with_an_empty_window_is_exit_2_before_asking_the_daemon(tmp_path: Path) -> None:
    # control_listen points at a closed port: exit 2 (not 9) shows the daemon was not asked.
    code, out = replay(tmp_path, "kept", "--since", "1h", "--until", "2h")
    assert code == 2 and "--until must be later than --since" in out
