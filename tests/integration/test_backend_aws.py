"""The `aws` backend with real aiobotocore, pointed at triggerd's own Invoke API (a daemon with
local Python functions, started in the test): a real HTTP round trip, Lambda's wire format."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from tests.integration.invoke_daemon import daemon_config, local_fn, running_daemon, wait_until
from tests.system.conftest import free_port
from triggerd.config.load import validate_data
from triggerd.config.plugins import Registry
from triggerd.daemon.app import Daemon
from triggerd.functions.backends.aws import AwsBackend, AwsFunctionConfig, _float, plugin
from triggerd.types import (
    MAX_ASYNC_PAYLOAD,
    MAX_SYNC_PAYLOAD,
    BackendContext,
    ConfigError,
    Outcome,
    SystemClock,
)

pytestmark = pytest.mark.integration

ARN = "arn:aws:lambda:us-east-1:123456789012:function:"
SECRET_KEY = "wJalrXUtnFEMI-secret-do-not-log"
FUNCTIONS = {
    "echo": local_fn(),
    "closed": local_fn(reserved_concurrency=0),
    "quick": local_fn(timeout_s=1),
}


@pytest.fixture
def creds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDTESTING")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
async def daemon(tmp_path: Path, creds: None) -> AsyncIterator[Daemon]:
    async with running_daemon(tmp_path, FUNCTIONS) as d:
        yield d


Factory = Callable[..., AwsBackend]


@pytest.fixture
async def make(creds: None) -> AsyncIterator[Callable[..., Any]]:
    made: list[AwsBackend] = []

    async def build(endpoint: str, function: str, margin_s: float = 15.0, **cfg: Any) -> AwsBackend:
        config = AwsFunctionConfig(function=function, endpoint_url=endpoint, **cfg)
        ctx = BackendContext("fn-aws", SystemClock(), logging.getLogger("test.aws"))
        backend = AwsBackend(config, ctx, response_margin_s=margin_s)
        made.append(backend)
        await backend.start()
        return backend

    yield build
    for b in made:
        await b.stop()


def url(daemon: Daemon) -> str:
    return f"http://{daemon.control_address}"


async def test_request_response_returns_the_functions_result(
    daemon: Daemon, make: Callable[..., Any]
) -> None:
    backend = await make(url(daemon), "echo")
    result = await backend.invoke(b'{"n": 1}', request_id="rid-1")
    assert result.outcome is Outcome.OK
    assert result.request_id == "rid-1"
    assert result.executed_version == "$LATEST"
    assert orjson.loads(result.payload)["event"] == {"n": 1}


async def test_full_arn_with_qualifier(daemon: Daemon, make: Callable[..., Any]) -> None:
    backend = await make(url(daemon), ARN + "echo", qualifier="$LATEST")
    assert (await backend.invoke(b"{}")).outcome is Outcome.OK


async def test_function_error_is_a_function_error(daemon: Daemon, make: Callable[..., Any]) -> None:
    backend = await make(url(daemon), "echo")
    result = await backend.invoke(b'{"action": "raise", "value": 1}')
    assert result.outcome is Outcome.FUNCTION_ERROR
    assert result.function_error == "Unhandled"
    assert orjson.loads(result.payload)["errorType"] == "ValueError"


async def test_lambda_timeout_is_a_timeout(daemon: Daemon, make: Callable[..., Any]) -> None:
    backend = await make(url(daemon), "quick", timeout_s=1)
    result = await backend.invoke(b'{"sleep": 3}')
    assert result.outcome is Outcome.TIMEOUT
    assert "Task timed out after 1.00 seconds" in orjson.loads(result.payload)["errorMessage"]


async def test_throttle_is_throttled_with_backoff_not_a_failure(
    daemon: Daemon, make: Callable[..., Any]
) -> None:
    backend = await make(url(daemon), "closed")
    result = await backend.invoke(b"{}")
    assert result.outcome is Outcome.THROTTLED
    assert not result.failed
    assert result.retry_after_s is not None and result.retry_after_s >= 1
    assert orjson.loads(result.payload)["errorType"] == "TooManyRequestsException"


@pytest.mark.parametrize("value", ["9" * 400, "1e999", "inf", "nan"])
def test_a_retry_after_that_is_not_a_finite_number_is_ignored(value: str) -> None:
    # float() made it inf: a throttled batch waited for ever (the throttle's retry-after).
    assert _float(value) is None


async def test_log_tail_is_decoded(daemon: Daemon, make: Callable[..., Any]) -> None:
    backend = await make(url(daemon), "echo")
    result = await backend.invoke(b'{"action": "print"}', want_log_tail=True)
    assert result.outcome is Outcome.OK
    assert "START RequestId:" in result.log_tail
    assert "printed by" in result.log_tail


async def test_client_context_reaches_the_function(
    daemon: Daemon, make: Callable[..., Any]
) -> None:
    backend = await make(url(daemon), "echo")
    result = await backend.invoke(
        b'{"action": "context"}', client_context=json.dumps({"custom": {"a": "b"}})
    )
    assert orjson.loads(result.payload)["custom"] == {"a": "b"}


async def test_event_invocation_type_hands_async_events_to_the_queue(
    daemon: Daemon, make: Callable[..., Any], tmp_path: Path
) -> None:
    out = tmp_path / "calls.jsonl"
    backend = await make(url(daemon), "echo", invocation_type="Event")
    event = orjson.dumps({"record": str(out), "id": "ev"})
    result = await backend.invoke(event, invocation_type="Event")
    assert result.outcome is Outcome.OK and result.payload == b""
    await wait_until(out.exists, 30, "the queued event to run")
    assert json.loads(out.read_text())["id"] == "ev"


async def test_event_config_still_invokes_poll_batches_synchronously(
    daemon: Daemon, make: Callable[..., Any]
) -> None:
    backend = await make(url(daemon), "echo", invocation_type="Event")
    result = await backend.invoke(b'{"batch": 1}', invocation_type="RequestResponse")
    assert orjson.loads(result.payload)["event"] == {"batch": 1}


async def test_request_response_config_invokes_async_events_synchronously(
    daemon: Daemon, make: Callable[..., Any]
) -> None:
    backend = await make(url(daemon), "echo")
    result = await backend.invoke(b'{"a": 1}', invocation_type="Event")
    assert orjson.loads(result.payload)["event"] == {"a": 1}


@pytest.mark.parametrize(
    ("size", "itype"),
    [(MAX_SYNC_PAYLOAD + 1, "RequestResponse"), (MAX_ASYNC_PAYLOAD + 1, "Event")],
)
async def test_oversize_payload_fails_clearly_before_sending(
    make: Callable[..., Any], size: int, itype: Any
) -> None:
    # Nothing listens on the endpoint: the check happens before any request.
    backend = await make(f"http://127.0.0.1:{free_port()}", "echo", invocation_type="Event")
    result = await backend.invoke(b"x" * size, invocation_type=itype)
    assert result.outcome is Outcome.FUNCTION_ERROR
    error = orjson.loads(result.payload)
    assert error["errorType"] == "RequestEntityTooLargeException"
    assert str(size) in error["errorMessage"]


async def test_invalid_json_is_a_function_error_naming_the_aws_error(
    daemon: Daemon, make: Callable[..., Any]
) -> None:
    backend = await make(url(daemon), "echo")
    result = await backend.invoke(b"{broken")
    assert result.outcome is Outcome.FUNCTION_ERROR
    assert orjson.loads(result.payload)["errorType"] == "InvalidRequestContentException"


async def test_unknown_function_is_an_invoke_error_and_logged(
    daemon: Daemon, make: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="test.aws")
    backend = await make(url(daemon), "ghost")
    result = await backend.invoke(b"{}")
    assert result.outcome is Outcome.INVOKE_ERROR and not result.failed
    assert any(getattr(r, "error_type", "") == "ResourceNotFoundException" for r in caplog.records)


async def test_unreachable_endpoint_is_an_invoke_error_without_secrets_in_logs(
    make: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    backend = await make(f"http://127.0.0.1:{free_port()}", "echo")
    result = await backend.invoke(b"{}")
    assert result.outcome is Outcome.INVOKE_ERROR
    assert caplog.records
    text = caplog.text + " ".join(str(r.__dict__) for r in caplog.records) + repr(result)
    assert SECRET_KEY not in text


async def test_server_error_is_an_invoke_error(make: Callable[..., Any]) -> None:
    async def fail(request: web.Request) -> web.Response:
        return web.json_response(
            {"Type": "Service", "message": "oops", "__type": "ServiceException"},
            status=500,
            headers={"x-amzn-ErrorType": "ServiceException"},
        )

    runner, endpoint = await serve(fail)
    try:
        backend = await make(endpoint, "echo")
        result = await backend.invoke(b"{}")
        assert result.outcome is Outcome.INVOKE_ERROR
    finally:
        await runner.cleanup()


async def test_no_answer_in_time_is_a_timeout(make: Callable[..., Any]) -> None:
    release = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await release.wait()
        return web.json_response({})

    runner, endpoint = await serve(hang)
    try:
        backend = await make(endpoint, "echo", timeout_s=1, margin_s=0.2)
        result = await backend.invoke(b"{}", request_id="rid-h")
        assert result.outcome is Outcome.TIMEOUT
        message = orjson.loads(result.payload)["errorMessage"]
        assert message.endswith("rid-h Task timed out after 1.00 seconds")
    finally:
        release.set()
        await runner.cleanup()


async def serve(handler: Any) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/2015-03-31/functions/{name}/invocations", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


async def test_reserved_concurrency_zero_throttles_locally(make: Callable[..., Any]) -> None:
    backend = await make(f"http://127.0.0.1:{free_port()}", "echo", reserved_concurrency=0)
    assert (await backend.invoke(b"{}")).outcome is Outcome.THROTTLED


def test_config_via_the_config_file(tmp_path: Path) -> None:
    config = daemon_config(
        tmp_path, {"remote": {"backend": "aws", "function": ARN + "x", "region": "eu-west-1"}}
    )
    fn = config.function_map["remote"]
    assert isinstance(fn, AwsFunctionConfig)
    assert fn.invocation_type == "RequestResponse" and fn.region == "eu-west-1"


def test_config_rejects_bad_values() -> None:
    reg = Registry()
    reg.register("backend", "aws", plugin)
    bad = {"backend": "aws", "function": "my fn", "invocation_type": "DryRun"}
    with pytest.raises(ConfigError) as info:
        validate_data({"functions": {"f": bad}}, reg, Path("."))
    text = str(info.value)
    assert "functions.f.function" in text and "functions.f.invocation_type" in text


async def test_region_defaults_to_the_daemons(creds: None) -> None:
    ctx = BackendContext("f", SystemClock(), logging.getLogger("t"), region="ap-south-1")
    backend = plugin.create(AwsFunctionConfig(function="f"), ctx)
    assert isinstance(backend, AwsBackend) and backend.region == "ap-south-1"
