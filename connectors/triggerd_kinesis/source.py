"""The `kinesis` source: a Kinesis data stream read shard by shard as Lambda's Kinesis event
source mapping reads it. Shard discovery, resharding order, iterators, throttling and
checkpoints are the core's (triggerd.delivery.shards); this module opens the client, finds the
stream's ARN and shapes records."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AsyncExitStack

from triggerd.delivery.failures import stream_batch_info
from triggerd.delivery.shards import ShardReader
from triggerd.events.filters import view_with_data
from triggerd.types import BaseSource, JSONDict, Record, SourceContext, SourceStats

from .client import KinesisApi, open_client, stream_arn
from .config import KinesisSourceConfig
from .shape import Shaper

__all__ = ["KinesisSource"]


class KinesisSource(BaseSource):
    def __init__(self, config: KinesisSourceConfig, ctx: SourceContext) -> None:
        self.config = config
        self.ctx = ctx
        self.region = config.region_or(ctx.region)
        self._stack = AsyncExitStack()
        self.reader: ShardReader | None = None
        self.stream_arn = ""

    async def start(self) -> None:
        cfg, ctx = self.config, self.ctx
        try:
            client = await open_client(self._stack, cfg, self.region)
            self.stream_arn = await stream_arn(client, cfg, ctx.trigger)
        except BaseException:
            await self._stack.aclose()
            raise
        account = self.stream_arn.split(":")[4] or ctx.account_id
        shaper = Shaper(
            stream_arn=self.stream_arn,
            region=self.region,
            invoke_identity_arn=cfg.invoke_identity_arn or f"arn:aws:iam::{account}:role/triggerd",
            parallelization_factor=cfg.parallelization_factor,
        )
        self.reader = ShardReader(
            api=KinesisApi(client, self.stream_arn),
            shape=shaper.record,
            state=ctx.state,
            clock=ctx.clock,
            log=ctx.log,
            trigger=ctx.trigger,
            starting_position=cfg.starting_position,
            starting_timestamp=cfg.starting_epoch,
            page_limit=cfg.records_per_call,
            poll_interval_s=cfg.poll_interval_s,
            refresh_s=cfg.shard_refresh_s,
            read_ahead=cfg.read_ahead,
            kind="kinesis",
        )
        try:
            await self.reader.start()
        except BaseException:
            await self._stack.aclose()
            raise
        ctx.log.info(
            "kinesis.started",
            extra={
                "trigger": ctx.trigger,
                "stream": self.stream_arn,
                "shards": len(self.reader.shards),
            },
        )

    async def stop(self) -> None:
        if self.reader is not None:
            await self.reader.stop()
        await self._stack.aclose()

    async def receive(self, max_records: int, timeout_s: float) -> list[Record]:
        reader = self.reader
        assert reader is not None, "start() first"
        clock = self.ctx.clock
        deadline = clock.monotonic() + timeout_s
        while True:
            reader.check()
            out = reader.take(max_records)
            if out:
                return out
            remaining = deadline - clock.monotonic()
            if remaining <= 0:
                return []
            await reader.wait_ready(remaining)

    async def ack(self, records: Sequence[Record]) -> None:
        if self.reader is not None:
            await self.reader.ack(records)

    async def nack(self, records: Sequence[Record]) -> None:
        if self.reader is not None:
            self.reader.nack(records)

    def filter_view(self, record: Record) -> JSONDict:
        """Kinesis filter patterns see the `kinesis` fields, `data` decoded and parsed."""
        return view_with_data(record.payload["kinesis"], "data", "base64")

    def batch_info(self, records: Sequence[Record]) -> JSONDict:
        if not records:
            return {}
        return stream_batch_info(
            "KinesisBatchInfo",
            shard_id=str(records[0].handle),
            stream_arn=self.stream_arn,
            records=records,
        )

    def stats(self) -> SourceStats:
        """ReportsStats: iterator age and checkpoint per shard."""
        return self.reader.stats() if self.reader is not None else SourceStats()
