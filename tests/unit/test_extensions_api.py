"""The Extensions and Telemetry APIs of one execution environment, over loopback HTTP: the
answers the AWS Runtime Interface Emulator gives, and the phases extensions take part in."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from triggerd.functions.extensions import ExtensionsAPI
from triggerd.functions.runtime_api import PendingInvocation, ReplyKind, RuntimeEndpoint

EXT = "/2020-01-01/extension"
NEXT = "/2018-06-01/runtime/invocation/next"
ARN = "arn:aws:lambda:us-east-1:123456789012:function:f1"


@pytest.fixture
async def endpoint() -> AsyncIterator[RuntimeEndpoint]:
    api = ExtensionsAPI(
        function_name="f1", handler="app.handler", account_id="123456789012", external=["ext-a"]
    )
    ep = RuntimeEndpoint(extensions=api)
    await ep.start()
    yield ep
    await ep.close()


class Client:
    def __init__(self, session: aiohttp.ClientSession, address: str) -> None:
        self.session = session
        self.base = f"http://{address}"

    async def call(
        self, method: str, path: str, body: Any = None, **headers: str
    ) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
        data = None if body is None else orjson.dumps(body)
        hdrs = {k.replace("_", "-"): v for k, v in headers.items()}
        async with self.session.request(method, self.base + path, data=data, headers=hdrs) as r:
            raw = await r.read()
            try:
                parsed = orjson.loads(raw)
            except orjson.JSONDecodeError:
                parsed = raw
            return r.status, parsed, r.headers

    async def register(self, name: str, events: list[str]) -> str:
        status, _, headers = await self.call(
            "POST", EXT + "/register", {"events": events}, Lambda_Extension_Name=name
        )
        assert status == 200
        return str(headers["Lambda-Extension-Identifier"])  # type: ignore[index]

    async def next_event(self, ext_id: str) -> tuple[int, Any, Any]:
        return await self.call("GET", EXT + "/event/next", Lambda_Extension_Identifier=ext_id)


@pytest.fixture
async def client(endpoint: RuntimeEndpoint) -> AsyncIterator[Client]:
    async with aiohttp.ClientSession() as session:
        yield Client(session, endpoint.address)


def invocation(request_id: str = "req-1") -> PendingInvocation:
    return PendingInvocation(
        request_id=request_id,
        payload=b"{}",
        deadline_ms=1_700_000_003_000,
        function_arn=ARN,
        trace_id="Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=1",
    )


async def test_register_answers_function_metadata_and_an_identifier(client) -> None:
    status, body, headers = await client.call(
        "POST",
        EXT + "/register",
        {"events": ["INVOKE", "SHUTDOWN"]},
        Lambda_Extension_Name="ext-a",
        Lambda_Extension_Accept_Feature="accountId",
    )
    assert status == 200
    uuid.UUID(headers["Lambda-Extension-Identifier"])
    assert body == {
        "accountId": "123456789012",
        "functionName": "f1",
        "functionVersion": "$LATEST",
        "handler": "app.handler",
    }


@pytest.mark.parametrize(
    ("name", "body", "error_type"),
    [
        ("", {"events": ["INVOKE"]}, "Extension.InvalidExtensionName"),
        ("ext-a", {"events": ["BOOM"]}, "Extension.InvalidEventType"),
        ("internal", {"events": ["SHUTDOWN"]}, "Extension.InvalidEventType"),
        ("ext-a", {"configurationKeys": ["k"]}, "InvalidRequestFormat"),
    ],
)
async def test_bad_registrations_are_403_with_the_rie_error_type(
    client, name, body, error_type
) -> None:
    status, answer, _ = await client.call(
        "POST", EXT + "/register", body, Lambda_Extension_Name=name
    )
    assert status == 403 and answer["errorType"] == error_type


async def test_registering_twice_is_an_invalid_state(client) -> None:
    await client.register("ext-a", ["INVOKE"])
    status, answer, _ = await client.call(
        "POST", EXT + "/register", {"events": []}, Lambda_Extension_Name="ext-a"
    )
    assert status == 403 and answer["errorType"] == "Extension.InvalidExtensionState"


@pytest.mark.parametrize(
    ("identifier", "error_type"),
    [
        (None, "Extension.MissingExtensionIdentifier"),
        ("not-a-uuid", "Extension.InvalidExtensionIdentifier"),
        (str(uuid.uuid4()), "Extension.UnknownExtensionIdentifier"),
    ],
)
async def test_event_next_checks_the_identifier(client, identifier, error_type) -> None:
    headers = {} if identifier is None else {"Lambda_Extension_Identifier": identifier}
    status, answer, _ = await client.call("GET", EXT + "/event/next", **headers)
    assert status == 403 and answer["errorType"] == error_type


async def test_init_waits_for_the_extensions_and_invoke_reaches_them(client, endpoint) -> None:
    ext_id = await client.register("ext-a", ["INVOKE", "SHUTDOWN"])
    runtime_poll = asyncio.ensure_future(client.call("GET", NEXT))
    await asyncio.sleep(0.05)
    assert not endpoint.ready.done()  # the extension has not asked for an event yet
    ext_poll = asyncio.ensure_future(client.next_event(ext_id))
    assert await asyncio.wait_for(asyncio.shield(endpoint.ready), 5) is None
    inv = invocation()
    endpoint.submit(inv)
    status, event, headers = await asyncio.wait_for(ext_poll, 5)
    assert status == 200 and headers["Content-Type"] == "application/json"
    uuid.UUID(headers["Lambda-Extension-Event-Identifier"])
    assert event == {
        "eventType": "INVOKE",
        "deadlineMs": 1_700_000_003_000,
        "requestId": "req-1",
        "invokedFunctionArn": ARN,
        "tracing": {"type": "X-Amzn-Trace-Id", "value": inv.trace_id},
    }
    assert (await asyncio.wait_for(runtime_poll, 5))[0] == 200


async def test_next_invocation_waits_until_every_extension_polls_again(client, endpoint) -> None:
    ext_id = await client.register("ext-a", ["INVOKE"])
    ext_poll = asyncio.ensure_future(client.next_event(ext_id))
    first = invocation("req-1")
    endpoint.submit(first)
    assert (await client.call("GET", NEXT))[0] == 200
    await asyncio.wait_for(ext_poll, 5)
    await client.call("POST", "/2018-06-01/runtime/invocation/req-1/response", 1)
    assert first.result.result().kind is ReplyKind.RESPONSE
    endpoint.submit(invocation("req-2"))
    runtime_poll = asyncio.ensure_future(client.call("GET", NEXT))
    await asyncio.sleep(0.05)
    assert not runtime_poll.done()  # the extension is still busy with req-1
    second_event = asyncio.ensure_future(client.next_event(ext_id))
    _, _, headers = await asyncio.wait_for(runtime_poll, 5)
    assert headers["Lambda-Runtime-Aws-Request-Id"] == "req-2"
    assert (await asyncio.wait_for(second_event, 5))[1]["requestId"] == "req-2"


async def test_extension_init_error_fails_the_init(client, endpoint) -> None:
    ext_id = await client.register("ext-a", ["INVOKE"])
    status, answer, _ = await client.call(
        "POST", EXT + "/init/error", {}, Lambda_Extension_Identifier=ext_id
    )
    assert status == 403 and answer["errorType"] == "Extension.MissingHeader"
    status, answer, _ = await client.call(
        "POST",
        EXT + "/init/error",
        {},
        Lambda_Extension_Identifier=ext_id,
        Lambda_Extension_Function_Error_Type="Extension.ConfigInvalid",
    )
    assert (status, answer) == (202, {"status": "OK"})
    reply = endpoint.ready.result()
    assert reply.kind is ReplyKind.INIT_ERROR and reply.error_type == "Extension.InitError"


async def test_registration_of_internal_extensions_closes_after_init(client, endpoint) -> None:
    ext_id = await client.register("ext-a", ["INVOKE"])
    polls = [
        asyncio.ensure_future(client.next_event(ext_id)),
        asyncio.ensure_future(client.call("GET", NEXT)),
    ]
    await asyncio.wait_for(asyncio.shield(endpoint.ready), 5)
    assert not any(p.done() for p in polls)
    status, answer, _ = await client.call(
        "POST", EXT + "/register", {"events": ["INVOKE"]}, Lambda_Extension_Name="late"
    )
    assert status == 403 and answer["errorType"] == "Extension.RegistrationClosed"


@pytest.mark.parametrize(
    "body",
    [
        {"types": ["platform"], "destination": {"protocol": "HTTP", "URI": "http://x.com:80"}},
        {"types": ["nope"], "destination": {"protocol": "HTTP", "URI": "http://sandbox:1"}},
        {"types": ["platform"], "destination": {"protocol": "TCP", "URI": "http://s:1"}},
        {
            "types": ["platform"],
            "buffering": {"timeoutMs": 5},
            "destination": {"protocol": "HTTP", "URI": "http://sandbox.localdomain:9"},
        },
    ],
)
async def test_invalid_telemetry_subscriptions_are_400(client, body) -> None:
    ext_id = await client.register("ext-a", ["INVOKE"])
    status, answer, _ = await client.call(
        "PUT", "/2022-07-01/telemetry", body, Lambda_Extension_Identifier=ext_id
    )
    assert status == 400 and answer["errorType"] == "ValidationError"


async def test_telemetry_reaches_the_listener_in_aws_shape(client, endpoint) -> None:
    received: list[Any] = []
    got = asyncio.Event()

    async def listener(request: web.Request) -> web.Response:
        received.extend(await request.json())
        got.set()
        return web.Response()

    app = web.Application()
    app.router.add_post("/", listener)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        ext_id = await client.register("ext-a", ["INVOKE"])
        status, body, _ = await client.call(
            "PUT",
            "/2022-07-01/telemetry",
            {
                "schemaVersion": "2022-12-13",
                "types": ["platform"],
                "buffering": {"timeoutMs": 25},
                "destination": {"protocol": "HTTP", "URI": f"http://sandbox.localdomain:{port}"},
            },
            Lambda_Extension_Identifier=ext_id,
        )
        assert (status, body) == (200, b"OK")
        polls = [
            asyncio.ensure_future(client.next_event(ext_id)),
            asyncio.ensure_future(client.call("GET", NEXT)),
        ]
        await asyncio.wait_for(asyncio.shield(endpoint.ready), 5)
        assert not any(p.done() for p in polls)
        while not any(r["type"] == "platform.initReport" for r in received):
            got.clear()
            await asyncio.wait_for(got.wait(), 5)
    finally:
        await runner.cleanup()
    types = [r["type"] for r in received]
    assert types.index("platform.initStart") < types.index("platform.initReport")
    assert types.count("platform.telemetrySubscription") == 1, types
    assert "platform.extension" in types
    # The init events before the subscription come first, in the order they happened.
    assert types.index("platform.initStart") < types.index("platform.telemetrySubscription")
    report = next(r for r in received if r["type"] == "platform.initReport")
    assert report["record"]["status"] == "success"
    assert report["record"]["phase"] == "init"
    assert report["record"]["metrics"]["durationMs"] >= 0
