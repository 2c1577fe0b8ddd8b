"""Helpers for the sqs tests: an aiobotocore client on moto, queues with unique names, and the
daemon run in-process on a config built from a dict (a registry made by hand, so only the
plugins these tests need are loaded)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from aiobotocore.session import get_session

import triggerd_sqs as sqs_plugins
from triggerd.config.load import validate_data
from triggerd.config.plugins import Registry
from triggerd.daemon.app import Daemon
from triggerd.delivery.destinations import file_plugin
from triggerd.functions.backends.local import plugin as local_plugin

FUNCTION_DIR = Path(__file__).parent / "functions" / "sqs_recorder"


@contextlib.asynccontextmanager
async def sqs_client(endpoint: str, region: str = "us-east-1") -> AsyncIterator[Any]:
    session = get_session()
    async with session.create_client(
        "sqs",
        region_name=region,
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ) as client:
        yield client


async def make_queue(
    client: Any, prefix: str = "q", *, fifo: bool = False, **attributes: str
) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:12]}" + (".fifo" if fifo else "")
    attrs = dict(attributes)
    if fifo:
        attrs.setdefault("FifoQueue", "true")
        attrs.setdefault("ContentBasedDeduplication", "true")
    response = await client.create_queue(QueueName=name, Attributes=attrs)
    return str(response["QueueUrl"])


async def queue_arn(client: Any, url: str) -> str:
    attrs = await client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return str(attrs["Attributes"]["QueueArn"])


async def depth(client: Any, url: str) -> int:
    """Visible + in-flight messages."""
    attrs = await client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
    a = attrs["Attributes"]
    return int(a["ApproximateNumberOfMessages"]) + int(a["ApproximateNumberOfMessagesNotVisible"])


async def send_json(client: Any, url: str, bodies: list[dict[str, Any]], **extra: Any) -> None:
    for body in bodies:
        await client.send_message(QueueUrl=url, MessageBody=json.dumps(body), **extra)


async def drain(client: Any, url: str, wait_s: int = 1) -> list[dict[str, Any]]:
    """Receive (and delete) everything visible."""
    out: list[dict[str, Any]] = []
    while True:
        r = await client.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=wait_s, AttributeNames=["All"]
        )
        messages = r.get("Messages") or []
        if not messages:
            return out
        out += messages
        await client.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
            ],
        )


def registry() -> Registry:
    reg = Registry()
    reg.register("source", "sqs", sqs_plugins.plugin)
    reg.register("destination", "sqs", sqs_plugins.destination_plugin)
    reg.register("destination", "file", file_plugin)
    reg.register("backend", "local", local_plugin)
    return reg


def calls(record_file: Path) -> list[dict[str, Any]]:
    if not record_file.exists():
        return []
    lines = record_file.read_text().splitlines()
    return [json.loads(line) for line in lines if line.endswith("}")]


def delivered(record_file: Path) -> list[dict[str, Any]]:
    """Every record the function got, in order."""
    return [r for c in calls(record_file) for r in c["event"]["Records"]]


async def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def wait_until_async(cond: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def running_daemon(
    tmp: Path,
    source: dict[str, Any],
    *,
    env: dict[str, str] | None = None,
    timeout_s: float = 10,
    **trigger: Any,
) -> AsyncIterator[Daemon]:
    """The daemon with one `recorder` function (RECORD_FILE = tmp/calls.jsonl) and one sqs
    trigger; stopped (drained) on exit."""
    data = {
        "daemon": {
            "state": "sqlite:///state.db",
            "listen": None,
            "control_listen": None,
            "shutdown_timeout_s": 5,
        },
        "functions": {
            "recorder": {
                "handler": "app.handler",
                "code": str(FUNCTION_DIR),
                "timeout_s": timeout_s,
                "environment": {"RECORD_FILE": str(tmp / "calls.jsonl"), **(env or {})},
            }
        },
        "triggers": [{"name": "q", "function": "recorder", "source": source, **trigger}],
    }
    config = validate_data(data, registry(), base_dir=tmp)
    async with Daemon(config, registry()).running() as daemon:
        yield daemon


@contextlib.asynccontextmanager
async def error_page(status: int = 503) -> AsyncIterator[str]:
    """An HTTP server on a free loopback port answering every request with `status` and an
    HTML page, as a proxy or load balancer in front of SQS does when it has no backend (503),
    or a web server that is not SQS at all (200)."""
    from aiohttp import web

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(
            status=status,
            text=f"<html><body><h1>{status}</h1><p>a web page, not SQS</p></body></html>",
            content_type="text/html",
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
