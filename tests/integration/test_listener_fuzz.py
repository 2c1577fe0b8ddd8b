"""A bounded fuzz of the public listener (webhooks, with and without authentication) and the
Invoke API: raw random request lines, headers and bodies from hypothesis, sent to
`triggerd run` as a subprocess. Whatever arrives, the answer is never a 5xx, the daemon
never logs an error, and it still answers /healthz afterwards."""

from __future__ import annotations

import contextlib
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.system.conftest import Daemon, free_port

pytestmark = pytest.mark.integration

FUNCTIONS = Path(__file__).parent / "functions"
READ_S = 10.0


def config(port: int) -> str:
    return f"""
[daemon]
state = "sqlite:///state/state.db"
listen = "127.0.0.1:{port}"
control_listen = ""
control_on_public = true
log_format = "json"
shutdown_timeout_s = 5
http_header_timeout_s = 0.5
http_body_timeout_s = 0.5
http_idle_timeout_s = 0.5

[functions.echo]
handler = "app.handler"
code = "{FUNCTIONS / "echo"}"
timeout_s = 10

[[triggers]]
name = "open"
function = "echo"
source = {{ type = "webhook", path = "/hooks/{{proxy+}}", max_body_bytes = 4096 }}

[[triggers]]
name = "github"
function = "echo"
source = {{ type = "webhook", path = "/signed/github", auth = {{ type = "hmac", secret = "s" }} }}

[[triggers]]
name = "stripe"
function = "echo"
[triggers.source]
type = "webhook"
path = "/signed/stripe"
auth = {{ type = "hmac", style = "stripe", secret = "s" }}

[[triggers]]
name = "bearer"
function = "echo"
source = {{ type = "webhook", path = "/signed/bearer", auth = {{ type = "bearer", token = "t" }} }}
"""


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = free_port()
    daemon = Daemon(tmp_path_factory.mktemp("fuzz"), config(port))
    # The session's first daemon may build the Python runtimes' directory (boto3) first.
    daemon.start(ready_timeout=60)
    try:
        yield port
        assert daemon.proc is not None and daemon.proc.poll() is None, daemon.stderr()
        assert _exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")[
            :15
        ] == (b"HTTP/1.1 200 OK")
        errors = [e for e in daemon.events() if e.get("level") in ("error", "critical")]
        assert errors == []
        assert daemon.terminate() == 0
    finally:
        daemon.stop()


TOKEN = st.text(
    alphabet="!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    min_size=1,
    max_size=12,
)
ANY_BYTES = st.binary(max_size=64)
LINE_BYTES = ANY_BYTES.map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))

methods = (
    st.one_of(
        st.sampled_from(["GET", "POST", "PUT", "HEAD", "OPTIONS", "DELETE", "PATCH"]),
        TOKEN,
    ).map(str.encode)
    | LINE_BYTES
)
paths = st.one_of(
    st.sampled_from(
        [
            "/healthz",
            "/metrics",
            "/readyz",
            "/statusz",
            "/hooks/a",
            "/hooks/%2e%2e/%2e%2e/etc/passwd",
            "/signed/github",
            "/signed/stripe",
            "/signed/bearer",
            "/2015-03-31/functions/echo/invocations",
            "/2015-03-31/functions/arn:aws:lambda:us-east-1:123456789012:function:echo/invocations",
            "/2015-03-31/functions/nope/invocations",
        ]
    ).map(str.encode),
    LINE_BYTES.map(lambda b: b"/" + b),
)
suffixes = st.sampled_from([b"", b"?Qualifier=$LATEST", b"?a=%ff&b", b"#frag", b"%", b"?"])
versions = st.sampled_from(
    [b" HTTP/1.1", b" HTTP/1.0", b"", b" HTTP/0.9", b" HTTP/2.0", b" HTTP/1.1x"]
)
header_names = st.sampled_from(
    [
        "Host",
        "Content-Type",
        "Authorization",
        "X-Hub-Signature-256",
        "Stripe-Signature",
        "Expect",
        "Transfer-Encoding",
        "Content-Encoding",
        "X-Amz-Invocation-Type",
        "X-Amz-Log-Type",
        "X-Amz-Client-Context",
        "X-Amzn-Trace-Id",
        "Cookie",
        "Origin",
        "Accept",
        "Upgrade",
        "Connection",
    ]
).map(str.encode) | TOKEN.map(str.encode)
header_values = st.one_of(
    st.sampled_from(
        [
            b"100-continue",
            b"chunked",
            b"gzip",
            b"Event",
            b"DryRun",
            b"RequestResponse",
            b"Tail",
            b"Bearer t",
            b"t=\xc2\xb2,v1=00",
            b"sha256=" + b"0" * 64,
            b"websocket",
            b"application/json",
        ]
    ),
    LINE_BYTES,
)
headers = st.lists(st.tuples(header_names, header_values), max_size=8)
bodies = st.binary(max_size=2048)
lengths = st.sampled_from(["exact", "none", "short", "long", "junk"])


def build(
    method: bytes,
    path: bytes,
    suffix: bytes,
    version: bytes,
    head: list[tuple[bytes, bytes]],
    body: bytes,
    length: str,
) -> bytes:
    lines = [method + b" " + path + suffix + version]
    lines += [name + b": " + value for name, value in head]
    declared = {"exact": len(body), "short": max(0, len(body) - 1), "long": len(body) + 10}
    if length in declared:
        lines.append(b"Content-Length: %d" % declared[length])
    elif length == "junk":
        lines.append(b"Content-Length: 1e3")
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _exchange(port: int, data: bytes) -> bytes:
    """The daemon's answer (its head at least) until it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=READ_S) as sock:
        # Refused before everything was sent: read what was answered.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
        return b"".join(chunks)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(methods, paths, suffixes, versions, headers, bodies, lengths)
@pytest.mark.timeout(600)
def test_random_requests_are_never_answered_5xx(
    port: int,
    method: bytes,
    path: bytes,
    suffix: bytes,
    version: bytes,
    head: list[tuple[bytes, bytes]],
    body: bytes,
    length: str,
) -> None:
    answer = _exchange(port, build(method, path, suffix, version, head, body, length))
    status = _status(answer)
    if status == 100:  # the final answer follows the interim one
        status = _status(answer.partition(b"\r\n\r\n")[2])
    assert status is None or status < 500 or status == 505, answer[:300]


def _status(answer: bytes) -> int | None:
    """The status of the answer's first head; None when the daemon closed without one."""
    if not answer:
        return None
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", answer)
    assert match, answer[:300]
    return int(match.group(1))
