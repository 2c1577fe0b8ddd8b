"""The Lambda Invoke API served by triggerd, called with real boto3 and aiobotocore clients
against a daemon started in-process (and as a subprocess for kill -9)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import orjson
import pytest
from aiobotocore.session import get_session
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.integration.invoke_daemon import local_fn, running_daemon, wait_until
from tests.system.conftest import Daemon as DaemonProcess
from tests.system.conftest import (
    aws_client,
    control_daemon_table,
    free_port,
    invoke_api_function_table,
)
from tests.system.conftest import wait_for as wait_for_sync
from triggerd.daemon.app import Daemon
from triggerd.http.invoke_api import parse_function_name, queue_name
from triggerd.types import MAX_ASYNC_PAYLOAD, MAX_SYNC_PAYLOAD

pytestmark = pytest.mark.integration

ARN = "arn:aws:lambda:us-east-1:123456789012:function:"
NO_RETRIES = Config(retries={"total_max_attempts": 1}, read_timeout=30)
FUNCTIONS = {
    "echo": local_fn(),
    "single": local_fn(reserved_concurrency=1),
    "closed": local_fn(reserved_concurrency=0),
    "quick": local_fn(timeout_s=1),
}


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    async with running_daemon(tmp_path, FUNCTIONS) as d:
        yield d


def endpoint(daemon: Daemon) -> str:
    return f"http://{daemon.control_address}"


@pytest.fixture
def lam(daemon: Daemon, aws_env: None) -> Any:
    return boto3.client(
        "lambda", endpoint_url=endpoint(daemon), region_name="us-east-1", config=NO_RETRIES
    )


Call = Callable[..., Any]


@pytest.fixture
def invoke(lam: Any) -> Call:
    async def call(**kwargs: Any) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            resp: dict[str, Any] = lam.invoke(**kwargs)
            resp["Body"] = resp["Payload"].read()
            return resp

        return await asyncio.to_thread(run)

    return call


def error_code(exc: ClientError) -> str:
    return str(exc.response["Error"]["Code"])


# ---- RequestResponse ----


async def test_request_response_returns_the_result_and_version(invoke: Call) -> None:
    resp = await invoke(FunctionName="echo", Payload=b'{"x": 1}')
    assert resp["StatusCode"] == 200
    assert resp["ExecutedVersion"] == "$LATEST"
    assert "FunctionError" not in resp
    body = json.loads(resp["Body"])
    assert body["event"] == {"x": 1}
    assert body["request_id"] == resp["ResponseMetadata"]["RequestId"]


@pytest.mark.parametrize(
    "name",
    [
        "echo",
        "echo:$LATEST",
        ARN + "echo",
        ARN + "echo:$LATEST",
        "123456789012:function:echo",
    ],
)
async def test_function_name_forms_are_accepted(invoke: Call, name: str) -> None:
    resp = await invoke(FunctionName=name, Payload=b"{}")
    assert resp["StatusCode"] == 200 and "FunctionError" not in resp


async def test_qualifier_parameter_is_accepted(invoke: Call) -> None:
    resp = await invoke(FunctionName="echo", Qualifier="$LATEST", Payload=b"{}")
    assert resp["StatusCode"] == 200


async def test_unknown_function_raises_resource_not_found(lam: Any, invoke: Call) -> None:
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as info:
        await invoke(FunctionName="nope", Payload=b"{}")
    assert info.value.response["Error"]["Message"] == f"Function not found: {ARN}nope"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


@pytest.mark.parametrize(
    "kwargs",
    [
        {"FunctionName": "echo:prod"},
        {"FunctionName": "echo", "Qualifier": "7"},
        {"FunctionName": "arn:aws:lambda:eu-west-1:123456789012:function:echo"},
        {"FunctionName": "999999999999:function:echo"},
    ],
)
async def test_unknown_qualifier_region_or_account_is_not_found(
    lam: Any, invoke: Call, kwargs: dict[str, str]
) -> None:
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        await invoke(Payload=b"{}", **kwargs)


async def test_function_error_is_200_with_unhandled(invoke: Call) -> None:
    resp = await invoke(FunctionName="echo", Payload=b'{"action": "raise", "value": 3}')
    assert resp["StatusCode"] == 200
    assert resp["FunctionError"] == "Unhandled"
    error = json.loads(resp["Body"])
    assert error["errorType"] == "ValueError" and error["errorMessage"] == "bad value: 3"


async def test_timeout_is_an_unhandled_error_with_lambdas_message(invoke: Call) -> None:
    resp = await invoke(FunctionName="quick", Payload=b'{"sleep": 3}')
    assert resp["FunctionError"] == "Unhandled"
    assert "Task timed out after 1.00 seconds" in json.loads(resp["Body"])["errorMessage"]


async def test_log_tail_returns_the_invocations_log_base64(invoke: Call) -> None:
    resp = await invoke(FunctionName="echo", Payload=b'{"action": "print"}', LogType="Tail")
    tail = base64.b64decode(resp["LogResult"]).decode()
    rid = resp["ResponseMetadata"]["RequestId"]
    assert f"START RequestId: {rid}" in tail
    assert f"printed by {rid}" in tail
    assert f"REPORT RequestId: {rid}" in tail
    assert len(base64.b64decode(resp["LogResult"])) <= 4096


async def test_without_tail_no_log_result(invoke: Call) -> None:
    resp = await invoke(FunctionName="echo", Payload=b"{}")
    assert "LogResult" not in resp


async def test_client_context_reaches_the_function(invoke: Call) -> None:
    cc = base64.b64encode(json.dumps({"custom": {"k": "v"}}).encode()).decode()
    resp = await invoke(FunctionName="echo", Payload=b'{"action": "context"}', ClientContext=cc)
    body = json.loads(resp["Body"])
    assert body["custom"] == {"k": "v"}
    assert body["arn"] == ARN + "echo"


async def test_reserved_concurrency_zero_throttles_with_429(lam: Any, invoke: Call) -> None:
    with pytest.raises(lam.exceptions.TooManyRequestsException) as info:
        await invoke(FunctionName="closed", Payload=b"{}")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert info.value.response["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"


async def test_invalid_json_is_invalid_request_content(lam: Any, invoke: Call) -> None:
    with pytest.raises(lam.exceptions.InvalidRequestContentException) as info:
        await invoke(FunctionName="echo", Payload=b"{not json")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


async def test_payload_over_6_mb_is_413(invoke: Call) -> None:
    big = b'"' + b"x" * MAX_SYNC_PAYLOAD + b'"'
    with pytest.raises(ClientError) as info:
        await invoke(FunctionName="echo", Payload=big)
    assert error_code(info.value) == "RequestEntityTooLargeException"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413


async def test_event_payload_over_1_mb_is_413(invoke: Call) -> None:
    big = b'"' + b"x" * MAX_ASYNC_PAYLOAD + b'"'
    with pytest.raises(ClientError) as info:
        await invoke(FunctionName="echo", InvocationType="Event", Payload=big)
    assert error_code(info.value) == "RequestEntityTooLargeException"


async def test_dry_run_is_204(invoke: Call) -> None:
    resp = await invoke(FunctionName="echo", InvocationType="DryRun", Payload=b"{}")
    assert resp["StatusCode"] == 204 and resp["Body"] == b""


# ---- Event ----


def records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


async def test_event_is_accepted_with_202_and_invoked(invoke: Call, tmp_path: Path) -> None:
    out = tmp_path / "calls.jsonl"
    event = {"record": str(out), "id": "e1"}
    resp = await invoke(FunctionName="echo", InvocationType="Event", Payload=json.dumps(event))
    assert resp["StatusCode"] == 202 and resp["Body"] == b""
    await wait_until(lambda: records(out), 30, "the event to be invoked")
    assert records(out) == [{"request_id": resp["ResponseMetadata"]["RequestId"], "id": "e1"}]


async def test_event_is_on_the_durable_queue_when_202_is_answered(
    daemon: Daemon, invoke: Call, tmp_path: Path
) -> None:
    out = tmp_path / "calls.jsonl"
    # The function runs one at a time: the first event holds it while the second is sent.
    first = {"record": str(out), "id": "first", "sleep": 2}
    await invoke(FunctionName="single", InvocationType="Event", Payload=json.dumps(first))
    await wait_until(
        lambda: daemon.functions["single"].backend.workers,  # type: ignore[attr-defined]
        20,
        "the first event to start",
    )
    second = {"record": str(out), "id": "second"}
    await invoke(FunctionName="single", InvocationType="Event", Payload=json.dumps(second))
    assert daemon.state is not None
    assert await daemon.state.queue_depth(queue_name("single")) == 2
    await wait_until(lambda: len(records(out)) == 2, 30, "both events")
    assert [r["id"] for r in records(out)] == ["first", "second"]


async def test_failed_event_is_scheduled_for_retry_with_its_trace(
    lam: Any, invoke: Call, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="triggerd.trigger")

    def add_trace(request: Any, **_: Any) -> None:
        request.headers["X-Amzn-Trace-Id"] = TRACE

    lam.meta.events.register("before-sign.lambda.Invoke", add_trace)
    resp = await invoke(FunctionName="echo", InvocationType="Event", Payload=b'{"action": "raise"}')
    rid = resp["ResponseMetadata"]["RequestId"]

    def scheduled() -> bool:
        return any(
            r.getMessage() == "event.retry_scheduled"
            and getattr(r, "request_id", None) == rid
            and getattr(r, "attempt", None) == 1
            and getattr(r, "trace_id", None) == TRACE
            for r in caplog.records
        )

    await wait_until(scheduled, 30, "a retry to be scheduled")


async def test_event_to_reserved_concurrency_zero_is_discarded_without_invoking(
    invoke: Call, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.INFO)
    out = tmp_path / "calls.jsonl"
    event = {"record": str(out)}
    resp = await invoke(FunctionName="closed", InvocationType="Event", Payload=json.dumps(event))
    assert resp["StatusCode"] == 202
    rid = resp["ResponseMetadata"]["RequestId"]
    assert any(
        r.getMessage() == "record.discarded" and getattr(r, "request_id", None) == rid
        for r in caplog.records
    )
    assert not out.exists()


# ---- aiobotocore and raw HTTP ----


async def test_aiobotocore_client_invokes_and_sees_function_errors(
    daemon: Daemon, aws_env: None
) -> None:
    session = get_session()
    async with session.create_client(
        "lambda", endpoint_url=endpoint(daemon), region_name="us-east-1", config=NO_RETRIES
    ) as client:
        ok = await client.invoke(FunctionName=ARN + "echo", Payload=b'{"a": 2}')
        assert json.loads(await ok["Payload"].read())["event"] == {"a": 2}
        bad = await client.invoke(FunctionName="echo", Payload=b'{"action": "raise"}')
        assert bad["FunctionError"] == "Unhandled"
        event = await client.invoke(FunctionName="echo", InvocationType="Event", Payload=b"{}")
        assert event["StatusCode"] == 202


async def test_error_bodies_have_aws_shape(daemon: Daemon) -> None:
    url = f"{endpoint(daemon)}/2015-03-31/functions/missing/invocations"
    async with aiohttp.ClientSession() as http, http.post(url, data=b"{}") as resp:
        assert resp.status == 404
        assert resp.headers["x-amzn-ErrorType"] == "ResourceNotFoundException"
        assert resp.headers["x-amzn-RequestId"]
        assert orjson.loads(await resp.read()) == {
            "Type": "User",
            "message": f"Function not found: {ARN}missing",
            "__type": "ResourceNotFoundException",
        }


@pytest.mark.parametrize(
    ("headers", "status", "error_type"),
    [
        ({"X-Amz-Invocation-Type": "Sometimes"}, 400, "InvalidParameterValueException"),
        ({"X-Amz-Client-Context": "x" * 4000}, 400, "InvalidParameterValueException"),
    ],
)
async def test_bad_headers_are_rejected(
    daemon: Daemon, headers: dict[str, str], status: int, error_type: str
) -> None:
    url = f"{endpoint(daemon)}/2015-03-31/functions/echo/invocations"
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, data=b"{}", headers=headers) as resp,
    ):
        assert resp.status == status
        assert orjson.loads(await resp.read())["__type"] == error_type


async def test_empty_payload_is_an_empty_object(daemon: Daemon) -> None:
    url = f"{endpoint(daemon)}/2015-03-31/functions/echo/invocations"
    async with aiohttp.ClientSession() as http, http.post(url) as resp:
        assert resp.status == 200
        assert orjson.loads(await resp.read())["event"] == {}


def test_function_name_parsing() -> None:
    ref = parse_function_name(ARN + "f:prod")
    assert ref is not None
    assert (ref.name, ref.qualifier, ref.region, ref.account) == (
        "f",
        "prod",
        "us-east-1",
        "123456789012",
    )
    partial = parse_function_name("123456789012:function:f")
    assert partial is not None and partial.account == "123456789012" and partial.region is None
    for bad in ["a:b:c", "arn:aws:s3:::bucket", "f:", ":x", "1:function:f:q:extra"]:
        assert parse_function_name(bad) is None, bad


# ---- durability across kill -9 ----


def subprocess_config(tmp: Path, port: int) -> str:
    return control_daemon_table(port) + invoke_api_function_table("single", 1)


def test_queued_events_survive_kill_9(tmp_path: Path) -> None:
    port = free_port()
    proc = DaemonProcess(tmp_path, subprocess_config(tmp_path, port))
    out = tmp_path / "calls.jsonl"
    lam = aws_client("lambda", port, NO_RETRIES)
    try:
        proc.start()
        ids = ["slow", "a", "b", "c"]
        for i in ids:
            event = {"record": str(out), "id": i, "sleep": 2 if i == "slow" else 0}
            resp = lam.invoke(
                FunctionName="single", InvocationType="Event", Payload=json.dumps(event)
            )
            assert resp["StatusCode"] == 202
        proc.kill9()
        done_before = {r["id"] for r in records(out)}
        assert done_before != set(ids), "the kill came after everything ran"
        proc.start()
        wait_for_sync(lambda: {r["id"] for r in records(out)} >= set(ids), 60, "every event")
    finally:
        proc.stop()


# ---- tracing ----

TRACE = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
FRESH_TRACE = re.compile(r"Root=1-[0-9a-f]{8}-[0-9a-f]{24};Parent=[0-9a-f]{16};Sampled=0")


async def test_callers_trace_header_reaches_the_function_and_the_log(
    lam: Any, invoke: Call, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="triggerd.invoke_api")

    def add_trace(request: Any, **_: Any) -> None:
        request.headers["X-Amzn-Trace-Id"] = TRACE

    lam.meta.events.register("before-sign.lambda.Invoke", add_trace)
    resp = await invoke(FunctionName="echo", Payload=b'{"action": "trace"}')
    assert json.loads(resp["Body"]) == {"trace": TRACE}
    rid = resp["ResponseMetadata"]["RequestId"]
    [line] = [r for r in caplog.records if r.getMessage() == "invoke_api.invoked"]
    assert (getattr(line, "request_id", None), getattr(line, "trace_id", None)) == (rid, TRACE)


@pytest.mark.parametrize(
    "header", [None, "Root=1-5759e988-XYZ;Sampled=1", "Root=" + "1" * 300, "Root=1-a-b;;=x"]
)
async def test_absent_or_malformed_trace_header_gets_a_fresh_id(
    daemon: Daemon, header: str | None
) -> None:
    url = f"{endpoint(daemon)}/2015-03-31/functions/echo/invocations"
    headers = {} if header is None else {"X-Amzn-Trace-Id": header}
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, data=b'{"action": "trace"}', headers=headers) as resp,
    ):
        assert resp.status == 200
        assert FRESH_TRACE.fullmatch(orjson.loads(await resp.read())["trace"])


async def test_event_keeps_its_trace_on_the_durable_queue(
    daemon: Daemon, invoke: Call, tmp_path: Path
) -> None:
    out = tmp_path / "calls.jsonl"
    # The first event holds the function while the traced one waits on the queue.
    first = {"record": str(out), "id": "first", "sleep": 2}
    await invoke(FunctionName="single", InvocationType="Event", Payload=json.dumps(first))
    await wait_until(
        lambda: daemon.functions["single"].backend.workers,  # type: ignore[attr-defined]
        20,
        "the first event to start",
    )
    url = f"{endpoint(daemon)}/2015-03-31/functions/single/invocations"
    traced = {"record": str(out), "id": "traced", "with_trace": True}
    headers = {"X-Amz-Invocation-Type": "Event", "X-Amzn-Trace-Id": TRACE}
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, data=json.dumps(traced), headers=headers) as resp,
    ):
        assert resp.status == 202
        rid = resp.headers["x-amzn-RequestId"]
    with contextlib.closing(sqlite3.connect(tmp_path / "state.db")) as db:
        row = db.execute("SELECT trace_id FROM queue WHERE request_id = ?", (rid,)).fetchone()
    assert row == (TRACE,)
    await wait_until(lambda: len(records(out)) == 2, 30, "both events")
    assert records(out)[1] == {"request_id": rid, "id": "traced", "trace": TRACE}
