"""The `kinesis` source: a Kinesis data stream read shard by shard as Lambda's Kinesis event
source mapping reads it. Shard discovery, resharding order, iterators, throttling,
checkpoints and settling are the core's (triggerd.delivery.shards); this module opens the
client, finds the stream's ARN and shapes records."""

from __future__ import annotations

from triggerd.delivery.shards import ShardedSource, ShardReader, WindowEnd
from triggerd.events.filters import view_with_data
from triggerd.types import JSONDict, Record, SourceContext

from .client import KinesisApi, open_client, stream_summary
from .config import KinesisSourceConfig
from .shape import Shaper

__all__ = ["KinesisSource"]


class KinesisSource(ShardedSource):
    batch_info_kind = "KinesisBatchInfo"

    def __init__(self, config: KinesisSourceConfig, ctx: SourceContext) -> None:
        super().__init__(ctx)
        self.config = config
        self.region = config.region_or(ctx.region)

    async def open(self) -> ShardReader:
        cfg, ctx = self.config, self.ctx
        client = await open_client(self.stack, cfg, self.region)
        summary = await stream_summary(client, cfg, ctx.trigger)
        self.stream_arn = str(summary["StreamARN"])
        created = summary.get("StreamCreationTimestamp")
        account = self.stream_arn.split(":")[4] or ctx.account_id
        shaper = Shaper(
            stream_arn=self.stream_arn,
            region=self.region,
            invoke_identity_arn=cfg.invoke_identity_arn or f"arn:aws:iam::{account}:role/triggerd",
            parallelization_factor=cfg.parallelization_factor,
        )
        return ShardReader(
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
            tumbling_window_s=cfg.tumbling_window_s,
            kind="kinesis",
            stream=self.stream_arn,
            reused_shard_ids=True,
            stream_created="" if created is None else str(created),
        )

    def filter_view(self, record: Record) -> JSONDict | None:
        """Kinesis filter patterns see the `kinesis` fields, `data` decoded and parsed."""
        if isinstance(record, WindowEnd):
            return None  # a tumbling window's end: never filtered out
        return view_with_data(record.payload["kinesis"], "data", "base64")
