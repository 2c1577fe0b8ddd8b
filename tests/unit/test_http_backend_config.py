"""The `http` backend's config and its pure helpers (the wire is in tests/integration)."""

from __future__ import annotations

import email.utils
from pathlib import Path

import orjson
import pytest
from pydantic import ValidationError

from triggerd.config.load import validate_data
from triggerd.config.plugins import Registry
from triggerd.functions.backends.http import (
    HttpFunctionConfig,
    oversize_result,
    parse_retry_after,
    plugin,
    timeout_result,
)
from triggerd.types import MAX_ASYNC_PAYLOAD, MAX_SYNC_PAYLOAD, ConfigError, Outcome

RIE = "http://localhost:8080/2015-03-31/functions/function/invocations"


def registry() -> Registry:
    reg = Registry()
    reg.register("backend", "http", plugin)
    return reg


def test_config_requires_url() -> None:
    with pytest.raises(ValidationError, match="url"):
        HttpFunctionConfig()  # type: ignore[call-arg]


@pytest.mark.parametrize("url", ["ftp://host/x", "localhost:8080", "http:///path"])
def test_config_rejects_non_http_urls(url: str) -> None:
    with pytest.raises(ValidationError, match="http:// or https://"):
        HttpFunctionConfig(url=url)


def test_config_rejects_a_password_in_the_url() -> None:
    with pytest.raises(ValidationError, match="auth_token or headers"):
        HttpFunctionConfig(url="http://u:pw@host/x")


def test_invoke_api_urls_are_recognised() -> None:
    assert HttpFunctionConfig(url=RIE).invoke_api
    assert HttpFunctionConfig(url="http://h:9070/2015-03-31/functions/f/invocations/").invoke_api
    assert not HttpFunctionConfig(url="http://h/hook").invoke_api


def test_safe_url_drops_the_query_string() -> None:
    cfg = HttpFunctionConfig(url="https://fn.example:8443/run?token=abc")
    assert cfg.safe_url == "https://fn.example:8443/run"


def test_safe_url_keeps_the_brackets_of_an_ipv6_host() -> None:
    cfg = HttpFunctionConfig(url="http://[::1]:9000/fn?token=abc")
    assert cfg.safe_url == "http://[::1]:9000/fn"


def test_header_values_and_token_are_secret_in_repr() -> None:
    cfg = HttpFunctionConfig(url=RIE, headers={"X-Key": "hunter2"}, auth_token="tok-123")
    text = repr(cfg) + str(cfg)
    assert "hunter2" not in text and "tok-123" not in text
    assert cfg.headers["X-Key"].get_secret_value() == "hunter2"


def test_config_file_selects_the_http_backend() -> None:
    data = {"functions": {"f": {"backend": "http", "url": RIE, "timeout_s": 10}}}
    config = validate_data(data, registry(), Path("."))
    fn = config.function_map["f"]
    assert isinstance(fn, HttpFunctionConfig) and fn.timeout_s == 10


def test_config_file_unknown_key_is_named() -> None:
    data = {"functions": {"f": {"backend": "http", "url": RIE, "uri": "x"}}}
    with pytest.raises(ConfigError, match=r"functions\.f\.uri: unknown key"):
        validate_data(data, registry(), Path("."))


def test_retry_after_seconds_and_http_date() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after("1.5", now) == 1.5
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(date, now) == pytest.approx(30.0)
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("soon", now) is None


@pytest.mark.parametrize("value", ["9" * 400, "1e999", "inf", "Infinity", "nan"])
def test_a_retry_after_that_is_not_a_finite_number_is_ignored(value: str) -> None:
    # float() made them inf (or nan): a throttled batch waited for ever, and the invoke
    # API's Retry-After of the throttle raised OverflowError in math.ceil.
    assert parse_retry_after(value, 1_700_000_000.0) is None


def test_oversize_limits_are_6_mb_sync_and_1_mb_event() -> None:
    assert oversize_result("r", MAX_SYNC_PAYLOAD, "RequestResponse", "$LATEST") is None
    assert oversize_result("r", MAX_ASYNC_PAYLOAD, "Event", "$LATEST") is None
    sync = oversize_result("r", MAX_SYNC_PAYLOAD + 1, "RequestResponse", "$LATEST")
    event = oversize_result("r", MAX_ASYNC_PAYLOAD + 1, "Event", "$LATEST")
    assert sync is not None and event is not None
    assert sync.outcome is Outcome.FUNCTION_ERROR and event.outcome is Outcome.FUNCTION_ERROR
    error = orjson.loads(event.payload)
    assert error["errorType"] == "RequestEntityTooLargeException"
    assert (
        "asynchronous" in error["errorMessage"] and str(MAX_ASYNC_PAYLOAD) in error["errorMessage"]
    )


def test_timeout_result_uses_lambdas_message() -> None:
    result = timeout_result("rid", 3, 0.0, "$LATEST")
    assert result.outcome is Outcome.TIMEOUT and result.function_error == "Unhandled"
    message = orjson.loads(result.payload)["errorMessage"]
    assert message == "1970-01-01T00:00:00.000Z rid Task timed out after 3.00 seconds"
