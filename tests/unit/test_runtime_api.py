"""The Runtime API handlers of one execution environment, driven by aiohttp's test client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import BaseTestServer, TestClient

from triggerd.runtime_api import (
    EndpointBusyError,
    PendingInvocation,
    ReplyKind,
    RuntimeEndpoint,
    RuntimeReply,
    error_body,
)

BASE = "/2018-06-01/runtime"
ARN = "arn:aws:lambda:us-east-1:123456789012:function:f1"


@pytest.fixture
async def endpoint() -> AsyncIterator[RuntimeEndpoint]:
    ep = RuntimeEndpoint(max_response_bytes=1000)
    yield ep
    await ep.close()


class EndpointServer(BaseTestServer):
    """aiohttp's test server around the endpoint's own low-level server."""

    def __init__(self, endpoint: RuntimeEndpoint) -> None:
        self._endpoint = endpoint
        super().__init__()

    async def _make_runner(self, **kwargs: object) -> web.ServerRunner:
        return web.ServerRunner(self._endpoint.make_server())


@pytest.fixture
async def client(endpoint: RuntimeEndpoint) -> AsyncIterator[TestClient[aiohttp.web.Request]]:
    async with TestClient(EndpointServer(endpoint)) as c:
        yield c


def invocation(request_id: str = "req-1", **kwargs: object) -> PendingInvocation:
    return PendingInvocation(
        request_id=request_id,
        payload=kwargs.pop("payload", b'{"k": "v"}'),  # type: ignore[arg-type]
        deadline_ms=1_700_000_003_000,
        function_arn=ARN,
        **kwargs,  # type: ignore[arg-type]
    )


async def fetch(
    client: TestClient[aiohttp.web.Request], endpoint: RuntimeEndpoint, inv: PendingInvocation
) -> aiohttp.ClientResponse:
    endpoint.submit(inv)
    return await client.get(BASE + "/invocation/next")


async def test_next_delivers_payload_bytes_and_lambda_headers(client, endpoint) -> None:
    inv = invocation(trace_id="Root=1-abc", client_context='{"custom": {"a": 1}}')
    resp = await fetch(client, endpoint, inv)
    assert resp.status == 200
    assert await resp.read() == b'{"k": "v"}'
    assert resp.headers["Lambda-Runtime-Aws-Request-Id"] == "req-1"
    assert resp.headers["Lambda-Runtime-Deadline-Ms"] == "1700000003000"
    assert resp.headers["Lambda-Runtime-Invoked-Function-Arn"] == ARN
    assert resp.headers["Lambda-Runtime-Trace-Id"] == "Root=1-abc"
    assert resp.headers["Lambda-Runtime-Client-Context"] == '{"custom": {"a": 1}}'
    assert resp.headers["Content-Type"] == "application/json"


async def test_next_omits_client_context_header_when_not_given(client, endpoint) -> None:
    resp = await fetch(client, endpoint, invocation())
    assert "Lambda-Runtime-Client-Context" not in resp.headers
    assert "Lambda-Runtime-Trace-Id" not in resp.headers


async def test_next_long_polls_until_an_invocation_is_submitted(client, endpoint) -> None:
    poll = asyncio.ensure_future(client.get(BASE + "/invocation/next"))
    await asyncio.wait_for(asyncio.shield(endpoint.ready), 5)
    assert not poll.done()
    endpoint.submit(invocation("late"))
    resp = await asyncio.wait_for(poll, 5)
    assert resp.headers["Lambda-Runtime-Aws-Request-Id"] == "late"


async def test_first_poll_marks_init_done(client, endpoint) -> None:
    assert not endpoint.ready.done()
    await fetch(client, endpoint, invocation())
    assert endpoint.ready.result() is None


async def test_response_is_accepted_and_resolves_with_exact_bytes(client, endpoint) -> None:
    inv = invocation()
    await fetch(client, endpoint, inv)
    resp = await client.post(BASE + "/invocation/req-1/response", data=b'{"a":1,  "b": [ ]}')
    assert resp.status == 202
    assert await resp.json() == {"status": "OK"}
    reply = inv.result.result()
    assert reply == RuntimeReply(ReplyKind.RESPONSE, b'{"a":1,  "b": [ ]}')
    assert not endpoint.busy


async def test_second_answer_is_403_and_unknown_id_is_400(client, endpoint) -> None:
    await fetch(client, endpoint, invocation())
    assert (await client.post(BASE + "/invocation/req-1/response", data=b"1")).status == 202
    again = await client.post(BASE + "/invocation/req-1/error", data=b"{}")
    assert again.status == 403
    unknown = await client.post(BASE + "/invocation/nope/response", data=b"1")
    assert unknown.status == 400
    assert (await unknown.json())["errorType"] == "InvalidRequestID"


async def test_error_post_reads_error_type_header_and_json_body(client, endpoint) -> None:
    inv = invocation()
    await fetch(client, endpoint, inv)
    body = orjson.dumps({"errorMessage": "boom", "errorType": "ValueError", "stackTrace": []})
    resp = await client.post(
        BASE + "/invocation/req-1/error",
        data=body,
        headers={"Lambda-Runtime-Function-Error-Type": "ValueError"},
    )
    assert resp.status == 202
    assert inv.result.result() == RuntimeReply(ReplyKind.ERROR, body, "ValueError")


async def test_error_post_without_json_body_gets_an_error_object(client, endpoint) -> None:
    inv = invocation()
    await fetch(client, endpoint, inv)
    await client.post(
        BASE + "/invocation/req-1/error",
        data=b"not json",
        headers={"Lambda-Runtime-Function-Error-Type": "Runtime.Crash"},
    )
    reply = inv.result.result()
    assert orjson.loads(reply.body) == {"errorMessage": "not json", "errorType": "Runtime.Crash"}


async def test_oversized_response_is_413_and_fails_the_invocation(client, endpoint) -> None:
    inv = invocation()
    await fetch(client, endpoint, inv)
    resp = await client.post(BASE + "/invocation/req-1/response", data=b"x" * 1001)
    assert resp.status == 413
    reply = inv.result.result()
    assert reply.kind is ReplyKind.ERROR
    assert reply.error_type == "Function.ResponseSizeTooLarge"
    assert b"(1000 bytes)" in reply.body


async def test_response_at_the_limit_is_accepted(client, endpoint) -> None:
    inv = invocation()
    await fetch(client, endpoint, inv)
    resp = await client.post(BASE + "/invocation/req-1/response", data=b"x" * 1000)
    assert resp.status == 202
    assert inv.result.result().body == b"x" * 1000


async def test_init_error_resolves_ready_with_the_error(client, endpoint) -> None:
    body = orjson.dumps({"errorMessage": "no module", "errorType": "Runtime.ImportModuleError"})
    resp = await client.post(
        BASE + "/init/error",
        data=body,
        headers={"Lambda-Runtime-Function-Error-Type": "Runtime.ImportModuleError"},
    )
    assert resp.status == 202
    reply = endpoint.ready.result()
    assert reply == RuntimeReply(ReplyKind.INIT_ERROR, body, "Runtime.ImportModuleError")


async def test_init_error_without_header_takes_the_type_from_the_body(client, endpoint) -> None:
    body = orjson.dumps({"errorMessage": "x", "errorType": "Runtime.HandlerNotFound"})
    await client.post(BASE + "/init/error", data=body)
    reply = endpoint.ready.result()
    assert reply is not None and reply.error_type == "Runtime.HandlerNotFound"


async def test_init_error_after_first_poll_is_403(client, endpoint) -> None:
    await fetch(client, endpoint, invocation())
    resp = await client.post(BASE + "/init/error", data=b"{}")
    assert resp.status == 403


async def test_next_while_an_invocation_is_in_flight_is_403(client, endpoint) -> None:
    await fetch(client, endpoint, invocation())
    resp = await client.get(BASE + "/invocation/next")
    assert resp.status == 403


async def test_unknown_paths_are_404_and_wrong_methods_405(client, endpoint) -> None:
    assert (await client.get("/2018-06-01/runtime/nope")).status == 404
    assert (await client.post(BASE + "/invocation/r1/other", data=b"")).status == 404
    assert (await client.post(BASE + "/invocation//response", data=b"")).status == 404
    assert (await client.post(BASE + "/invocation/next", data=b"")).status == 405
    assert (await client.get(BASE + "/init/error")).status == 405
    assert (await client.get(BASE + "/invocation/r1/response")).status == 405
    assert not endpoint.ready.done()


async def test_submit_while_busy_raises(endpoint) -> None:
    endpoint.submit(invocation("a"))
    with pytest.raises(EndpointBusyError):
        endpoint.submit(invocation("b"))


async def test_abort_resolves_the_invocation_in_flight(client, endpoint) -> None:
    inv = invocation()
    await fetch(client, endpoint, inv)
    endpoint.abort(RuntimeReply(ReplyKind.EXITED, error_type="exit status 1"))
    assert inv.result.result() == RuntimeReply(ReplyKind.EXITED, error_type="exit status 1")
    assert not endpoint.busy


async def test_close_ends_a_waiting_poll_with_500_and_refuses_new_work(client, endpoint) -> None:
    poll = asyncio.ensure_future(client.get(BASE + "/invocation/next"))
    await asyncio.wait_for(asyncio.shield(endpoint.ready), 5)
    await endpoint.close()
    assert (await asyncio.wait_for(poll, 5)).status == 500
    late = invocation("late")
    endpoint.submit(late)
    assert late.result.result().kind is ReplyKind.CLOSED


async def test_start_serves_on_a_loopback_port() -> None:
    ep = RuntimeEndpoint()
    await ep.start()
    try:
        host, port = ep.address.split(":")
        assert host == "127.0.0.1" and int(port) > 0
        ep.submit(invocation())
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://{ep.address}{BASE}/invocation/next") as resp,
        ):
            assert resp.headers["Lambda-Runtime-Aws-Request-Id"] == "req-1"
    finally:
        await ep.close()


def test_error_body_keeps_json_objects_and_wraps_anything_else() -> None:
    raw = b'{"errorMessage": "m", "errorType": "T"}'
    assert error_body(raw, "X") == raw
    assert orjson.loads(error_body(b"", None)) == {
        "errorMessage": "",
        "errorType": "Runtime.Unknown",
    }
    assert orjson.loads(error_body(b"[1]", "T")) == {"errorMessage": "[1]", "errorType": "T"}
