"""The `http` backend against a real aiohttp server started in the test (no mocks of the wire)."""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from aiohttp import web
from multidict import CIMultiDict

from triggerd.functions.backends.http import HttpBackend, HttpFunctionConfig, plugin
from triggerd.types import MAX_SYNC_PAYLOAD, BackendContext, Outcome, SystemClock

pytestmark = pytest.mark.integration

RIE = "/2015-03-31/functions/function/invocations"
SECRET = "s3cr3t-token-value"


class FunctionServer:
    """A plain HTTP function and an RIE-like Invoke endpoint, on a free loopback port."""

    def __init__(self) -> None:
        self.inflight = 0
        self.max_inflight = 0
        self.seen_headers: list[CIMultiDict[str]] = []
        #: (method, body) of every request the redirect target received.
        self.moved_to: list[tuple[str, bytes]] = []
        self.closing = asyncio.Event()
        self.base = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post("/echo", self.echo)
        app.router.add_post(RIE, self.rie)
        app.router.add_post("/status/{code}", self.status)
        app.router.add_post("/slow", self.slow)
        app.router.add_post("/big", self.big)
        app.router.add_post("/throttle-date", self.throttle_date)
        app.router.add_post("/moved/{code}", self.moved)
        app.router.add_route("*", "/new-home", self.new_home)
        app.router.add_post("/loop", self.loop)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        self.closing.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def echo(self, request: web.Request) -> web.Response:
        self.seen_headers.append(CIMultiDict(request.headers))
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            body = await request.read()
            delay = orjson.loads(body).get("delay", 0) if body.startswith(b"{") else 0
            if delay:
                await asyncio.sleep(delay)
            return web.Response(body=body, content_type="application/json")
        finally:
            self.inflight -= 1

    async def rie(self, request: web.Request) -> web.Response:
        event = orjson.loads(await request.read())
        mode = event.get("mode")
        if mode == "error":
            err = {"errorMessage": "boom", "errorType": "ValueError", "stackTrace": []}
            return web.json_response(err)
        if mode == "header":
            return web.json_response(
                {"errorMessage": "x", "errorType": "E"},
                headers={"X-Amz-Function-Error": "Handled"},
            )
        if mode == "timeout":
            return web.Response(text="Task timed out after 1.00 seconds")
        if mode == "proxy":
            return web.json_response({"statusCode": 500, "errorType": "x", "errorMessage": "y"})
        headers = {"X-Amz-Executed-Version": "7"}
        if request.headers.get("X-Amz-Log-Type") == "Tail":
            headers["X-Amz-Log-Result"] = base64.b64encode(b"START RequestId: r\n").decode()
        return web.json_response({"ok": event}, headers=headers)

    async def status(self, request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        headers = {"Retry-After": "7"} if code == 429 else {}
        return web.Response(status=code, text=f"status {code} body", headers=headers)

    async def throttle_date(self, request: web.Request) -> web.Response:
        return web.Response(status=429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})

    async def moved(self, request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        location = request.query.get("to", "/new-home")
        # (as servers do, the page repeats where it points)
        return web.Response(status=code, headers={"Location": location}, text=f"See {location}")

    async def loop(self, request: web.Request) -> web.Response:
        return web.Response(status=307, headers={"Location": "/loop"})

    async def new_home(self, request: web.Request) -> web.Response:
        self.moved_to.append((request.method, await request.read()))
        return web.json_response({"page": "new home"})

    async def slow(self, request: web.Request) -> web.Response:
        await self.closing.wait()
        return web.Response(text="late")

    async def big(self, request: web.Request) -> web.Response:
        return web.Response(body=b"x" * (MAX_SYNC_PAYLOAD + 10))


@pytest.fixture
async def server() -> AsyncIterator[FunctionServer]:
    srv = FunctionServer()
    await srv.start()
    yield srv
    await srv.stop()


Factory = Callable[..., HttpBackend]


@pytest.fixture
async def backend_factory() -> AsyncIterator[Factory]:
    made: list[HttpBackend] = []

    def make(url: str, **cfg: Any) -> HttpBackend:
        config = HttpFunctionConfig(url=url, **cfg)
        ctx = BackendContext("fn-http", SystemClock(), logging.getLogger("test.http"))
        backend = plugin.create(config, ctx)
        assert isinstance(backend, HttpBackend)
        made.append(backend)
        return backend

    yield make
    for b in made:
        await b.stop()


async def started(backend: HttpBackend) -> HttpBackend:
    await backend.start()
    return backend


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_plain_2xx_is_ok_with_the_body_as_result(
    server: FunctionServer, backend_factory: Factory
) -> None:
    backend = await started(backend_factory(server.base + "/echo"))
    result = await backend.invoke(b'{"a":1}', request_id="rid-1")
    assert result.outcome is Outcome.OK
    assert result.payload == b'{"a":1}'
    assert result.request_id == "rid-1"
    assert server.seen_headers[0]["X-Request-Id"] == "rid-1"
    assert "X-Amzn-Trace-Id" not in server.seen_headers[0]


async def test_the_invocations_trace_header_is_forwarded(
    server: FunctionServer, backend_factory: Factory
) -> None:
    trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    backend = await started(backend_factory(server.base + "/echo"))
    result = await backend.invoke(b"{}", request_id="rid-1", trace_id=trace)
    assert result.outcome is Outcome.OK
    assert server.seen_headers[0]["X-Amzn-Trace-Id"] == trace


async def test_headers_and_auth_token_are_sent(
    server: FunctionServer, backend_factory: Factory
) -> None:
    backend = await started(
        backend_factory(server.base + "/echo", headers={"X-Api-Key": "k1"}, auth_token=SECRET)
    )
    assert (await backend.invoke(b"{}")).outcome is Outcome.OK
    seen = server.seen_headers[0]
    assert seen["X-Api-Key"] == "k1"
    assert seen["Authorization"] == "Bearer " + SECRET
    assert seen["Content-Type"] == "application/json"


async def test_rie_result_with_version_and_log_tail(
    server: FunctionServer, backend_factory: Factory
) -> None:
    backend = await started(backend_factory(server.base + RIE))
    result = await backend.invoke(b'{"mode":"ok"}', want_log_tail=True)
    assert result.outcome is Outcome.OK
    assert orjson.loads(result.payload) == {"ok": {"mode": "ok"}}
    assert result.executed_version == "7"
    assert result.log_tail == "START RequestId: r\n"


async def test_rie_error_body_without_status_code_is_a_function_error(
    server: FunctionServer, backend_factory: Factory
) -> None:
    backend = await started(backend_factory(server.base + RIE))
    result = await backend.invoke(b'{"mode":"error"}')
    assert result.outcome is Outcome.FUNCTION_ERROR
    assert result.function_error == "Unhandled"
    assert orjson.loads(result.payload)["errorType"] == "ValueError"


async def test_rie_error_shaped_body_with_status_code_is_a_result(
    server: FunctionServer, backend_factory: Factory
) -> None:
    backend = await started(backend_factory(server.base + RIE))
    result = await backend.invoke(b'{"mode":"proxy"}')
    assert result.outcome is Outcome.OK


async def test_function_error_header_is_a_function_error(
    server: FunctionServer, backend_factory: Factory
) -> None:
    backend = await started(backend_factory(server.base + RIE))
    result = await backend.invoke(b'{"mode":"header"}')
    assert result.outcome is Outcome.FUNCTION_ERROR
    assert result.function_error == "Handled"


async def test_rie_plain_text_timeout_is_a_timeout(
    server: FunctionServer, backend_factory: Factory
) -> None:
    backend = await started(backend_factory(server.base + RIE, timeout_s=1))
    result = await backend.invoke(b'{"mode":"timeout"}', request_id="rid-t")
    assert result.outcome is Outcome.TIMEOUT
    assert orjson.loads(result.payload)["errorMessage"].endswith(
        "rid-t Task timed out after 1.00 seconds"
    )


async def test_plain_endpoint_error_shaped_body_is_a_result(
    server: FunctionServer, backend_factory: Factory
) -> None:
    backend = await started(backend_factory(server.base + "/echo"))
    body = b'{"errorType":"E","errorMessage":"m"}'
    result = await backend.invoke(body)
    assert result.outcome is Outcome.OK and result.payload == body


async def test_429_is_throttled_honouring_retry_after(
    server: FunctionServer, backend_factory: Factory
) -> None:
    backend = await started(backend_factory(server.base + "/status/429"))
    result = await backend.invoke(b"{}")
    assert result.outcome is Outcome.THROTTLED
    assert result.retry_after_s == 7.0
    assert not result.failed


async def test_429_with_a_past_http_date_retries_now(
    server: FunctionServer, backend_factory: Factory
) -> None:
    backend = await started(backend_factory(server.base + "/throttle-date"))
    result = await backend.invoke(b"{}")
    assert result.outcome is Outcome.THROTTLED and result.retry_after_s == 0.0


@pytest.mark.parametrize("code", [500, 502, 503])
async def test_5xx_is_an_invoke_error_not_a_function_error(
    server: FunctionServer, backend_factory: Factory, code: int
) -> None:
    backend = await started(backend_factory(f"{server.base}/status/{code}"))
    result = await backend.invoke(b"{}")
    assert result.outcome is Outcome.INVOKE_ERROR
    assert not result.failed


@pytest.mark.parametrize("code", [400, 403, 404, 422])
async def test_other_4xx_is_a_function_error_describing_the_status(
    server: FunctionServer, backend_factory: Factory, code: int
) -> None:
    backend = await started(backend_factory(f"{server.base}/status/{code}"))
    result = await backend.invoke(b"{}")
    assert result.outcome is Outcome.FUNCTION_ERROR
    error = orjson.loads(result.payload)
    assert error["errorType"] == "Function.HttpError"
    assert error["statusCode"] == code
    assert str(code) in error["errorMessage"]
    assert error["body"] == f"status {code} body"


@pytest.mark.parametrize("code", [301, 302, 303])
async def test_a_redirect_is_a_function_error_naming_it_not_followed(
    server: FunctionServer, backend_factory: Factory, code: int
) -> None:
    # Before, the client followed it: a 301/302/303 came back as a GET without the event
    # (an http -> https redirect in front of the function, say), whose 200 was taken for
    # the function's success, so the record was acked though no function ever saw it.
    backend = await started(backend_factory(f"{server.base}/moved/{code}"))
    result = await backend.invoke(b'{"order": 42}')
    assert result.outcome is Outcome.FUNCTION_ERROR and result.function_error == "Unhandled"
    error = orjson.loads(result.payload)
    assert error["errorType"] == "Function.HttpError" and error["statusCode"] == code
    assert error["errorMessage"] == (
        f"The function's endpoint answered HTTP {code}, a redirect to {server.base}/new-home "
        "(not followed: set url to where it points)"
    )
    assert server.moved_to == []


async def test_a_redirect_named_in_an_error_is_shown_without_its_query_or_credentials(
    server: FunctionServer, backend_factory: Factory
) -> None:
    # A Location may carry a token (a signed URL's query, credentials in the authority):
    # the error reaches logs and on-failure destinations.
    secret = "http://user:pw-s3cret@localhost:1/elsewhere?X-Amz-Signature=tok-s3cret"
    backend = await started(backend_factory(f"{server.base}/moved/301?to={quote(secret)}"))
    result = await backend.invoke(b"{}")
    error = orjson.loads(result.payload)
    assert "a redirect to http://localhost:1/elsewhere (not followed" in error["errorMessage"]
    assert error["body"] == "", "the redirect's page repeats the Location"
    assert b"s3cret" not in result.payload


async def test_a_redirect_with_an_empty_location_names_no_url(
    server: FunctionServer, backend_factory: Factory
) -> None:
    # urljoin(url, "") is the url itself: the error said the endpoint pointed to itself.
    backend = await started(backend_factory(f"{server.base}/moved/302?to="))
    result = await backend.invoke(b"{}")
    error = orjson.loads(result.payload)
    assert error["errorType"] == "Function.HttpError" and error["statusCode"] == 302
    assert error["errorMessage"] == "The function's endpoint answered HTTP 302"


async def test_a_relative_redirect_after_a_followed_one_is_shown_from_where_it_was_answered(
    server: FunctionServer, backend_factory: Factory
) -> None:
    # The 307 is followed to /moved/302, whose answer points to "?next=1": that is
    # /moved/302?next=1, not the configured /moved/307 (it was resolved against url).
    then = f"/moved/302?to={quote('?next=1')}"
    backend = await started(backend_factory(f"{server.base}/moved/307?to={quote(then)}"))
    result = await backend.invoke(b"{}")
    assert orjson.loads(result.payload)["errorMessage"] == (
        f"The function's endpoint answered HTTP 302, a redirect to {server.base}/moved/302 "
        "(not followed: set url to where it points)"
    )
    assert server.moved_to == []


@pytest.mark.parametrize(
    ("location", "shown"),
    [
        ("http://[::1]:8080/elsewhere?X-Amz-Signature=s3cret", "http://[::1]:8080/elsewhere"),
        ("http://[::1/elsewhere?X-Amz-Signature=s3cret", "(a malformed URL)"),
        ("http://localhost:99999/elsewhere?X-Amz-Signature=s3cret", "(a malformed URL)"),
        ("mailto:ops@example.com?subject=s3cret", "mailto:ops@example.com"),
    ],
)
async def test_a_redirect_to_an_ipv6_or_malformed_url_is_a_function_error_showing_it(
    server: FunctionServer, backend_factory: Factory, location: str, shown: str
) -> None:
    # An IPv6 host lost its brackets; a Location that urljoin cannot split (a lone "[")
    # raised ValueError out of invoke instead of answering Function.HttpError.
    backend = await started(backend_factory(f"{server.base}/moved/302?to={quote(location)}"))
    result = await backend.invoke(b"{}")
    error = orjson.loads(result.payload)
    assert error["errorType"] == "Function.HttpError" and error["statusCode"] == 302
    assert error["errorMessage"] == (
        f"The function's endpoint answered HTTP 302, a redirect to {shown} "
        "(not followed: set url to where it points)"
    )


@pytest.mark.parametrize("code", [307, 308])
async def test_a_redirect_that_keeps_the_post_is_followed_on_the_same_host(
    server: FunctionServer, backend_factory: Factory, code: int
) -> None:
    # 307 and 308 re-send the POST with its body (ingress-nginx's and Caddy's http -> https
    # redirects are 308s): such endpoints got every event before 856bd93, which made them
    # function errors, every event ending in on_failure (or discarded without one).
    backend = await started(backend_factory(f"{server.base}/moved/{code}"))
    result = await backend.invoke(b'{"order": 42}')
    assert result.outcome is Outcome.OK, result.payload
    assert orjson.loads(result.payload) == {"page": "new home"}
    assert server.moved_to == [("POST", b'{"order": 42}')]


async def test_a_redirect_to_another_host_or_in_a_loop_is_not_followed(
    server: FunctionServer, backend_factory: Factory
) -> None:
    # Another host would get the event and the endpoint's headers (its bearer token): the
    # url is to be set there.
    elsewhere = server.base.replace("127.0.0.1", "localhost") + "/new-home"
    backend = await started(backend_factory(f"{server.base}/moved/308?to={elsewhere}"))
    result = await backend.invoke(b'{"order": 42}')
    assert result.outcome is Outcome.FUNCTION_ERROR
    error = orjson.loads(result.payload)
    assert error["statusCode"] == 308 and elsewhere in error["errorMessage"]
    assert server.moved_to == []
    loop = await started(backend_factory(f"{server.base}/loop"))
    result = await loop.invoke(b'{"order": 42}')
    assert result.outcome is Outcome.FUNCTION_ERROR
    assert orjson.loads(result.payload)["statusCode"] == 307


async def test_connection_refused_is_an_invoke_error(backend_factory: Factory) -> None:
    backend = await started(backend_factory(f"http://127.0.0.1:{free_port()}/fn"))
    result = await backend.invoke(b"{}")
    assert result.outcome is Outcome.INVOKE_ERROR


async def test_connection_reset_is_an_invoke_error(backend_factory: Factory) -> None:
    async def slam(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(10)
        writer.close()

    srv = await asyncio.start_server(slam, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        backend = await started(backend_factory(f"http://127.0.0.1:{port}/fn"))
        result = await backend.invoke(b"{}")
        assert result.outcome is Outcome.INVOKE_ERROR
    finally:
        srv.close()
        await srv.wait_closed()


async def test_timeout_gives_lambdas_task_timed_out_message(
    server: FunctionServer, backend_factory: Factory
) -> None:
    backend = await started(backend_factory(server.base + "/slow", timeout_s=0.3))
    result = await backend.invoke(b"{}", request_id="rid-slow")
    assert result.outcome is Outcome.TIMEOUT
    assert result.failed and result.function_error == "Unhandled"
    message = orjson.loads(result.payload)["errorMessage"]
    assert message.endswith("rid-slow Task timed out after 0.30 seconds")


async def test_response_over_6_mb_is_a_function_error(
    server: FunctionServer, backend_factory: Factory
) -> None:
    backend = await started(backend_factory(server.base + "/big", timeout_s=30))
    result = await backend.invoke(b"{}")
    assert result.outcome is Outcome.FUNCTION_ERROR
    assert orjson.loads(result.payload)["errorType"] == "Function.ResponseSizeTooLarge"


async def test_request_over_6_mb_fails_before_sending(
    server: FunctionServer, backend_factory: Factory
) -> None:
    backend = await started(backend_factory(server.base + "/echo"))
    result = await backend.invoke(b'"' + b"x" * MAX_SYNC_PAYLOAD + b'"')
    assert result.outcome is Outcome.FUNCTION_ERROR
    assert orjson.loads(result.payload)["errorType"] == "RequestEntityTooLargeException"
    assert server.seen_headers == []


async def test_concurrent_invokes_run_in_parallel_up_to_reserved_concurrency(
    server: FunctionServer, backend_factory: Factory
) -> None:
    backend = await started(
        backend_factory(server.base + "/echo", reserved_concurrency=3, timeout_s=10)
    )
    results = await asyncio.gather(*(backend.invoke(b'{"delay":0.2}') for _ in range(9)))
    assert all(r.outcome is Outcome.OK for r in results)
    assert server.max_inflight == 3


async def test_concurrent_invokes_without_limit_all_overlap(
    server: FunctionServer, backend_factory: Factory
) -> None:
    backend = await started(backend_factory(server.base + "/echo", timeout_s=10))
    gate = 8
    results = await asyncio.gather(*(backend.invoke(b'{"delay":0.5}') for _ in range(gate)))
    assert all(r.outcome is Outcome.OK for r in results)
    assert server.max_inflight == gate


async def test_reserved_concurrency_zero_throttles_without_calling(
    server: FunctionServer, backend_factory: Factory
) -> None:
    backend = await started(backend_factory(server.base + "/echo", reserved_concurrency=0))
    result = await backend.invoke(b"{}")
    assert result.outcome is Outcome.THROTTLED
    assert server.seen_headers == []


async def test_secrets_never_appear_in_logs_or_results(
    backend_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"http://127.0.0.1:{free_port()}/fn?token={SECRET}"
    backend = await started(backend_factory(url, headers={"X-Api-Key": SECRET}, auth_token=SECRET))
    result = await backend.invoke(b"{}")
    assert result.outcome is Outcome.INVOKE_ERROR
    assert caplog.records, "the failure is logged"
    text = caplog.text + " ".join(str(r.__dict__) for r in caplog.records) + repr(result)
    assert SECRET not in text
    config_text = repr(backend.config.headers) + repr(backend.config.auth_token)
    config_text += str(backend.config.model_dump(exclude={"url"}))
    assert SECRET not in config_text


async def test_stop_closes_the_session_and_later_invokes_are_invoke_errors(
    server: FunctionServer, backend_factory: Factory
) -> None:
    backend = await started(backend_factory(server.base + "/echo"))
    await backend.stop()
    result = await backend.invoke(b"{}")
    assert result.outcome is Outcome.INVOKE_ERROR
