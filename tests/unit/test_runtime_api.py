"""The Runtime API of one execution environment, driven over loopback by an aiohttp client
(and by raw sockets where HTTP/1.1 framing itself is under test)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import pytest
from multidict import CIMultiDictProxy

from triggerd.functions.runtime_api import (
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
    await ep.start()
    yield ep
    await ep.close()


@dataclass
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    async def read(self) -> bytes:
        return self.body

    async def json(self) -> Any:
        return orjson.loads(self.body)


class Client:
    """An aiohttp client session bound to the endpoint's address; answers read whole."""

    def __init__(self, session: aiohttp.ClientSession, address: str) -> None:
        self._session = session
        self._base = f"http://{address}"

    async def get(self, path: str) -> Reply:
        async with self._session.get(self._base + path) as resp:
            return Reply(resp.status, resp.headers, await resp.read())

    async def post(self, path: str, data: bytes, headers: dict[str, str] | None = None) -> Reply:
        async with self._session.post(self._base + path, data=data, headers=headers) as resp:
            return Reply(resp.status, resp.headers, await resp.read())


@pytest.fixture
async def client(endpoint: RuntimeEndpoint) -> AsyncIterator[Client]:
    async with aiohttp.ClientSession() as session:
        yield Client(session, endpoint.address)


def invocation(request_id: str = "req-1", **kwargs: object) -> PendingInvocation:
    return PendingInvocation(
        request_id=request_id,
        payload=kwargs.pop("payload", b'{"k": "v"}'),  # type: ignore[arg-type]
        deadline_ms=1_700_000_003_000,
        function_arn=ARN,
        **kwargs,  # type: ignore[arg-type]
    )


async def fetch(client: Client, endpoint: RuntimeEndpoint, inv: PendingInvocation) -> Reply:
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


# ---- HTTP/1.1 framing, over a raw socket ------------------------------------------------------


