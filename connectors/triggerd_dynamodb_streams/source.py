"""The `dynamodb_streams` source: a DynamoDB table's stream read shard by shard as Lambda's
DynamoDB Streams event source mapping reads it. Shard discovery, resharding order (DynamoDB
rolls shards over every few hours), iterators, throttling, checkpoints and settling are the
core's (triggerd.delivery.shards); this module finds the stream and shapes records."""

from __future__ import annotations

from triggerd.delivery.shards import ShardedSource, ShardReader, WindowEnd
from triggerd.types import JSONDict, Record, SourceContext

from .client import StreamsApi, open_client, resolve_stream
from .config import DynamoDBStreamsSourceConfig
from .shape import Shaper

__all__ = ["DynamoDBStreamsSource", "same_table"]


def same_table(previous: str, current: str) -> bool:
    """Whether two stream ARNs (`...:table/<table>/stream/<label>`) are of one table."""
    table = current.rpartition("/stream/")[0]
    return bool(table) and previous.rpartition("/stream/")[0] == table


class DynamoDBStreamsSource(ShardedSource):
    batch_info_kind = "DDBStreamBatchInfo"

    def __init__(self, config: DynamoDBStreamsSourceConfig, ctx: SourceContext) -> None:
        super().__init__(ctx)
        self.config = config
        self.region = config.region_or(ctx.region)
        self.view_type = ""

    async def open(self) -> ShardReader:
        cfg, ctx = self.config, self.ctx
        self.stream_arn, self.view_type = await resolve_stream(
            self.stack, cfg, self.region, ctx.trigger
        )
        client = await open_client(self.stack, cfg, self.region, "dynamodbstreams")
        shaper = Shaper(self.stream_arn, parallelization_factor=cfg.parallelization_factor)
        return ShardReader(
            api=StreamsApi(client, self.stream_arn),
            shape=shaper.record,
            state=ctx.state,
            clock=ctx.clock,
            log=ctx.log,
            trigger=ctx.trigger,
            starting_position=cfg.starting_position,
            page_limit=min(cfg.records_per_call, 1000),
            poll_interval_s=cfg.poll_interval_s,
            refresh_s=cfg.shard_refresh_s,
            read_ahead=cfg.read_ahead,
            tumbling_window_s=cfg.tumbling_window_s,
            kind="dynamodb_streams",
            stream=self.stream_arn,
            # A table named in the config: its new stream (streams disabled and enabled
            # again) continues the trigger's source.
            continues=self._same_table if cfg.stream_arn is None else None,
        )

    def _same_table(self, previous: str) -> bool:
        return same_table(previous, self.stream_arn)

    def filter_view(self, record: Record) -> JSONDict | None:
        """DynamoDB filter patterns see the record as delivered (`dynamodb` is JSON)."""
        if isinstance(record, WindowEnd):
            return None  # a tumbling window's end: never filtered out
        return record.payload
