"""What a reload restarts: the running config compared with the new one."""

from __future__ import annotations

from pathlib import Path

from tests.fakes import fake_registry
from triggerd.config.load import load_config
from triggerd.config.model import ConfigBase
from triggerd.daemon.changes import diff_configs, enabled_triggers

BASE = """
[daemon]
listen = "127.0.0.1:9070"
shutdown_timeout_s = 30

[functions.f]
backend = "fake"
timeout_s = 3

[functions.g]
backend = "fake"

[[triggers]]
name = "steady"
function = "f"
source = { type = "fake" }

[[triggers]]
name = "tuned"
function = "g"
source = { type = "fake" }
batch_size = 5

[[triggers]]
name = "on-g"
function = "g"
source = { type = "fake" }
"""


def load(tmp_path: Path, text: str, name: str) -> ConfigBase:
    path = tmp_path / name
    path.write_text(text)
    return load_config(path, fake_registry(), {})


def test_the_same_file_loaded_twice_changes_nothing(tmp_path: Path) -> None:
    changes = diff_configs(load(tmp_path, BASE, "a.toml"), load(tmp_path, BASE, "b.toml"))
    assert changes.empty
    assert changes.needs_restart == ()


def test_changed_added_removed_and_disabled_triggers(tmp_path: Path) -> None:
    new = BASE.replace("batch_size = 5", "batch_size = 7").replace(
        'name = "on-g"', 'name = "on-g"\nenabled = false'
    )
    new += '\n[[triggers]]\nname = "fresh"\nfunction = "f"\nsource = { type = "fake" }\n'
    changes = diff_configs(load(tmp_path, BASE, "a.toml"), load(tmp_path, new, "b.toml"))
    assert changes.triggers_changed == {"tuned"}
    assert changes.triggers_added == {"fresh"}
    assert changes.triggers_removed == {"on-g"}, "disabled counts as removed"
    assert not (changes.functions_added or changes.functions_removed or changes.functions_changed)


def test_a_changed_function_restarts_its_triggers_only(tmp_path: Path) -> None:
    new = BASE.replace("timeout_s = 3", "timeout_s = 4")
    changes = diff_configs(load(tmp_path, BASE, "a.toml"), load(tmp_path, new, "b.toml"))
    assert changes.functions_changed == {"f"}
    assert changes.triggers_changed == {"steady"}


def test_functions_added_and_removed(tmp_path: Path) -> None:
    new = BASE.replace("[functions.g]", '[functions.h]\nbackend = "fake"\n\n[functions.g]')
    new = new.replace('[functions.f]\nbackend = "fake"\ntimeout_s = 3\n', "")
    new = new.replace('function = "f"', 'function = "h"')
    changes = diff_configs(load(tmp_path, BASE, "a.toml"), load(tmp_path, new, "b.toml"))
    assert changes.functions_added == {"h"}
    assert changes.functions_removed == {"f"}
    assert changes.triggers_changed == {"steady"}, "its function is another one now"


def test_daemon_settings_that_need_a_restart_keep_their_values(tmp_path: Path) -> None:
    new = BASE.replace("127.0.0.1:9070", "127.0.0.1:9072").replace(
        "shutdown_timeout_s = 30", 'shutdown_timeout_s = 5\nlog_level = "DEBUG"'
    )
    changes = diff_configs(load(tmp_path, BASE, "a.toml"), load(tmp_path, new, "b.toml"))
    assert changes.needs_restart == ("daemon.listen",)
    assert changes.config.daemon.listen == "127.0.0.1:9070"
    assert changes.config.daemon.shutdown_timeout_s == 5
    assert changes.config.daemon.log_level == "DEBUG"
    assert changes.empty


def test_enabled_triggers_are_named_in_config_order(tmp_path: Path) -> None:
    cfg = load(tmp_path, BASE.replace('name = "tuned"', 'name = "tuned"\nenabled = false'), "a")
    assert list(enabled_triggers(cfg)) == ["steady", "on-g"]


def test_a_changed_telemetry_section_needs_a_restart(tmp_path: Path) -> None:
    new = BASE + '\n[telemetry.otel]\nendpoint = "http://127.0.0.1:4318/v1/traces"\n'
    changes = diff_configs(load(tmp_path, BASE, "a.toml"), load(tmp_path, new, "b.toml"))
    assert changes.needs_restart == ("telemetry",)
    assert changes.config.telemetry.otel is None, "the running value is kept"


BUS = """
[[event_buses]]
[[event_buses.rules]]
name = "r"
event_pattern = { source = ["%s"] }
targets = [{ function = "f" }]
"""


def test_changed_event_buses_apply_and_adding_the_first_needs_a_restart(tmp_path: Path) -> None:
    control = BASE.replace(
        "shutdown_timeout_s = 30",
        'shutdown_timeout_s = 30\ncontrol_listen = ""\ncontrol_on_public = true',
    )
    old = load(tmp_path, control + BUS % "a", "a.toml")
    changes = diff_configs(old, load(tmp_path, control + BUS % "b", "b.toml"))
    assert changes.needs_restart == ()
    assert changes.config.event_buses[0].rules[0].pattern_json == '{"source":["b"]}'
    first = diff_configs(load(tmp_path, control, "c.toml"), old)
    assert first.needs_restart == ("event_buses",)
    assert first.config.event_buses == []


def test_changed_async_invocation_settings_apply_to_their_function(tmp_path: Path) -> None:
    old = BASE + "\n[async_invocation.f]\nmaximum_retry_attempts = 1\n"
    new = BASE + "\n[async_invocation.f]\nmaximum_retry_attempts = 0\n[async_invocation.g]\n"
    changes = diff_configs(load(tmp_path, old, "a.toml"), load(tmp_path, new, "b.toml"))
    assert changes.needs_restart == ()
    assert changes.async_changed == {"f", "g"} and not changes.empty
    assert changes.config.async_invocation_map["f"].maximum_retry_attempts == 0
    assert changes.triggers_changed == set(), "the functions' triggers are not restarted"
    same = diff_configs(load(tmp_path, new, "c.toml"), load(tmp_path, new, "d.toml"))
    assert same.empty
