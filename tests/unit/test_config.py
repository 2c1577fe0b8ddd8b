"""Config loading: interpolation, key-path errors, did-you-mean, limits, schema, examples."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes import fake_registry
from triggerd.config.load import interpolate, json_schema, load_config
from triggerd.config.plugins import Registry
from triggerd.types import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, name: str = "t.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), fake_registry(), env or {})
    return info.value.problems


GOOD = """
[functions.f]
backend = "fake"
[[triggers]]
function = "f"
source = { type = "fake" }
"""


def test_minimal_config_loads_with_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD), fake_registry(), {})
    trig = cfg.trigger_list[0]
    assert cfg.trigger_name(0) == "f-0"
    assert trig.effective_batch_size == 10
    assert trig.effective_retry_attempts == -1
    assert cfg.daemon.listen == "127.0.0.1:9070"


def test_interpolation_with_defaults_and_escapes() -> None:
    data, missing = interpolate(
        {"a": "${X}", "b": "${Y:-dflt}", "c": ["$${X}", "pre-${X}-post"], "d": "${Z}"},
        {"X": "1"},
    )
    assert data == {"a": "1", "b": "dflt", "c": ["${X}", "pre-1-post"], "d": ""}
    assert missing == ["d: environment variable Z is not set"]


def test_unset_variable_names_its_key_path(tmp_path: Path) -> None:
    text = GOOD.replace('type = "fake"', 'type = "fake", name_hint = "${QUEUE_URL}"')
    out = problems(tmp_path, text.replace("name_hint", "x"))
    assert "triggers.0.source.x: environment variable QUEUE_URL is not set" in out


def test_unknown_key_suggests_the_close_one(tmp_path: Path) -> None:
    out = problems(tmp_path, GOOD + "batch_sise = 5\n")
    assert out == ["triggers.0.batch_sise: unknown key (did you mean 'batch_size'?)"]


def test_unknown_key_inside_a_plugin_section(tmp_path: Path) -> None:
    out = problems(tmp_path, GOOD.replace('backend = "fake"', 'backend = "fake"\ntimeout = 3'))
    assert out == ["functions.f.timeout: unknown key (did you mean 'timeout_s'?)"]


def test_unknown_source_type_is_named(tmp_path: Path) -> None:
    out = problems(tmp_path, GOOD.replace('type = "fake"', 'type = "faek"'))
    assert out == ["triggers.0.source.type: unknown source type 'faek' (did you mean 'fake'?)"]


def test_missing_function_is_named(tmp_path: Path) -> None:
    out = problems(tmp_path, GOOD.replace('function = "f"', 'function = "g"'))
    assert out == ["triggers.0.function: no function 'g'"]


def test_every_problem_gets_its_own_line(tmp_path: Path) -> None:
    text = GOOD + 'batch_size = 0\nmaximum_concurrency = "x"\n'
    out = problems(tmp_path, text)
    assert len(out) == 2
    assert any(p.startswith("triggers.0.batch_size:") for p in out)
    assert any(p.startswith("triggers.0.maximum_concurrency:") for p in out)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("maximum_retry_attempts = 3", "maximum_retry_attempts must be 0-2"),
        ("maximum_event_age_s = 30", "maximum_event_age_s must be 60-21600"),
        ("filters = [{ body = 5 }]", "filters:"),
    ],
)
def test_async_trigger_limits(tmp_path: Path, extra: str, message: str) -> None:
    text = GOOD.replace('type = "fake"', 'type = "fakepush"') + extra + "\n"
    out = problems(tmp_path, text)
    assert len(out) == 1 and message in out[0] and out[0].startswith("triggers.0")


def test_stream_record_age_limits(tmp_path: Path) -> None:
    out = problems(tmp_path, GOOD + "maximum_record_age_s = 10\n")
    assert "maximum_record_age_s must be -1 (infinite) or 60-604800" in out[0]


@pytest.mark.parametrize("value", ["inf", "+inf", "nan"])
def test_a_delay_that_is_not_a_finite_number_is_refused(tmp_path: Path, value: str) -> None:
    # TOML has inf and nan, and pydantic took them: retry_max_delay_s = inf let the retry
    # backoff of a stream trigger grow without bound, then wait for ever.
    out = problems(tmp_path, GOOD + f"retry_max_delay_s = {value}\n")
    assert out == ["triggers.0.retry_max_delay_s: Input should be a finite number"]


def test_duplicate_trigger_names(tmp_path: Path) -> None:
    text = GOOD + 'name = "a"\n[[triggers]]\nfunction = "f"\nname = "a"\nsource = {type="fake"}\n'
    assert problems(tmp_path, text) == ["triggers.1.name: duplicate trigger name 'a'"]


def test_bad_toml_is_one_clear_line(tmp_path: Path) -> None:
    out = problems(tmp_path, "[functions\n")
    assert len(out) == 1 and "invalid TOML" in out[0]


def test_yaml_is_accepted(tmp_path: Path) -> None:
    text = (
        "functions:\n  f: {backend: fake}\ntriggers:\n  - function: f\n    source: {type: fake}\n"
    )
    cfg = load_config(write(tmp_path, text, "t.yaml"), fake_registry(), {})
    assert cfg.trigger_list[0].function == "f"


def test_schema_has_every_plugin_section() -> None:
    schema = json_schema(fake_registry())
    text = str(schema)
    for name in ("FakeSyncConfig", "FakeAsyncConfig", "MemDestConfig", "FakeFunctionConfig"):
        assert name in text


@pytest.mark.parametrize(
    "path",
    sorted((ROOT / "config").glob("*.toml")) + [ROOT / "examples" / "triggerd.toml"],
    ids=lambda p: p.name,
)
def test_shipped_configs_validate(path: Path) -> None:
    cfg = load_config(path, Registry.discover(), {"QUEUE_URL": "x"})
    assert cfg.functions


@pytest.mark.parametrize(
    ("daemon", "message"),
    [
        ('listen = "localhost"', "daemon.listen:"),
        ('listen = "127.0.0.1:99999"', "port must be 0-65535"),
        ('state = "postgresql://u:hunter2@db/x?pool_size=1"', "pool_size in the postgresql URL"),
        ('state = "redis://x"', "daemon.state:"),
    ],
)
def test_daemon_settings_are_checked_at_validate_time(
    tmp_path: Path, daemon: str, message: str
) -> None:
    out = problems(tmp_path, f"[daemon]\n{daemon}\n" + GOOD)
    assert len(out) == 1 and message in out[0], out
    assert "hunter2" not in out[0]


def test_poll_settings_on_an_async_source_are_rejected(tmp_path: Path) -> None:
    text = GOOD.replace('type = "fake"', 'type = "fakepush"') + "batch_size = 5\n"
    out = problems(tmp_path, text)
    assert len(out) == 1 and "batch_size: only poll sources use this" in out[0]


def test_big_batches_need_a_window_where_aws_requires_it(tmp_path: Path) -> None:
    text = GOOD.replace('type = "fake"', 'type = "fakequeue"') + "batch_size = 50\n"
    out = problems(tmp_path, text)
    assert len(out) == 1 and "batching_window_s of at least 1" in out[0]
    ok = text + "batching_window_s = 1\n"
    assert load_config(write(tmp_path, ok), fake_registry(), {}).trigger_list[0].batch_size == 50


def test_aws_credentials_are_client_keys_only_when_given_in_pairs() -> None:
    from pydantic import ValidationError

    from triggerd.config.aws import AwsCredentials

    assert AwsCredentials().client_credentials() == {}
    keys = AwsCredentials.model_validate(
        {"aws_access_key_id": "AK", "aws_secret_access_key": "SK", "aws_session_token": "T"}
    ).client_credentials()
    assert keys == {
        "aws_access_key_id": "AK",
        "aws_secret_access_key": "SK",
        "aws_session_token": "T",
    }
    with pytest.raises(ValidationError, match="go together"):
        AwsCredentials.model_validate({"aws_secret_access_key": "SK"})


@pytest.mark.parametrize(
    ("state_directory", "expected"),
    [
        ("/var/lib/triggerd", "sqlite:////var/lib/triggerd/state.db"),
        ("/var/lib/triggerd/orders:/var/lib/other", "sqlite:////var/lib/triggerd/orders/state.db"),
        (None, "sqlite:///triggerd-state/state.db"),
    ],
)
def test_the_default_state_store_is_in_systemds_state_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, state_directory: str | None, expected: str
) -> None:
    if state_directory is None:
        monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    else:
        monkeypatch.setenv("STATE_DIRECTORY", state_directory)
    cfg = load_config(write(tmp_path, GOOD), fake_registry(), {})
    assert cfg.daemon.state == expected
    explicit = load_config(
        write(tmp_path, '[daemon]\nstate = "sqlite:////x/s.db"\n' + GOOD), fake_registry(), {}
    )
    assert explicit.daemon.state == "sqlite:////x/s.db"


def test_listener_limits_default_and_reach_every_listener(tmp_path: Path) -> None:
    from triggerd.http.limits import ListenerLimits

    defaults = load_config(write(tmp_path, GOOD), fake_registry(), {}).daemon
    assert ListenerLimits.from_settings(defaults) == ListenerLimits()
    assert (defaults.http_max_connections, defaults.http_header_timeout_s) == (1024, 10.0)
    text = "[daemon]\nhttp_max_connections = 10\nhttp_body_min_bytes_per_s = 1\n" + GOOD
    limits = ListenerLimits.from_settings(
        load_config(write(tmp_path, text), fake_registry(), {}).daemon
    )
    assert (limits.max_connections, limits.body_min_bytes_per_s) == (10, 1)


@pytest.mark.parametrize(
    "daemon",
    [
        "http_max_connections = 0",
        "http_header_timeout_s = 0",
        "http_body_timeout_s = -1",
        "http_body_min_bytes_per_s = 0",
        "http_idle_timeout_s = 0",
    ],
)
def test_listener_limits_out_of_range_are_config_errors(tmp_path: Path, daemon: str) -> None:
    out = problems(tmp_path, f"[daemon]\n{daemon}\n" + GOOD)
    assert len(out) == 1 and out[0].startswith("daemon." + daemon.split(" ")[0]), out