class RawConnection:
    """A raw TCP connection to the endpoint: bytes out, whole responses in."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, endpoint: RuntimeEndpoint) -> RawConnection:
        host, port = endpoint.address.split(":")
        return cls(*await asyncio.open_connection(host, int(port)))

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def response(self) -> tuple[int, dict[str, str], bytes]:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 5)
        status_line, *lines = head.decode().split("\r\n")
        headers = {
            name.lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines if line)
        }
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return int(status_line.split()[1]), headers, body

    async def closed(self) -> bool:
        return await asyncio.wait_for(self.reader.read(), 5) == b""

    def close(self) -> None:
        self.writer.close()


def post(path: str, body: bytes, *extra: str) -> bytes:
    head = [f"POST {BASE}{path} HTTP/1.1", "Host: x", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


NEXT = f"GET {BASE}/invocation/next HTTP/1.1\r\nHost: x\r\n\r\n".encode()


async def in_flight(
    endpoint: RuntimeEndpoint, request_id: str = "req-1"
) -> tuple[RawConnection, PendingInvocation]:
    """A raw connection whose runtime has polled and received invocation `request_id`."""
    conn = await RawConnection.open(endpoint)
    inv = invocation(request_id)
    endpoint.submit(inv)
    conn.send(NEXT)
    await conn.response()
    return conn, inv


async def test_pipelined_post_and_next_are_answered_in_order(endpoint) -> None:
    conn = await RawConnection.open(endpoint)
    first = invocation("one")
    endpoint.submit(first)
    conn.send(NEXT)
    assert (await conn.response())[1]["lambda-runtime-aws-request-id"] == "one"
    # The bundled runtime posts the result and polls again in one write.
    conn.send(post("/invocation/one/response", b'"done"') + NEXT)
    reply = await asyncio.wait_for(asyncio.shield(first.result), 5)
    assert reply == RuntimeReply(ReplyKind.RESPONSE, b'"done"')
    endpoint.submit(invocation("two"))  # the poll waited until now
    # The result's 202 was held back and is written with the poll's answer, in order.
    status, _, body = await conn.response()
    assert (status, body) == (202, b'{"status":"OK"}')
    status, headers, _ = await conn.response()
    assert status == 200 and headers["lambda-runtime-aws-request-id"] == "two"
    conn.close()


async def test_a_result_post_alone_is_answered_at_once(endpoint) -> None:
    conn, _ = await in_flight(endpoint, "one")
    conn.send(post("/invocation/one/response", b"1"))
    assert (await conn.response())[0] == 202
    conn.close()


async def test_expect_100_continue_gets_an_interim_answer_before_the_body(endpoint) -> None:
    conn, inv = await in_flight(endpoint)
    body = b'{"big": true}'
    head = post("/invocation/req-1/response", b"", "Expect: 100-continue")
    conn.send(head.replace(b"Content-Length: 0", f"Content-Length: {len(body)}".encode()))
    interim = await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), 5)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert not inv.result.done()
    conn.send(body)
    assert (await conn.response())[0] == 202
    assert inv.result.result().body == body
    conn.close()


async def test_chunked_response_body_is_reassembled(endpoint) -> None:
    conn, inv = await in_flight(endpoint)
    conn.send(
        f"POST {BASE}/invocation/req-1/response HTTP/1.1\r\nHost: x\r\n"
        "Transfer-Encoding: chunked\r\n\r\n".encode()
    )
    await asyncio.sleep(0.01)
    conn.send(b"4\r\n[1, \r\n")
    await asyncio.sleep(0.01)
    conn.send(b"2\r\n2]\r\n0\r\n\r\n")
    assert (await conn.response())[0] == 202
    assert inv.result.result().body == b"[1, 2]"
    conn.close()


async def test_chunked_body_over_the_limit_is_413_without_holding_it(endpoint) -> None:
    conn, inv = await in_flight(endpoint)
    head = f"POST {BASE}/invocation/req-1/response HTTP/1.1\r\nHost: x\r\n"
    conn.send((head + "Transfer-Encoding: chunked\r\n\r\n").encode())
    for _ in range(3):
        conn.send(b"258\r\n" + b"x" * 600 + b"\r\n")  # 1,800 bytes against a 1,000 limit
    conn.send(b"0\r\n\r\n")
    assert (await conn.response())[0] == 413
    reply = inv.result.result()
    assert reply.error_type == "Function.ResponseSizeTooLarge"
    conn.send(NEXT)  # the connection is still in step
    endpoint.submit(invocation("after"))
    assert (await conn.response())[1]["lambda-runtime-aws-request-id"] == "after"
    conn.close()


async def test_malformed_request_is_400_and_the_connection_is_closed(endpoint) -> None:
    conn = await RawConnection.open(endpoint)
    conn.send(b"THIS IS NOT HTTP\r\n\r\n")
    status, _, body = await conn.response()
    assert status == 400
    assert orjson.loads(body)["errorType"] == "BadRequest"
    assert await conn.closed()
    assert not endpoint.ready.done()


async def test_connection_close_is_honoured_after_the_answer(endpoint) -> None:
    conn = await RawConnection.open(endpoint)
    endpoint.submit(invocation())
    conn.send(
        f"GET {BASE}/invocation/next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    )
    assert (await conn.response())[0] == 200
    assert await conn.closed()


async def test_poll_on_a_dropped_connection_does_not_block_a_new_one(endpoint) -> None:
    first = await RawConnection.open(endpoint)
    first.send(NEXT)
    await asyncio.wait_for(asyncio.shield(endpoint.ready), 5)
    first.close()
    await asyncio.sleep(0.05)
    second = await RawConnection.open(endpoint)
    second.send(NEXT)
    await asyncio.sleep(0.05)
    endpoint.submit(invocation("again"))
    status, headers, _ = await second.response()
    assert status == 200 and headers["lambda-runtime-aws-request-id"] == "again"
    second.close()


async def test_line_breaks_in_a_client_context_cannot_split_the_answer(endpoint) -> None:
    conn = await RawConnection.open(endpoint)
    endpoint.submit(invocation(client_context='{"custom":\r\n {"a": 1}}\r\nX-Injected: 1'))
    conn.send(NEXT)
    status, headers, body = await conn.response()
    assert status == 200 and body == b'{"k": "v"}'
    assert "x-injected" not in headers
    assert headers["lambda-runtime-client-context"].startswith('{"custom":')
    conn.close()


async def test_a_flood_of_pipelined_requests_is_cut_off(endpoint) -> None:
    conn = await RawConnection.open(endpoint)
    conn.send(NEXT + post("/invocation/x/response", b"1") * 40)
    status, _, _ = await conn.response()
    assert status == 400
    assert await conn.closed()


async def test_head_is_405_without_a_body_and_the_connection_stays_in_step(endpoint) -> None:
    conn = await RawConnection.open(endpoint)
    conn.send(f"HEAD {BASE}/invocation/next HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head = await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 405 ") and b"Content-Length: 0\r\n" in head
    endpoint.submit(invocation("after-head"))
    conn.send(NEXT)
    status, headers, _ = await conn.response()
    assert status == 200 and headers["lambda-runtime-aws-request-id"] == "after-head"
    conn.close()


async def test_a_poll_whose_runtime_stopped_sending_is_not_handed_an_invocation(
    endpoint,
) -> None:
    first = await RawConnection.open(endpoint)
    first.send(NEXT)
    await asyncio.wait_for(asyncio.shield(endpoint.ready), 5)
    first.writer.write_eof()  # the runtime half-closes: it will read, never send again
    await asyncio.sleep(0.05)
    inv = invocation("kept")
    endpoint.submit(inv)  # not given to the closing connection...
    second = await RawConnection.open(endpoint)
    second.send(NEXT)  # ...but to the runtime's next poll
    status, headers, _ = await second.response()
    assert status == 200 and headers["lambda-runtime-aws-request-id"] == "kept"
    first.close()
    second.close()


# ---- the answers the AWS Runtime Interface Emulator gives --------------------------------------


async def test_unknown_request_id_is_answered_as_the_rie_does(client, endpoint) -> None:
    await fetch(client, endpoint, invocation())
    resp = await client.post(BASE + "/invocation/other-id/response", data=b"1")
    assert resp.status == 400
    assert resp.headers["Content-Type"] == "application/json"
    assert await resp.json() == {
        "errorMessage": "Invalid request ID",
        "errorType": "InvalidRequestID",
    }


async def test_double_response_is_an_invalid_state_transition(client, endpoint) -> None:
    await fetch(client, endpoint, invocation())
    assert (await client.post(BASE + "/invocation/req-1/response", data=b"1")).status == 202
    for action, target in (
        ("response", "InvocationResponse"),
        ("error", "InvocationErrorResponse"),
    ):
        again = await client.post(f"{BASE}/invocation/req-1/{action}", data=b"{}")
        assert again.status == 403
        assert await again.json() == {
            "errorMessage": f"State transition from RuntimeResponseSentState to {target} failed "
            "for runtime. Error: State transition is not allowed",
            "errorType": "InvalidStateTransition",
        }


async def test_next_while_running_and_late_init_error_quote_the_runtime_state(
    client, endpoint
) -> None:
    await fetch(client, endpoint, invocation())
    resp = await client.get(BASE + "/invocation/next")
    assert (await resp.json())["errorMessage"].startswith(
        "State transition from Running to Ready failed for runtime."
    )
    late = await client.post(BASE + "/init/error", data=b"{}")
    assert late.status == 403
    assert (await late.json())["errorType"] == "InvalidStateTransition"


async def test_oversized_response_answer_names_the_limit(client, endpoint) -> None:
    await fetch(client, endpoint, invocation())
    resp = await client.post(BASE + "/invocation/req-1/response", data=b"x" * 5000)
    assert resp.status == 413
    assert await resp.json() == {
        "errorMessage": "Exceeded maximum allowed payload size (1000 bytes).",
        "errorType": "RequestEntityTooLarge",
    }


async def test_wrong_method_is_405_with_allow_and_no_body(client, endpoint) -> None:
    for path, allow in (
        (BASE + "/invocation/next", "GET"),
        (BASE + "/init/error", "POST"),
        (BASE + "/invocation/r1/response", "POST"),
        ("/2020-01-01/extension/register", "POST"),
        ("/2020-01-01/extension/event/next", "GET"),
        ("/2022-07-01/telemetry", "PUT"),
    ):
        method = "POST" if allow == "GET" else "GET"
        resp = await (client.post(path, data=b"") if method == "POST" else client.get(path))
        assert (resp.status, resp.headers.get("Allow"), resp.body) == (405, allow, b""), path


async def test_unknown_path_is_gos_plain_text_404(client, endpoint) -> None:
    resp = await client.get("/2018-06-01/runtime/nope")
    assert resp.status == 404
    assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert resp.body == b"404 page not found\n"


async def test_ping_answers_pong(client, endpoint) -> None:
    resp = await client.get("/2018-06-01/ping")
    assert (resp.status, resp.body) == (200, b"pong")


async def test_next_carries_cognito_identity_and_client_context(client, endpoint) -> None:
    identity = '{"cognitoIdentityId":"id-1","cognitoIdentityPoolId":"pool-1"}'
    inv = invocation(client_context='{"client":{"app_title":"t"}}', cognito_identity=identity)
    resp = await fetch(client, endpoint, inv)
    assert resp.headers["Lambda-Runtime-Cognito-Identity"] == identity
    assert resp.headers["Lambda-Runtime-Client-Context"] == '{"client":{"app_title":"t"}}'
    assert resp.headers["Content-Type"] == "application/json"
