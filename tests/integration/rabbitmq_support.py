"""Helpers for the rabbitmq tests: a publishing client on the machine's broker that deletes the
queues it made, and a poll trigger (real source, real pipeline, scripted function) built from
a config dict, run until a condition holds."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection

import triggerd_rabbitmq as rmq
from tests.fakes import FakeBackend, connector_registry
from tests.integration.trigger_harness import Harness, trigger_harness
from triggerd.config.plugins import Registry
from triggerd.delivery.destinations import file_plugin


def unique(prefix: str = "rmq") -> str:
    return f"triggerd-test-{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass
class Broker:
    """A test-side client: declares queues (deleted afterwards), publishes with confirms."""

    conn: AbstractConnection
    channel: AbstractChannel
    queues: list[str] = field(default_factory=list)
    exchanges: list[str] = field(default_factory=list)

    async def queue(
        self, prefix: str = "q", *, arguments: dict[str, Any] | None = None, durable: bool = True
    ) -> str:
        name = unique(prefix)
        await self.channel.declare_queue(name, durable=durable, arguments=arguments)
        self.queues.append(name)
        return name

    def owns(self, name: str) -> str:
        """Delete `name` afterwards too (a queue someone else declared)."""
        self.queues.append(name)
        return name

    async def exchange(self, prefix: str = "x", kind: str = "fanout") -> str:
        name = unique(prefix)
        await self.channel.declare_exchange(name, kind, durable=False)
        self.exchanges.append(name)
        return name

    async def publish(self, queue: str, body: bytes, **props: Any) -> None:
        await self.channel.default_exchange.publish(
            aio_pika.Message(body, **props), routing_key=queue
        )

    async def publish_bare(self, queue: str, body: bytes) -> None:
        """Publish with as few properties as aiormq allows (it always adds a message_id)."""
        from pamqp.commands import Basic

        raw = await self.channel.get_underlay_channel()
        await raw.basic_publish(body, routing_key=queue, properties=Basic.Properties())

    async def drain(self, queue: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
        """Take (and ack) every ready message of `queue`."""
        q = await self.channel.get_queue(queue, ensure=False)
        out: list[aio_pika.abc.AbstractIncomingMessage] = []
        while True:
            msg = await q.get(no_ack=False, fail=False)
            if msg is None:
                return out
            await msg.ack()
            out.append(msg)

    async def wait_drain(
        self, queue: str, count: int, timeout: float = 15
    ) -> list[aio_pika.abc.AbstractIncomingMessage]:
        got: list[aio_pika.abc.AbstractIncomingMessage] = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            got += await self.drain(queue)
            if len(got) < count:
                await asyncio.sleep(0.05)
        return got


@contextlib.asynccontextmanager
async def broker(url: str) -> AsyncIterator[Broker]:
    conn = await aio_pika.connect(url)
    channel = await conn.channel(publisher_confirms=True)
    b = Broker(conn, channel)
    try:
        yield b
    finally:
        cleanup = await conn.channel()
        for name in b.queues:
            with contextlib.suppress(Exception):
                await cleanup.queue_delete(name)
        for name in b.exchanges:
            with contextlib.suppress(Exception):
                await cleanup.exchange_delete(name)
        await conn.close()


def registry() -> Registry:
    return connector_registry(
        {"rabbitmq": rmq.plugin}, {"rabbitmq": rmq.destination_plugin, "file": file_plugin}
    )


def harness(
    tmp_path: Path, source: dict[str, Any], backend: FakeBackend, **options: Any
) -> contextlib.AbstractAsyncContextManager[Harness]:
    """A rabbitmq source's trigger (tests.integration.trigger_harness)."""
    return trigger_harness(tmp_path, registry(), {"type": "rabbitmq", **source}, backend, **options)


def close_connection(name: str) -> int:
    """Close, from the broker's side, every connection whose client-provided name is `name`;
    returns how many."""
    listing = subprocess.run(
        ["rabbitmqctl", "-q", "list_connections", "pid", "client_properties"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    pids = [line.split("\t", 1)[0] for line in listing.splitlines() if f'"{name}"' in line]
    for pid in pids:
        subprocess.run(
            ["rabbitmqctl", "-q", "close_connection", pid, "test: connection drop"],
            capture_output=True,
            timeout=60,
            check=True,
        )
    return len(pids)


def queue_counts(name: str) -> tuple[int, int]:
    """(ready, unacknowledged) as the broker reports them."""
    out = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "name", "messages_ready", "messages_unacknowledged"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    for line in out.splitlines():
        parts = line.split("\t")
        if parts[0] == name:
            return int(parts[1]), int(parts[2])
    raise AssertionError(f"queue {name} not listed")


def bodies(event: dict[str, Any]) -> list[bytes]:
    import base64

    return [
        base64.b64decode(m["data"]) for msgs in event["rmqMessagesByQueue"].values() for m in msgs
    ]


def poison(event: dict[str, Any]) -> Any:
    """A FakeBackend responder: fails any batch that carries a message with "poison" in it."""
    if any(b"poison" in body for body in bodies(event)):
        raise ValueError("poison message")
    return None
