"""What sources, backends and destinations exchange with the pipeline while the daemon runs:
records, the contexts a plugin's `create` gets, invocation results and source statistics.

`triggerd.types` names each of them too, importing this module only when one is first used:
their dataclasses cost a few milliseconds to build at import, which the commands that only
read a config (`validate`, `status`, `generate-event`) do not need.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from triggerd.types import Outcome

if TYPE_CHECKING:
    import asyncio
    import logging

    from triggerd.state.base import StateStore
    from triggerd.types import Clock, HttpMount, InvokeFn, JSONDict

__all__ = [
    "BackendContext",
    "BuildError",
    "DestinationContext",
    "InvokeResult",
    "PartitionStats",
    "Record",
    "SourceContext",
    "SourceStats",
]


@dataclass(frozen=True, slots=True)
class BuildError:
    """Why a source could not build a record's Lambda shape from what it read (a value its
    mapping cannot convert): an error of that one record, which no retry can fix. The
    pipeline never invokes such a record: it gives it up at once (condition
    `RecordBuildFailed`), so that it blocks nothing behind it."""

    #: The exception's class name (logged).
    error_type: str
    #: The exception's message: it may quote the record's values, so it goes to the on-failure
    #: destination only, never to logs.
    message: str
    #: What the record is, without its values (logged): e.g. `postgres table public.orders`.
    subject: str

    #: The longest message carried to the destination.
    MAX_MESSAGE: ClassVar[int] = 2000

    @classmethod
    def of(cls, exc: BaseException, subject: str) -> BuildError:
        """The error of `exc`, its message cut at `MAX_MESSAGE` characters."""
        message = str(exc)
        if len(message) > cls.MAX_MESSAGE:
            message = message[: cls.MAX_MESSAGE] + "..."
        return cls(type(exc).__name__, message, subject)


@dataclass(slots=True, eq=False)
class Record:
    """One record in Lambda shape, with what the pipeline needs to batch, order and settle it."""

    #: The record exactly as it appears in the event (one element of `Records`, one Kafka
    #: record, one RabbitMQ message, or a whole bare event for schedules and webhooks).
    payload: JSONDict
    #: The partial-batch `itemIdentifier` as a string (messageId, sequence number, ...).
    item_id: str
    #: Size in bytes of the record's JSON; the batcher keeps batches under the 6 MB cap.
    size: int
    #: Epoch seconds when the record was created upstream (maximum record / event age).
    created_at: float
    #: Ordering key: records with one key are invoked in order, one batch at a time.
    key: str | None = None
    #: Source-private handle used by ack/nack.
    handle: Any = None
    #: Function-error attempts already made on this record (pipeline-managed).
    attempts: int = 0
    #: Async sources: checkpoint entries (keys in the trigger's checkpoint scope, None deletes)
    #: that the pipeline commits atomically with putting the record on the durable queue, so
    #: a restart neither loses nor replays it.
    checkpoint: dict[str, str | None] | None = None
    #: The X-Ray trace header the record came with (validated), for the invocation that
    #: carries it (a batch's: its first record's); None: a fresh one per invocation.
    trace_id: str | None = None
    #: Set by the pipeline on the records it nacks: True when the record goes back because
    #: its own invocation failed (a failed attempt: alone, listed in a partial batch response,
    #: or in a whole batch that is not split); False when it is only given back (stop, a
    #: released key, the records behind a failed one of its key, a split batch handed back),
    #: which sources that count attempts themselves must not count.
    failed: bool = False
    #: Set by the source on a record it could not build (its payload then holds only what
    #: could be built, without the values): the pipeline gives it up without invoking it,
    #: and the asynchronous path sends it to on-failure instead of enqueuing it.
    build_error: BuildError | None = None


@dataclass(frozen=True, slots=True)
class PartitionStats:
    """Progress of one partition (Kafka partition, stream shard) of a source."""

    #: The ordering key, e.g. "<topic>-<partition>".
    partition: str
    #: Records between the committed position and the end of the partition (None when the
    #: system does not tell, as for a replication slot).
    lag_records: int | None
    #: Age of the oldest record not yet processed (0 when caught up).
    lag_seconds: float
    #: The committed offset (the next record to process), None before the first commit; for a
    #: replication slot, its confirmed LSN.
    committed_offset: int | None
    #: Bytes between the committed position and the end, when the system tells (WAL behind a
    #: replication slot).
    lag_bytes: int | None = None
    #: Bytes the server keeps for this reader, when the system tells (WAL a slot retains).
    retained_bytes: int | None = None
    #: Records processed per second over the last minute, when the source counts them
    #: (stream shards).
    records_per_s: float | None = None


@dataclass(frozen=True, slots=True)
class SourceStats:
    partitions: tuple[PartitionStats, ...] = ()
    #: Rebalances (or lease changes) seen since the source started.
    rebalances: int = 0


@dataclass(slots=True)
class SourceContext:
    """Everything a source needs at run time."""

    trigger: str
    state: StateStore
    clock: Clock
    log: logging.Logger
    region: str = "us-east-1"
    account_id: str = "123456789012"
    #: The daemon's HTTP routes (None when `listen` is disabled).
    http: HttpMount | None = None
    #: Synchronous invocation of the trigger's function, for sources that answer a caller
    #: with the function's response (webhooks in sync mode).
    invoke: InvokeFn | None = None
    #: The function's name and timeout, for sources that need them.
    function: str = ""
    function_timeout_s: float = 3.0
    #: The trigger splits batches that fail as a whole (bisect_batch_on_function_error), so
    #: a batch can stay in flight for many invocations.
    splits_batches: bool = False
    #: The trigger writes a record to its on-failure destination once this many attempts
    #: failed (`maximum_retry_attempts` with `on_failure`); None when it never does.
    gives_up_after: int | None = None
    #: Lease duration of the work a source shares with other daemons (stream shards) on a
    #: store shared by several daemons (`singleton_lease_timeout_s`).
    singleton_lease_s: float = 15.0


@dataclass(slots=True)
class InvokeResult:
    outcome: Outcome
    #: The response bytes: the function's result, or its error object as JSON.
    payload: bytes
    request_id: str
    #: "Unhandled" (or legacy "Handled") when the function failed, as X-Amz-Function-Error.
    function_error: str | None = None
    executed_version: str = "$LATEST"
    duration_ms: float = 0.0
    #: Tail (up to 4 KB) of the invocation's log, when asked for.
    log_tail: str = ""
    #: For THROTTLED / INVOKE_ERROR: how long to wait before trying again, when known.
    retry_after_s: float | None = None

    @property
    def failed(self) -> bool:
        return self.outcome in (Outcome.FUNCTION_ERROR, Outcome.TIMEOUT)


@dataclass(slots=True)
class BackendContext:
    function: str
    clock: Clock
    log: logging.Logger
    region: str = "us-east-1"
    account_id: str = "123456789012"
    #: Directory for the function's scratch space and runtime files.
    work_dir: str = "/tmp/triggerd"
    #: The daemon's metrics (a triggerd.telemetry.metrics.Metrics); None in tools and tests.
    metrics: Any = None
    #: Directory shared by the daemon's functions for runtime-provided packages (the local
    #: backend's boto3 per Python version); None: the backend's default.
    runtimes_dir: str | None = None
    #: Set once the daemon is ready: work a backend does in the background that nothing
    #: needs before then (the local backend's credentials chain) waits for it, so that it
    #: does not delay the start. None: no such wait (tools, tests).
    daemon_ready: asyncio.Event | None = None

    @property
    def function_arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account_id}:function:{self.function}"


@dataclass(slots=True)
class DestinationContext:
    trigger: str
    clock: Clock
    log: logging.Logger
    #: The daemon's region: the default of a destination whose config names none.
    region: str = "us-east-1"
