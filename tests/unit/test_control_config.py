"""The control surface's settings: where it listens, when signatures are required, and the
access keys' policies, all checked when the config is validated."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from triggerd.config.load import validate_data
from triggerd.config.model import CONTROL_ENDPOINTS, PUBLIC_ENDPOINTS, DaemonSettings
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


# ---- resource patterns ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern",
    [
        "arn:aws:lambda:eu-west-1:*:function:orders",  # another region
        "arn:aws:lambda:*:999999999999:function:orders",  # another account
        "arn:aws:lambda:us-east-1:123456789012:layer:orders",  # not a function
        "arn:aws:sqs:*:*:orders",  # another service
        "arn:aws-cn:lambda:*:*:function:*",  # another partition
    ],
)
def test_a_resource_arn_no_function_here_can_match_is_refused(pattern: str) -> None:
    out = problems({"access_keys": [{**KEY, "resources": ["orders", pattern]}]})
    assert len(out) == 1, out
    assert out[0].startswith("daemon.access_keys.0.resources")
    assert f"{pattern!r} can never match" in out[0]
    assert "arn:aws:lambda:us-east-1:123456789012:function:<name>" in out[0]
    assert "arn:aws:triggerd:us-east-1:123456789012:trigger/<name>" in out[0]


@pytest.mark.parametrize(
    "pattern",
    [
        "arn:aws:lambda:*:*:function:orders-eu:*",
        "arn:aws:lambda:us-east-1:123456789012:function:orders",
        "arn:aws:lambda:us-*:1234*:function:*",
        "arn:aws:triggerd:*:*:trigger/orders-*",
        "arn:*",
        "arn:aws:lambda:??-east-?:*",
        "*",
        "orders-eu:*",
    ],
)
def test_resource_patterns_that_can_match_are_accepted(pattern: str) -> None:
    d = settings(access_keys=[{**KEY, "resources": [pattern]}])
    assert d.access_keys[0].resources == [pattern]


def test_resource_arns_are_checked_against_the_daemons_own_region_and_account() -> None:
    arn = "arn:aws:lambda:eu-west-1:210987654321:function:orders"
    key = {**KEY, "resources": [arn]}
    assert settings(region="eu-west-1", account_id="210987654321", access_keys=[key])
    assert "can never match" in problems({"access_keys": [key]})[0]


# ---- metrics_token -------------------------------------------------------------------------

TOKEN = "metrics-token-0123456789"


def test_a_metrics_token_is_a_secret_for_an_exposed_control_listener() -> None:
    d = settings(control_listen="0.0.0.0:9071", access_keys=[KEY], metrics_token=TOKEN)
    assert d.metrics_token is not None and d.metrics_token.get_secret_value() == TOKEN
    assert TOKEN not in repr(d) and TOKEN not in d.model_dump_json()
    # with the explicit opt-out it protects the plain endpoints alone
    assert settings(control_listen="0.0.0.0:9071", allow_unauthenticated=True, metrics_token=TOKEN)


def test_a_metrics_token_on_loopback_only_would_do_nothing_and_is_refused() -> None:
    out = problems({"metrics_token": TOKEN})
    assert out == [
        "daemon.metrics_token: the control endpoints are served on loopback only, where every "
        "peer is served without it"
    ]


def test_a_short_metrics_token_is_refused_without_showing_it() -> None:
    out = problems({"control_listen": "0.0.0.0:9071", "access_keys": [KEY], "metrics_token": "x1"})
    assert len(out) == 1 and "daemon.metrics_token" in out[0] and "16" in out[0], out
    assert "x1'" not in out[0]


# ---- webhook routes on the daemon's own endpoints ------------------------------------------


def webhook_problems(*hooks: tuple[str, str], **daemon: Any) -> list[str]:
    data = {
        "daemon": daemon,
        "functions": {"f": {"backend": "http", "url": "http://127.0.0.1:1/"}},
        "triggers": [
            {"function": "f", "source": {"type": "webhook", "method": m, "path": p}}
            for m, p in hooks
        ],
    }
    try:
        validate_data(data, Registry.discover(), Path("."))
    except ConfigError as exc:
        return exc.problems
    return []


@pytest.mark.parametrize(
    ("method", "path", "taken"),
    [
        ("GET", "/metrics", "GET /metrics"),
        ("HEAD", "/readyz", "HEAD /readyz"),
        ("POST", "/2015-03-31/functions/{name}/invocations", "POST /2015-03-31/functions/"),
        ("GET", "/2015-03-31/functions", "GET /2015-03-31/functions/"),
    ],
)
def test_a_webhook_on_a_control_endpoint_with_control_on_public_is_a_config_error(
    method: str, path: str, taken: str
) -> None:
    out = webhook_problems((method, path), control_on_public=True, control_listen="")
    assert len(out) == 1, out
    assert out[0].startswith(f"triggers.0.source: {method} {path} is already taken by ")
    assert f"the daemon's own {taken}" in out[0] and "control_on_public = true" in out[0]
    # on its own listener the control endpoints leave those paths to webhooks
    assert webhook_problems((method, path)) == []


def test_a_webhook_on_healthz_or_on_another_webhooks_route_is_a_config_error() -> None:
    out = webhook_problems(("GET", "/healthz"))
    assert len(out) == 1 and "the daemon's own GET /healthz" in out[0]
    out = webhook_problems(("POST", "/orders/{id}"), ("POST", "/orders/{order}"))
    assert out == [
        "triggers.1.source: POST /orders/{order} is already taken by trigger 'f-0': give it "
        "another path"
    ]
    assert webhook_problems(("POST", "/orders/{id}"), ("GET", "/orders/{id}")) == []


def test_the_endpoints_config_checks_are_the_ones_the_daemon_serves() -> None:
    from triggerd.http.routes import Routes
    from triggerd.http.server import add_daemon_routes

    host = mock.Mock(settings=DaemonSettings())
    public, control = Routes(), Routes()
    add_daemon_routes(host, public, control=False)
    add_daemon_routes(host, control, control=True)

    def served(routes: Routes) -> set[tuple[str, str]]:
        return {(r.method, r.template.text) for r in routes._routes}

    assert served(public) == set(PUBLIC_ENDPOINTS)
    assert served(control) == set(PUBLIC_ENDPOINTS) | set(CONTROL_ENDPOINTS)
