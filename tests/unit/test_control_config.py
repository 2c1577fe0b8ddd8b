"""The control surface's settings: where it listens, when signatures are required, and the
access keys' policies, all checked when the config is validated."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from triggerd.config.load import validate_data
from triggerd.config.model import DaemonSettings
from triggerd.config.plugins import Registry
from triggerd.types import ConfigError

SECRET = "s3cr3t-value-that-is-long-enough"
KEY = {"access_key_id": "AKIACONTROL", "secret_access_key": SECRET, "actions": ["lambda:*"]}


def problems(daemon: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        validate_data({"daemon": daemon}, Registry(), Path("."))
    return info.value.problems


def settings(**daemon: Any) -> DaemonSettings:
    return validate_data({"daemon": daemon}, Registry(), Path(".")).daemon


def test_the_control_listener_is_on_loopback_by_default_apart_from_the_public_one() -> None:
    d = settings()
    assert d.listen == "127.0.0.1:9070" and d.control_listen == "127.0.0.1:9071"
    assert not d.control_on_public and d.control_addresses == ["127.0.0.1:9071"]


def test_an_exposed_control_listener_without_keys_is_a_config_error() -> None:
    out = problems({"control_listen": "0.0.0.0:9071"})
    assert len(out) == 1
    assert "0.0.0.0:9071, which is not loopback, without authentication" in out[0]
    assert "[[daemon.access_keys]]" in out[0] and "allow_unauthenticated" in out[0]


def test_control_endpoints_on_an_exposed_public_listener_need_keys_too() -> None:
    out = problems({"listen": "0.0.0.0:9070", "control_on_public": True})
    assert len(out) == 1 and "0.0.0.0:9070" in out[0]
    assert settings(listen="0.0.0.0:9070").control_addresses == ["127.0.0.1:9071"]


@pytest.mark.parametrize("host", ["127.0.0.1", "127.9.9.9", "[::1]", "localhost"])
def test_loopback_needs_no_keys(host: str) -> None:
    assert settings(control_listen=f"{host}:9071").access_keys == []


def test_keys_or_an_explicit_opt_out_allow_an_exposed_control_listener() -> None:
    assert settings(control_listen="0.0.0.0:9071", access_keys=[KEY]).access_keys
    assert settings(control_listen="0.0.0.0:9071", allow_unauthenticated=True).control_listen


def test_an_opt_out_that_changes_nothing_is_refused() -> None:
    out = problems({"allow_unauthenticated": True})
    assert len(out) == 1 and "loopback only" in out[0]
    out = problems({"control_listen": "0.0.0.0:9071", "allow_unauthenticated": True,
                    "access_keys": [KEY]})  # fmt: skip
    assert len(out) == 1 and "every call must be signed" in out[0]


def test_control_on_public_needs_a_public_listener() -> None:
    out = problems({"listen": "", "control_on_public": True})
    assert len(out) == 1 and "control_on_public: there is no public listener" in out[0]


def test_the_two_listeners_need_their_own_addresses() -> None:
    out = problems({"listen": "127.0.0.1:9070", "control_listen": "127.0.0.1:9070"})
    assert len(out) == 1 and "control_listen: 127.0.0.1:9070 is also listen" in out[0]


def test_keys_without_a_control_surface_are_refused() -> None:
    out = problems({"control_listen": "", "access_keys": [KEY]})
    assert len(out) == 1 and "no listener serves the control endpoints" in out[0]


def test_the_secret_is_never_shown() -> None:
    d = settings(access_keys=[KEY])
    assert SECRET not in repr(d) and SECRET not in str(d.access_keys[0])
    assert SECRET not in d.model_dump_json()
    out = problems({"access_keys": [{**KEY, "actions": ["lambda:InvokeFuntion"]}]})
    assert not any(SECRET in line for line in out)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"actions": ["lambda:InvokeFuntion"]}, "matches no action triggerd serves"),
        ({"actions": ["invoke"]}, "is not an action"),
        ({"actions": []}, "at least 1 item"),
        ({"resources": []}, "at least 1 item"),
        ({"access_key_id": "AKIA/EVIL"}, "letters, digits or underscores"),
        ({"secret_access_key": "short"}, "at least 16 characters"),
        ({"name": "has space"}, "access_keys.0.name"),
    ],
)
def test_bad_keys_are_named_precisely(change: dict[str, Any], words: str) -> None:
    out = problems({"access_keys": [{**KEY, **change}]})
    assert len(out) == 1 and words in out[0], out
    assert out[0].startswith("daemon.access_keys.0")


def test_duplicate_key_ids_are_refused() -> None:
    out = problems({"access_keys": [KEY, KEY]})
    assert len(out) == 1 and "appears twice" in out[0]


@pytest.mark.parametrize("action", ["*", "lambda:*", "lambda:Invoke*", "lambda:ListFunctions"])
def test_wildcard_actions_that_match_something_are_accepted(action: str) -> None:
    assert settings(access_keys=[{**KEY, "actions": [action]}]).access_keys[0].actions == [action]
