"""Helpers for the kinesis tests: an aiobotocore client on moto, streams with unique names,
and a registry with the kinesis source and the file destination."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiobotocore.session import get_session

import triggerd_kinesis
from triggerd.config.plugins import Registry
from triggerd.delivery.destinations import file_plugin


@contextlib.asynccontextmanager
async def kinesis_client(endpoint: str) -> AsyncIterator[Any]:
    async with get_session().create_client(
        "kinesis",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ) as client:
        yield client


async def make_stream(client: Any, shards: int = 1, name: str | None = None) -> str:
    """A new active stream (a unique name unless `name` is given); its name."""
    name = name or f"s-{uuid.uuid4().hex[:12]}"
    await client.create_stream(StreamName=name, ShardCount=shards)
    for _ in range(100):
        desc = await client.describe_stream_summary(StreamName=name)
        if desc["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
            break
        await asyncio.sleep(0.05)
    return name


async def put_json(client: Any, stream: str, items: list[tuple[str, Any]]) -> list[str]:
    """Put (partition key, JSON value) pairs one by one, in order; their sequence numbers."""
    out = []
    for key, value in items:
        r = await client.put_record(
            StreamName=stream, Data=json.dumps(value).encode(), PartitionKey=key
        )
        out.append(str(r["SequenceNumber"]))
    return out


def registry() -> Registry:
    reg = Registry()
    reg.register("source", "kinesis", triggerd_kinesis.plugin)
    reg.register("destination", "file", file_plugin)
    return reg


def source(endpoint: str, stream: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "kinesis",
        "stream": stream,
        "endpoint_url": endpoint,
        "region": "us-east-1",
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
        "poll_interval_s": 0.05,
        **extra,
    }


def data_of(event: dict[str, Any]) -> list[Any]:
    import base64

    return [json.loads(base64.b64decode(r["kinesis"]["data"])) for r in event["Records"]]


def failure_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
