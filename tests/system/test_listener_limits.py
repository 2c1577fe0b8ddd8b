"""The connection cap of `triggerd run` started with a low descriptor limit (as a unit's
LimitNOFILE would set it): connections over `http_max_connections` are answered 503 and
closed at once, the daemon never runs out of descriptors, and it serves again as soon as
connections close; a cap that cannot fit under the limit refuses to start with one line."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path
from typing import Any

import pytest

from tests.system.conftest import Daemon, free_port, wait_for

pytestmark = pytest.mark.system

FUNCTIONS = Path(__file__).resolve().parents[1] / "integration" / "functions"

CAP = 50
#: Descriptors the daemon gets: room for the cap, not for every connection the test opens.
NOFILE = 128
HANG_S = 15.0


def config(port: int, max_connections: int = CAP) -> str:
    return f"""
[daemon]
state = "sqlite:///state/state.db"
listen = "127.0.0.1:{port}"
control_listen = ""
log_format = "json"
shutdown_timeout_s = 5
http_max_connections = {max_connections}
http_header_timeout_s = 60
"""


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=HANG_S)
    return sock


def answer(sock: socket.socket) -> bytes:
    """Everything the daemon sends until it closes the connection."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def healthz(port: int) -> bytes:
    with connect(port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        try:
            return answer(sock)
        except ConnectionResetError:
            return b""


def test_connections_over_the_cap_get_503_and_the_daemon_serves_once_others_close(
    tmp_path: Path, daemon_factory: Any
) -> None:
    port = free_port()
    d: Daemon = daemon_factory(config(port))
    d.start(nofile=NOFILE)
    idle = [connect(port) for _ in range(CAP)]  # admitted: the cap is full
    over = [connect(port) for _ in range(100)]  # with the idle ones, more than NOFILE
    try:
        for sock in over:
            assert answer(sock).startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        with connect(port) as late:  # still full: answered before it sends anything
            assert answer(late).startswith(b"HTTP/1.1 503 ")
        for sock in idle[:5]:
            sock.close()
        wait_for(lambda: healthz(port).startswith(b"HTTP/1.1 200 "), 60, "a freed slot")
    finally:
        for sock in idle + over:
            sock.close()
    assert d.terminate() == 0
    lines = [e for e in d.events() if e.get("event") == "http.refused"]
    assert {e["reason"] for e in lines} == {"connection_limit"}
    assert len(lines) == 1, "rate-limited: one line for a burst of refusals"
    assert lines[0]["level"] == "warning" and lines[0]["max_connections"] == CAP
    assert "Too many open files" not in d.stderr()
    assert "out of system resource" not in d.stderr()


#: Each listener's cap when both run: 2 x 40 connections with the daemon's own descriptors
#: exceed what one listener's reservation (open + one cap + headroom) raises a soft limit of
#: 64 to.
CAP2 = 40


def two_listeners(port: int, control: int) -> str:
    return config(port, CAP2).replace(
        'control_listen = ""', f'control_listen = "127.0.0.1:{control}"'
    )


def half_sent(port: int) -> socket.socket:
    sock = connect(port)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # the head never ends
    return sock


def test_two_listeners_get_descriptors_for_both_caps_and_answer_503_when_full(
    tmp_path: Path, daemon_factory: Any
) -> None:
    port, control = free_port(), free_port()
    d: Daemon = daemon_factory(two_listeners(port, control))
    d.start(nofile=(64, 4096))  # LimitNOFILE=64:4096: the daemon raises the soft limit
    assert d.proc is not None
    limits = Path(f"/proc/{d.proc.pid}/limits").read_text()
    [soft] = [int(line.split()[3]) for line in limits.splitlines() if "open files" in line]
    assert soft >= 2 * CAP2 + 64, "room for both listeners' caps at once"
    held: list[socket.socket] = []
    try:
        for address in (port, control):
            held += [half_sent(address) for _ in range(CAP2)]
        # Both caps full: a legitimate request is refused with 503, on either listener,
        # never reset for want of a descriptor.
        assert healthz(port).startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        busy = healthz(control)
        assert busy.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert b"x-amzn-ErrorType: ServiceUnavailableException\r\n" in busy, "AWS's shape"
        for sock in held[:3] + held[CAP2 : CAP2 + 3]:  # a few on each listener go away
            sock.close()
        wait_for(lambda: healthz(port).startswith(b"HTTP/1.1 200 "), 60, "a public slot")
        wait_for(lambda: healthz(control).startswith(b"HTTP/1.1 200 "), 60, "a control slot")
    finally:
        for sock in held:
            sock.close()
    assert d.terminate() == 0
    refused = [e for e in d.events() if e.get("event") == "http.refused"]
    assert {(e["listener"], e["reason"]) for e in refused} == {
        ("public", "connection_limit"),
        ("control", "connection_limit"),
    }
    assert not [e for e in d.events() if e.get("event") == "http.accept_failed"]
    assert "Too many open files" not in d.stderr()


def test_two_caps_that_cannot_fit_under_the_descriptor_limit_refuse_to_start(
    tmp_path: Path, daemon_factory: Any
) -> None:
    # One cap of 50 fits under 128 (the test above this one starts with it); two do not.
    d: Daemon = daemon_factory(
        two_listeners(free_port(), free_port()).replace(
            f"http_max_connections = {CAP2}", f"http_max_connections = {CAP}"
        )
    )
    with pytest.raises(AssertionError, match="daemon exited 7"):
        d.start(nofile=NOFILE)
    err = d.stderr()
    assert "Traceback" not in err
    [line] = [line for line in err.splitlines() if "http_max_connections" in line]
    assert line.startswith(
        f"triggerd: daemon.http_max_connections = {CAP} on each of 2 listeners needs about "
    )


def test_a_cap_that_cannot_fit_under_the_descriptor_limit_refuses_to_start(
    tmp_path: Path, daemon_factory: Any
) -> None:
    d: Daemon = daemon_factory(config(free_port(), max_connections=1000))
    with pytest.raises(AssertionError, match="daemon exited 7"):
        d.start(nofile=NOFILE)
    err = d.stderr()
    assert "Traceback" not in err
    [line] = [line for line in err.splitlines() if "http_max_connections" in line]
    assert line.startswith("triggerd: daemon.http_max_connections = 1000 needs about ")
    assert "the limit is 128" in line


def test_a_client_that_stops_reading_its_response_is_cut_off(
    tmp_path: Path, daemon_factory: Any
) -> None:
    port = free_port()
    d: Daemon = daemon_factory(
        config(port).replace("http_header_timeout_s = 60", "http_idle_timeout_s = 1")
        + f"""
[functions.actions]
handler = "app.handler"
code = "{FUNCTIONS / "webhook_actions"}"
timeout_s = 10

[[triggers]]
name = "echo"
function = "actions"
source = {{ type = "webhook", path = "/echo" }}
"""
    )
    d.start(ready_timeout=60)
    body = b"x" * (5 * 1024 * 1024)  # echoed back: more than the socket buffers hold
    with connect(port) as sock:
        sock.sendall(
            b"POST /echo?action=echo HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )

        def cut_off() -> bool:
            return any(e.get("reason") == "send_timeout" for e in d.events())

        wait_for(cut_off, HANG_S, "the daemon to stop sending to a reader that stopped")
        received = 0
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                received += len(chunk)
        assert received < len(body)
    assert d.terminate() == 0
