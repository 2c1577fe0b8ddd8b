"""A small, fast, in-memory Kinesis-compatible endpoint for the kinesis benchmark only.

moto_server costs 13-25 ms per call, which hides what triggerd itself costs; this endpoint
answers in well under a millisecond so the benchmark can compare triggerd with a bare
aiobotocore get_records loop where the client side dominates. It runs in its own process
(`python -m bench.fake_kinesis`, started by `fake_kinesis_server()`), so its CPU never shares
the measured event loop or its GIL.

It speaks Kinesis's JSON 1.1 protocol as aiobotocore sends it (POST `/`, `X-Amz-Target:
Kinesis_20131202.<Operation>`) and implements only what the benchmark's clients call:
CreateStream, DescribeStreamSummary, ListShards, PutRecord(s), GetShardIterator (TRIM_HORIZON,
LATEST, AT/AFTER_SEQUENCE_NUMBER), GetRecords, SplitShard and MergeShards. Shards are lists
over ranges of the 128-bit hash key space; a record goes to the open shard whose range holds
`md5(partition key)`; sequence numbers grow across the stream; iterators are
`<stream>|<shard>|<index>` and never expire. Resharding behaves as Kinesis documents it (and
as moto 5.2.5 does not: it keeps routing records to the closed parent): a split or merge
closes its parents (ListShards shows their `EndingSequenceNumber`), new records go to the
children, and GetRecords on a closed shard read to its end returns no `NextShardIterator`.
The integration tests of resharding use it for that.
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


MAX_HASH = 2**128 - 1


@dataclass(slots=True)
class Shard:
    #: Hash key range, both ends included.
    first_hash: int
    last_hash: int
    parents: tuple[int, ...] = ()
    #: Set when a split or merge closed the shard.
    ending: int | None = None
    #: (sequence number, partition key, base64 data, arrival epoch seconds).
    records: list[tuple[str, str, str, float]] = field(default_factory=list)


@dataclass(slots=True)
class Stream:
    name: str
    shards: list[Shard] = field(default_factory=list)
    next_seq: int = 49_000_000_000_000_000_000

    @property
    def arn(self) -> str:
        return f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{self.name}"

    def shard(self, shard_id: str) -> Shard:
        try:
            return self.shards[int(shard_id.rpartition("-")[2])]
        except (ValueError, IndexError):
            raise KinesisError("ResourceNotFoundException", f"no shard {shard_id}") from None

    def route(self, hash_key: int) -> int:
        for i, shard in enumerate(self.shards):
            if shard.ending is None and shard.first_hash <= hash_key <= shard.last_hash:
                return i
        raise KinesisError("InternalFailure", "no open shard holds the hash key")

    def close(self, shard: Shard) -> None:
        shard.ending = self.next_seq


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
        count = int(p.get("ShardCount", 1))
        step = (MAX_HASH + 1) // count
        shards = [
            Shard(i * step, MAX_HASH if i == count - 1 else (i + 1) * step - 1)
            for i in range(count)
        ]
        self.streams[name] = Stream(name, shards)
        return {}

    async def split_shard(self, p: Params) -> Params:
        s = self.stream(p)
        parent = s.shard(p["ShardToSplit"])
        at = int(p["NewStartingHashKey"])
        if parent.ending is not None or not parent.first_hash < at <= parent.last_hash:
            raise KinesisError("InvalidArgumentException", "cannot split there")
        index = s.shards.index(parent)
        s.close(parent)
        s.shards.append(Shard(parent.first_hash, at - 1, (index,)))
        s.shards.append(Shard(at, parent.last_hash, (index,)))
        return {}

    async def merge_shards(self, p: Params) -> Params:
        s = self.stream(p)
        a, b = s.shard(p["ShardToMerge"]), s.shard(p["AdjacentShardToMerge"])
        if a.ending is not None or b.ending is not None or a.last_hash + 1 != b.first_hash:
            raise KinesisError("InvalidArgumentException", "shards are not open and adjacent")
        s.close(a)
        s.close(b)
        s.shards.append(Shard(a.first_hash, b.last_hash, (s.shards.index(a), s.shards.index(b))))
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
        return {"Shards": [_shard_json(i, shard) for i, shard in enumerate(s.shards)]}

    async def put_records(self, p: Params) -> Params:
        s = self.stream(p)
        out = []
        now = time.time()
        for entry in p["Records"]:
            key = entry["PartitionKey"]
            explicit = entry.get("ExplicitHashKey")
            hash_key = int(explicit) if explicit else int(hashlib.md5(key.encode()).hexdigest(), 16)
            shard = s.route(hash_key)
            s.next_seq += 1
            seq = str(s.next_seq)
            s.shards[shard].records.append((seq, key, entry["Data"], now))
            out.append({"SequenceNumber": seq, "ShardId": _shard_id(shard)})
        return {"FailedRecordCount": 0, "Records": out}

    async def put_record(self, p: Params) -> Params:
        entry = {k: p[k] for k in ("PartitionKey", "Data", "ExplicitHashKey") if k in p}
        reply = await self.put_records({**p, "Records": [entry]})
        return dict(reply["Records"][0])

    async def get_shard_iterator(self, p: Params) -> Params:
        s = self.stream(p)
        shard = int(p["ShardId"].rpartition("-")[2])
        records = s.shard(p["ShardId"]).records
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
        shard = s.shards[int(shard_s)]
        records = shard.records
        start = int(index_s)
        page = records[start : start + int(p.get("Limit", 10_000))]
        end = start + len(page)
        reply: Params = {
            "Records": [
                {
                    "SequenceNumber": seq,
                    "PartitionKey": key,
                    "Data": data,
                    "ApproximateArrivalTimestamp": arrival,
                }
                for seq, key, data, arrival in page
            ],
            "MillisBehindLatest": 0,
        }
        if shard.ending is None or end < len(records):
            reply["NextShardIterator"] = f"{name}|{shard_s}|{end}"
        return reply


def _shard_json(index: int, shard: Shard) -> Params:
    out: Params = {"ShardId": _shard_id(index)}
    if shard.parents:
        out["ParentShardId"] = _shard_id(shard.parents[0])
    if len(shard.parents) > 1:
        out["AdjacentParentShardId"] = _shard_id(shard.parents[1])
    out["HashKeyRange"] = {
        "StartingHashKey": str(shard.first_hash),
        "EndingHashKey": str(shard.last_hash),
    }
    seq_range = {"StartingSequenceNumber": "0"}
    if shard.ending is not None:
        seq_range["EndingSequenceNumber"] = str(shard.ending)
    out["SequenceNumberRange"] = seq_range
    return out


OPERATIONS: dict[str, Callable[[FakeKinesis, Params], Any]] = {
    "CreateStream": FakeKinesis.create_stream,
    "DescribeStreamSummary": FakeKinesis.describe_stream_summary,
    "ListShards": FakeKinesis.list_shards,
    "PutRecord": FakeKinesis.put_record,
    "PutRecords": FakeKinesis.put_records,
    "GetShardIterator": FakeKinesis.get_shard_iterator,
    "GetRecords": FakeKinesis.get_records,
    "SplitShard": FakeKinesis.split_shard,
    "MergeShards": FakeKinesis.merge_shards,
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
