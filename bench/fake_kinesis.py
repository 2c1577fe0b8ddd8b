"""A small, fast, in-memory Kinesis-compatible endpoint for the kinesis benchmark only.

moto_server costs 13-25 ms per call, which hides what triggerd itself costs; this endpoint
answers in well under a millisecond so the benchmark can compare triggerd with a bare
aiobotocore get_records loop where the client side dominates. It runs in its own process
(`python -m bench.fake_kinesis`, started by `fake_kinesis_server()`), so its CPU never shares
the measured event loop or its GIL.

It speaks Kinesis's JSON 1.1 protocol as aiobotocore sends it (POST `/`, `X-Amz-Target:
Kinesis_20131202.<Operation>`) and implements only what the benchmark's clients call:
CreateStream, DescribeStreamSummary, ListShards, PutRecords, GetShardIterator (TRIM_HORIZON,
LATEST, AT/AFTER_SEQUENCE_NUMBER) and GetRecords. Shards are lists; a record goes to shard
`md5(partition key) mod shards`; iterators are `<stream>|<shard>|<index>` and never expire.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bench import BENCH_DIR, BenchError
from bench.harness import stop_process

ACCOUNT = "123456789012"
REGION = "us-east-1"
JSON_TYPE = "application/x-amz-json-1.1"

if TYPE_CHECKING:
    from aiohttp import web

Params = dict[str, Any]


class KinesisError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(slots=True)
class Stream:
    name: str
    #: Per shard: (sequence number, partition key, base64 data, arrival epoch seconds).
    shards: list[list[tuple[str, str, str, float]]] = field(default_factory=list)
    next_seq: int = 49_000_000_000_000_000_000

    @property
    def arn(self) -> str:
        return f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{self.name}"


def _shard_id(i: int) -> str:
    return f"shardId-{i:012d}"


class FakeKinesis:
    def __init__(self) -> None:
        self.streams: dict[str, Stream] = {}

    def stream(self, p: Params) -> Stream:
        name = p.get("StreamName") or str(p.get("StreamARN", "")).rpartition("/")[2]
        try:
            return self.streams[name]
        except KeyError:
            raise KinesisError("ResourceNotFoundException", f"no stream {name}") from None

    async def create_stream(self, p: Params) -> Params:
        name = p["StreamName"]
        self.streams[name] = Stream(name, [[] for _ in range(int(p.get("ShardCount", 1)))])
        return {}

    async def describe_stream_summary(self, p: Params) -> Params:
        s = self.stream(p)
        return {
            "StreamDescriptionSummary": {
                "StreamName": s.name,
                "StreamARN": s.arn,
                "StreamStatus": "ACTIVE",
                "OpenShardCount": len(s.shards),
            }
        }

    async def list_shards(self, p: Params) -> Params:
        s = self.stream(p)
        return {
            "Shards": [
                {
                    "ShardId": _shard_id(i),
                    "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": "1"},
                    "SequenceNumberRange": {"StartingSequenceNumber": "0"},
                }
                for i in range(len(s.shards))
            ]
        }

    async def put_records(self, p: Params) -> Params:
        s = self.stream(p)
        out = []
        now = time.time()
        for entry in p["Records"]:
            key = entry["PartitionKey"]
            shard = int(hashlib.md5(key.encode()).hexdigest(), 16) % len(s.shards)
            s.next_seq += 1
            seq = str(s.next_seq)
            s.shards[shard].append((seq, key, entry["Data"], now))
            out.append({"SequenceNumber": seq, "ShardId": _shard_id(shard)})
        return {"FailedRecordCount": 0, "Records": out}

    async def get_shard_iterator(self, p: Params) -> Params:
        s = self.stream(p)
        shard = int(p["ShardId"].rpartition("-")[2])
        records = s.shards[shard]
        kind = p["ShardIteratorType"]
        if kind == "TRIM_HORIZON":
            index = 0
        elif kind == "LATEST":
            index = len(records)
        else:
            seq = int(p["StartingSequenceNumber"])
            after = kind == "AFTER_SEQUENCE_NUMBER"
            index = sum(1 for r in records if int(r[0]) < seq or (after and int(r[0]) == seq))
        return {"ShardIterator": f"{s.name}|{shard}|{index}"}

    async def get_records(self, p: Params) -> Params:
        name, shard_s, index_s = p["ShardIterator"].split("|")
        s = self.stream({"StreamName": name})
        records = s.shards[int(shard_s)]
        start = int(index_s)
        page = records[start : start + int(p.get("Limit", 10_000))]
        return {
            "Records": [
                {
                    "SequenceNumber": seq,
                    "PartitionKey": key,
                    "Data": data,
                    "ApproximateArrivalTimestamp": arrival,
                }
                for seq, key, data, arrival in page
            ],
            "NextShardIterator": f"{name}|{shard_s}|{start + len(page)}",
            "MillisBehindLatest": 0,
        }


OPERATIONS: dict[str, Callable[[FakeKinesis, Params], Any]] = {
    "CreateStream": FakeKinesis.create_stream,
    "DescribeStreamSummary": FakeKinesis.describe_stream_summary,
    "ListShards": FakeKinesis.list_shards,
    "PutRecords": FakeKinesis.put_records,
    "GetShardIterator": FakeKinesis.get_shard_iterator,
    "GetRecords": FakeKinesis.get_records,
}


def _reply(status: int, payload: Params) -> web.Response:
    from aiohttp import web

    return web.Response(
        status=status, body=json.dumps(payload).encode(), headers={"Content-Type": JSON_TYPE}
    )


async def serve(host: str, port: int) -> None:
    """Serve until cancelled; prints `listening <port>` on stdout once bound."""
    from aiohttp import web

    service = FakeKinesis()

    async def handle(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        target = request.headers.get("X-Amz-Target", "")
        op = OPERATIONS.get(target.removeprefix("Kinesis_20131202."))
        if op is None:
            return _reply(400, {"__type": "UnknownOperationException", "message": target})
        try:
            return _reply(200, await op(service, json.loads(raw or b"{}")))
        except KinesisError as exc:
            return _reply(400, {"__type": exc.code, "message": str(exc)})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    print(f"listening {int(runner.addresses[0][1])}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def fake_kinesis_server() -> Iterator[str]:
    """Start the endpoint in a subprocess on 127.0.0.1:<free port>; yields its URL."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(BENCH_DIR.parent), *sys.path]))
    cmd = [sys.executable, "-m", "bench.fake_kinesis"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("listening "):
            raise BenchError(f"fake Kinesis endpoint did not start: {line!r}")
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        stop_process(proc)
        if proc.stdout is not None:
            proc.stdout.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fake_kinesis", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    from bench import run_async

    with contextlib.suppress(KeyboardInterrupt):
        run_async(serve(args.host, args.port))


if __name__ == "__main__":
    main()
