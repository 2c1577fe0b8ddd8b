"""HTTP/1.1 framing of the Runtime API on httptools: what the connection handles by itself
(limits, split and pipelined reads, `Expect`, keep-alive, flow control). Most tests feed bytes
to a `RuntimeConnection` over a recording transport, so how the bytes are cut into reads is
exact; the limits are also checked over a real loopback socket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from triggerd.functions.runtime_api import PendingInvocation, ReplyKind, RuntimeEndpoint
from triggerd.functions.runtime_http import (
    MAX_FIELD,
    MAX_HEAD,
    MAX_HEADERS,
    Request,
    RuntimeConnection,
)

BASE = "/2018-06-01/runtime"
NEXT = f"GET {BASE}/invocation/next HTTP/1.1\r\nHost: x\r\n\r\n".encode()
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Transport:
    """Records what the connection writes and asks of its transport."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        #: The buffers of each `writelines` call, as they were handed over.
        self.buffers: list[list[bytes]] = []
        self.closed = False
        self.reading = True

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(data)

    def writelines(self, data: list[bytes]) -> None:  # one call, as uvloop's one writev
        assert not self.closed
        self.buffers.append(list(data))
        self.writes.append(b"".join(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    @property
    def data(self) -> bytes:
        return b"".join(self.writes)

    def statuses(self) -> list[int]:
        """The status codes of the responses written so far, in order."""
        out, rest = [], self.data
        while rest:
            head, _, rest = rest.partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            out.append(int(lines[0].split()[1]))
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    rest = rest[int(value) :]
        return out


@pytest.fixture
async def endpoint() -> AsyncIterator[RuntimeEndpoint]:
    ep = RuntimeEndpoint(max_response_bytes=1000)
    yield ep
    await ep.close()


def connect(endpoint: RuntimeEndpoint) -> tuple[RuntimeConnection, Transport]:
    conn, transport = RuntimeConnection(endpoint), Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, transport


def invocation(request_id: str = "req-1") -> PendingInvocation:
    return PendingInvocation(
        request_id=request_id, payload=b'{"k": "v"}', deadline_ms=1, function_arn="arn"
    )


def request(method: str, path: str, body: bytes = b"", *headers: str) -> bytes:
    head = [f"{method} {path} HTTP/1.1", "Host: x", *headers]
    if body or method == "POST":
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def in_flight(endpoint: RuntimeEndpoint) -> tuple[RuntimeConnection, Transport, PendingInvocation]:
    """A connection whose runtime has polled and received invocation req-1."""
    conn, transport = connect(endpoint)
    inv = invocation()
    endpoint.submit(inv)
    conn.data_received(NEXT)
    assert transport.statuses() == [200]
    transport.writes.clear()
    return conn, transport, inv


def bad_request(transport: Transport) -> str:
    """The message of the one 400 answer written, after which the connection is closed."""
    assert transport.statuses()[-1] == 400 and transport.closed
    body = transport.data.rpartition(b"\r\n\r\n")[2]
    error = orjson.loads(body)
    assert error["errorType"] == "BadRequest"
    return str(error["errorMessage"])


# ---- reads cut anywhere -----------------------------------------------------------------------


async def test_a_request_split_byte_by_byte_is_answered_once(endpoint) -> None:
    conn, transport = connect(endpoint)
    endpoint.submit(invocation())
    for byte in NEXT:
        conn.data_received(bytes([byte]))
    assert len(transport.writes) == 1 and transport.statuses() == [200]
    assert b"Lambda-Runtime-Aws-Request-Id: req-1\r\n" in transport.data


async def test_a_result_post_split_byte_by_byte_keeps_its_body(endpoint) -> None:
    conn, transport, inv = in_flight(endpoint)
    data = request(
        "POST",
        f"{BASE}/invocation/req-1/error",
        b'{"errorMessage": "m"}',
        "Lambda-Runtime-Function-Error-Type: Custom.Error",
    )
    for byte in data:
        conn.data_received(bytes([byte]))
    assert transport.statuses() == [202]
    reply = inv.result.result()
    assert reply.kind is ReplyKind.ERROR and reply.error_type == "Custom.Error"
    assert reply.body == b'{"errorMessage": "m"}'


async def test_pipelined_requests_in_one_read_are_answered_in_order_in_one_write(
    endpoint,
) -> None:
    conn, transport = connect(endpoint)
    endpoint.submit(invocation())
    conn.data_received(
        request("GET", f"{BASE}/nope")
        + request("POST", f"{BASE}/invocation/next", b"x")
        + f"HEAD {BASE}/invocation/next HTTP/1.1\r\n\r\n".encode()
        + NEXT
    )
    assert len(transport.writes) == 1
    assert transport.statuses() == [404, 405, 405, 200]
    assert not transport.closed


async def test_a_result_and_the_next_poll_in_one_read_are_one_write(endpoint) -> None:
    conn, transport, inv = in_flight(endpoint)
    conn.data_received(request("POST", f"{BASE}/invocation/req-1/response", b"[1]") + NEXT)
    assert inv.result.result().body == b"[1]"
    assert transport.writes == []  # the 202 waits for the poll's answer
    endpoint.submit(invocation("two"))
    assert len(transport.writes) == 1 and transport.statuses() == [202, 200]


async def test_a_parked_poll_gets_the_event_as_its_own_buffer_not_a_copy(endpoint) -> None:
    """A batch's event (~140 KB for 100 Kafka records) goes to the transport as it is, after
    the held 202 and the head, in one call: no joined copy of it per invocation."""
    conn, transport, _ = in_flight(endpoint)
    conn.data_received(request("POST", f"{BASE}/invocation/req-1/response", b"[1]") + NEXT)
    event = PendingInvocation(
        request_id="two", payload=b"x" * 200_000, deadline_ms=1, function_arn="arn"
    )
    endpoint.submit(event)
    assert len(transport.writes) == 1 and transport.statuses() == [202, 200]
    (buffers,) = transport.buffers
    assert buffers[-1] is event.payload
    assert buffers[-2].startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Length: 200000\r\n\r\n" in buffers[-2]


async def test_a_head_begun_after_a_body_in_the_same_read_is_not_miscounted(endpoint) -> None:
    conn, transport, inv = in_flight(endpoint)
    body = b"x" * (MAX_HEAD + 1)  # counted as head bytes, this read would be a head too large
    data = request("POST", f"{BASE}/invocation/req-1/response", body) + NEXT
    cut = len(data) - 5
    conn.data_received(data[:cut])  # the body and most of the next head
    conn.data_received(data[cut:])
    assert inv.result.result().error_type == "Function.ResponseSizeTooLarge"
    endpoint.submit(invocation("two"))
    assert transport.statuses() == [413, 200]


# ---- limits -----------------------------------------------------------------------------------


async def test_a_target_at_the_limit_is_read_and_one_over_it_is_400(endpoint) -> None:
    conn, transport = connect(endpoint)
    path = f"{BASE}/"
    conn.data_received(request("GET", path + "a" * (MAX_FIELD - len(path))))
    assert transport.statuses() == [404]
    conn.data_received(request("GET", path + "a" * (MAX_FIELD + 1 - len(path))))
    assert "request target" in bad_request(transport)


async def test_an_oversize_header_value_or_name_is_400(endpoint) -> None:
    conn, transport = connect(endpoint)
    conn.data_received(request("GET", f"{BASE}/nope", b"", "X-A: " + "v" * MAX_FIELD))
    assert transport.statuses() == [404]
    conn.data_received(request("GET", f"{BASE}/nope", b"", "X-A: " + "v" * (MAX_FIELD + 1)))
    assert "header field" in bad_request(transport)
    conn, transport = connect(endpoint)
    conn.data_received(request("GET", f"{BASE}/nope", b"", "X" * (MAX_FIELD + 1) + ": v"))
    assert "header field" in bad_request(transport)


async def test_more_than_the_most_header_fields_is_400(endpoint) -> None:
    conn, transport = connect(endpoint)
    fields = [f"X-{i}: {i}" for i in range(MAX_HEADERS - 1)]  # and Host
    conn.data_received(request("GET", f"{BASE}/nope", b"", *fields))
    assert transport.statuses() == [404]
    conn.data_received(request("GET", f"{BASE}/nope", b"", *fields, "X-Last: 1"))
    assert "header fields" in bad_request(transport)


async def test_a_head_over_the_limit_is_400_even_with_small_fields(endpoint) -> None:
    conn, transport = connect(endpoint)
    fields = [f"X-{i}: {'v' * 2000}" for i in range(MAX_HEAD // 2000 + 1)]
    conn.data_received(request("GET", f"{BASE}/nope", b"", *fields))
    assert "request head" in bad_request(transport)


async def test_a_field_that_never_ends_is_cut_off_while_it_arrives(endpoint) -> None:
    conn, transport = connect(endpoint)
    conn.data_received(f"GET {BASE}/nope HTTP/1.1\r\nX-Endless: ".encode())
    for _ in range(MAX_HEAD // 4096 - 1):
        conn.data_received(b"v" * 4096)
    assert transport.writes == [] and not transport.closed
    conn.data_received(b"v" * 4096 * 2)  # the parser never saw the field end
    assert "request head" in bad_request(transport)


async def test_oversize_target_over_a_socket_is_400_and_closed(endpoint) -> None:
    await endpoint.start()
    host, port = endpoint.address.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request("GET", f"{BASE}/" + "a" * MAX_FIELD) + NEXT)
    data = await asyncio.wait_for(reader.read(), 5)  # to the end: the connection was closed
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n") and data.count(b"HTTP/1.1") == 1
    writer.close()
    assert not endpoint.ready.done()  # the poll after it was never read


async def test_malformed_chunk_framing_is_400(endpoint) -> None:
    conn, transport, inv = in_flight(endpoint)
    conn.data_received(
        f"POST {BASE}/invocation/req-1/response HTTP/1.1\r\n"
        "Transfer-Encoding: chunked\r\n\r\nzz\r\n".encode()
    )
    assert "malformed request" in bad_request(transport)
    assert not inv.result.done()


# ---- Expect, chunked bodies, keep-alive ------------------------------------------------------


async def test_a_chunked_body_with_expect_gets_100_continue_then_the_answer(endpoint) -> None:
    conn, transport, inv = in_flight(endpoint)
    conn.data_received(
        f"POST {BASE}/invocation/req-1/response HTTP/1.1\r\nHost: x\r\n"
        "Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n".encode()
    )
    assert transport.writes == [CONTINUE]
    conn.data_received(b"3\r\n[1,\r\n")
    conn.data_received(b"3\r\n 2]\r\n0\r\n\r\n")
    assert transport.writes[1:] and transport.statuses() == [100, 202]
    assert inv.result.result().body == b"[1, 2]"


async def test_expect_with_the_body_already_there_gets_no_interim_answer(endpoint) -> None:
    conn, transport, inv = in_flight(endpoint)
    data = request("POST", f"{BASE}/invocation/req-1/response", b"[3]", "Expect: 100-continue")
    conn.data_received(data)
    assert transport.statuses() == [202] and inv.result.result().body == b"[3]"


async def test_expect_behind_a_parked_poll_waits_for_its_turn(endpoint) -> None:
    conn, transport = connect(endpoint)
    conn.data_received(
        NEXT
        + f"POST {BASE}/invocation/req-1/response HTTP/1.1\r\nContent-Length: 3\r\n"
        "Expect: 100-continue\r\n\r\n".encode()
    )
    assert transport.writes == []  # the interim answer cannot overtake the poll's
    inv = invocation()
    endpoint.submit(inv)
    assert transport.statuses() == [200, 100] and len(transport.writes) == 1
    conn.data_received(b"[4]")
    assert transport.statuses() == [200, 100, 202]
    assert inv.result.result().body == b"[4]"


async def test_an_oversize_body_is_counted_not_kept_and_the_connection_stays_usable(
    endpoint,
) -> None:
    conn, transport, inv = in_flight(endpoint)
    conn.data_received(request("POST", f"{BASE}/invocation/req-1/response", b"x" * 1001))
    assert transport.statuses() == [413]
    reply = inv.result.result()
    assert reply.error_type == "Function.ResponseSizeTooLarge"
    assert b"(1001 bytes)" in reply.body
    endpoint.submit(invocation("after"))
    conn.data_received(NEXT)
    assert transport.statuses() == [413, 200] and not transport.closed


async def test_http_1_0_closes_after_the_answer_unless_asked_to_keep_alive(endpoint) -> None:
    conn, transport = connect(endpoint)
    conn.data_received(f"GET {BASE}/nope HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".encode())
    assert transport.statuses() == [404] and not transport.closed
    conn.data_received(f"GET {BASE}/nope HTTP/1.0\r\n\r\n".encode())
    assert transport.statuses() == [404, 404] and transport.closed


async def test_bytes_after_connection_close_are_dropped(endpoint) -> None:
    conn, transport = connect(endpoint)
    close = request("GET", f"{BASE}/nope", b"", "Connection: close")
    conn.data_received(close + b"GARBAGE\r\n\r\n")
    assert transport.statuses() == [404] and transport.closed


async def test_an_upgrade_request_is_answered_and_the_connection_closed(endpoint) -> None:
    conn, transport = connect(endpoint)
    upgrade = request("GET", f"{BASE}/nope", b"", "Upgrade: websocket", "Connection: upgrade")
    conn.data_received(upgrade + b"\x81\x05hello")
    assert transport.statuses() == [404] and transport.closed


# ---- flow control -----------------------------------------------------------------------------


async def test_reading_pauses_while_the_runtime_does_not_read_its_answers(endpoint) -> None:
    conn, transport = connect(endpoint)
    conn.pause_writing()
    assert not transport.reading
    conn.resume_writing()
    assert transport.reading


async def test_reading_pauses_while_a_parked_poll_holds_bodies_over_the_limit(endpoint) -> None:
    conn, transport = connect(endpoint)
    conn.data_received(NEXT + request("POST", f"{BASE}/invocation/x/response", b"y" * 600))
    assert transport.reading
    conn.data_received(request("POST", f"{BASE}/invocation/x/response", b"z" * 600))
    assert not transport.reading  # 1,200 bytes behind the poll against a 1,000 limit
    endpoint.submit(invocation())
    assert transport.reading
    assert transport.statuses() == [200, 400, 400]


async def test_a_fault_in_the_handler_is_raised_not_answered_400(endpoint, monkeypatch) -> None:
    conn, transport = connect(endpoint)

    def broken(conn: Any, request: Request) -> bytes | None:
        raise RuntimeError("bug")

    monkeypatch.setattr(endpoint, "dispatch", broken)
    with pytest.raises(RuntimeError, match="bug"):
        conn.data_received(NEXT)
    assert transport.writes == []
