"""Webhook config: defaults per payload format, validation errors, secrets hidden."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from triggerd.config.load import validate_data
from triggerd.config.plugins import Registry
from triggerd.types import ConfigError
from triggerd_webhook import plugin
from triggerd_webhook.config import WebhookSourceConfig


def cfg(**kw: Any) -> WebhookSourceConfig:
    return WebhookSourceConfig.model_validate({"type": "webhook", "path": "/hook", **kw})


def registry() -> Registry:
    reg = Registry()
    reg.register("source", "webhook", plugin)
    from tests.fakes import FakeFunctionConfig
    from triggerd.types import BackendPlugin

    reg.register("backend", "fake", BackendPlugin(FakeFunctionConfig, lambda c, x: None))  # type: ignore[arg-type,return-value]
    return reg


def load(source: dict[str, Any], **trigger: Any) -> Any:
    data = {
        "functions": {"f": {"backend": "fake"}},
        "triggers": [{"function": "f", "source": {"type": "webhook", **source}, **trigger}],
    }
    return validate_data(data, registry(), base_dir=Path("."))


def test_defaults() -> None:
    c = cfg()
    assert c.method == "ANY" and c.payload_format == "2.0" and c.invocation_mode == "sync"
    assert c.effective_stage == "$default"
    assert cfg(payload_format="1.0").effective_stage == "prod"
    assert c.max_body_bytes == 6 * 1024 * 1024
    assert WebhookSourceConfig.invocation == "async", "the daemon runs it as a push source"


def test_timeout_defaults_cap_at_api_gateway_limits() -> None:
    assert cfg(payload_format="1.0").effective_timeout_s(60) == 29
    assert cfg(payload_format="2.0").effective_timeout_s(60) == 30
    assert cfg(payload_format="url").effective_timeout_s(60) == 60
    assert cfg(payload_format="1.0").effective_timeout_s(3) == 3
    assert cfg(timeout_s=5).effective_timeout_s(60) == 5


def test_invocation_key_selects_event_mode_in_a_trigger() -> None:
    config = load({"path": "/e", "invocation": "event"})
    assert config.trigger_list[0].source_config.invocation_mode == "event"


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ({"path": "nope"}, "must start with /"),
        ({"path": "/a/{proxy+}/b"}, "greedy"),
        ({"path": "/a", "method": "BREW"}, "method"),
        ({"path": "/a", "payload_format": "3.0"}, "payload_format"),
        ({"path": "/a", "payload_format": "url", "stage": "prod"}, "no stages"),
        ({"path": "/a", "burst": 5}, "burst needs rate_limit_per_s"),
        ({"path": "/a", "max_body_bytes": 7 * 1024 * 1024}, "max_body_bytes"),
        ({"path": "/a", "auth": {"type": "hmac"}}, "secret"),
        ({"path": "/a", "auth": {"type": "hmac", "secret": ""}}, "must not be empty"),
        ({"path": "/a", "auth": {"type": "oauth"}}, "auth"),
        (
            {"path": "/a", "cors": {"allow_origins": ["*"], "allow_credentials": True}},
            "allow_credentials",
        ),
        ({"path": "/a", "binary_media_types": ["png"]}, "type/subtype"),
        ({"path": "/a", "invocation": "later"}, "invocation"),
        (
            {"path": "/a", "auth": {"type": "hmac", "secret": "s", "tolerance_s": 60}},
            "tolerance_s: only used with style = 'stripe'",
        ),
        (
            {
                "path": "/a",
                "auth": {"type": "hmac", "secret": "s", "style": "stripe", "prefix": "v1="},
            },
            "prefix: only used with style = 'github'",
        ),
        (
            {
                "path": "/a",
                "auth": {"type": "hmac", "secret": "s", "style": "stripe", "encoding": "base64"},
            },
            "encoding: only used with style = 'github'",
        ),
        (
            {"path": "/a", "invocation": "event", "timeout_s": 5},
            'timeout_s: only used with invocation = "sync"',
        ),
        (
            {"path": "/a", "accept_timeout_s": 5},
            'accept_timeout_s: only used with invocation = "event"',
        ),
        ({"path": "/a", "queue_size": 10}, 'queue_size: only used with invocation = "event"'),
        (
            {"path": "/a", "binary_media_types": ["image/png"]},
            'binary_media_types: only payload_format = "1.0"',
        ),
        (
            {"path": "/a", "payload_format": "url", "binary_media_types": ["*/*"]},
            'binary_media_types: only payload_format = "1.0"',
        ),
    ],
)
def test_bad_config_is_a_clear_error(source: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(source)
    assert fragment in str(info.value)


def test_mode_specific_keys_load_in_their_mode() -> None:
    assert cfg(invocation="event", accept_timeout_s=5, queue_size=10).queue_size == 10
    assert cfg(timeout_s=5).timeout_s == 5
    stripe = cfg(auth={"type": "hmac", "secret": "s", "style": "stripe", "tolerance_s": 60})
    github = cfg(auth={"type": "hmac", "secret": "s", "prefix": "", "encoding": "base64"})
    assert stripe.auth is not None and stripe.auth.type == "hmac" and stripe.auth.tolerance_s == 60
    assert github.auth is not None and github.auth.type == "hmac" and github.auth.prefix == ""
    assert cfg(payload_format="1.0", binary_media_types=["image/*"]).binary_media_types == [
        "image/*"
    ]


def test_async_trigger_limits_apply() -> None:
    with pytest.raises(ConfigError, match="0-2"):
        load({"path": "/a", "invocation": "event"}, maximum_retry_attempts=5)


def test_secrets_are_hidden_in_repr_and_errors() -> None:
    c = cfg(auth={"type": "bearer", "token": "very-secret-token"})
    assert "very-secret-token" not in repr(c) and "very-secret-token" not in str(c.model_dump())
    with pytest.raises(ConfigError) as info:
        load({"path": "/a", "auth": {"type": "bearer", "token": "very-secret-token", "x": 1}})
    assert "very-secret-token" not in str(info.value)
