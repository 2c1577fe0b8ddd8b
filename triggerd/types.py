"""Contracts shared by the core, the connectors and the function backends.

Everything a connector or backend needs at run time arrives in a context object; nothing here
holds global state.
"""

from __future__ import annotations

import enum
import importlib
import sys
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import (
    TYPE_CHECKING,
    Any,
    Literal,
    Protocol,
    TypeVar,
    runtime_checkable,
)

if TYPE_CHECKING:
    from aiohttp import web

    from triggerd.state.base import StateStore

JSONDict = dict[str, Any]

#: Lambda's synchronous invocation payload cap, also the batch payload cap.
MAX_SYNC_PAYLOAD = 6 * 1024 * 1024
#: Lambda's asynchronous invocation payload cap.
MAX_ASYNC_PAYLOAD = 1024 * 1024


# --------------------------------------------------------------------------------------------
# Time


class Clock(Protocol):
    """Injectable time source, so windows, backoff and cron are testable without sleeps."""

    def time(self) -> float:
        """Wall-clock epoch seconds."""
        ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        import asyncio  # not at the top: commands that only print (generate-event) skip it

        await asyncio.sleep(max(0.0, seconds))


# --------------------------------------------------------------------------------------------
# Config base: `triggerd.models`, imported (with pydantic) on first use of one of its names

if TYPE_CHECKING:
    from triggerd.models import CodePath as CodePath
    from triggerd.models import ConfigPath as ConfigPath
    from triggerd.models import DestinationConfig as DestinationConfig
    from triggerd.models import FunctionConfig as FunctionConfig
    from triggerd.models import InputDir as InputDir
    from triggerd.models import InputFile as InputFile
    from triggerd.models import Model as Model
    from triggerd.models import OutputDir as OutputDir
    from triggerd.models import OutputFile as OutputFile
    from triggerd.models import PathCheck as PathCheck
    from triggerd.models import SourceConfig as SourceConfig
    from triggerd.models import TriggerSettings as TriggerSettings
    from triggerd.models import empty_list as empty_list
    from triggerd.models import resolve_config_path as resolve_config_path

#: The names `triggerd.models` defines, as connectors and the core import them from here.
_MODEL_NAMES = frozenset(
    {
        "CodePath",
        "ConfigPath",
        "DestinationConfig",
        "FunctionConfig",
        "InputDir",
        "InputFile",
        "Model",
        "OutputDir",
        "OutputFile",
        "PathCheck",
        "SourceConfig",
        "TriggerSettings",
        "empty_list",
        "resolve_config_path",
    }
)


def lazy_attributes(owner: str, source: str, names: Collection[str]) -> Callable[[str], Any]:
    """A module `__getattr__` (PEP 562) for the module `owner`: the first use of one of
    `names` imports the module `source` and keeps the value in `owner`'s namespace, so a
    cheap import of `owner` pays for `source` only when something needs it."""
    lazy = frozenset(names)

    def module_getattr(name: str) -> Any:
        if name in lazy:
            value = getattr(importlib.import_module(source), name)
            setattr(sys.modules[owner], name, value)
            return value
        raise AttributeError(f"module {owner!r} has no attribute {name!r}")

    return module_getattr


# --------------------------------------------------------------------------------------------
# Records, contexts and results: `triggerd.runtime_types`, imported on first use of one of its
# names (its dataclasses are built at import: a command that only reads a config skips them)

if TYPE_CHECKING:
    from triggerd.runtime_types import BackendContext as BackendContext
    from triggerd.runtime_types import BuildError as BuildError
    from triggerd.runtime_types import DestinationContext as DestinationContext
    from triggerd.runtime_types import InvokeResult as InvokeResult
    from triggerd.runtime_types import PartitionStats as PartitionStats
    from triggerd.runtime_types import Record as Record
    from triggerd.runtime_types import SourceContext as SourceContext
    from triggerd.runtime_types import SourceStats as SourceStats

_RUNTIME_NAMES = frozenset(
    {
        "BackendContext",
        "BuildError",
        "DestinationContext",
        "InvokeResult",
        "PartitionStats",
        "Record",
        "SourceContext",
        "SourceStats",
    }
)
_models_attribute = lazy_attributes(__name__, "triggerd.models", _MODEL_NAMES)
_runtime_attribute = lazy_attributes(__name__, "triggerd.runtime_types", _RUNTIME_NAMES)


def __getattr__(name: str) -> Any:
    """The config model bases from `triggerd.models`, the records, contexts and results from
    `triggerd.runtime_types`, each module imported on first use."""
    if name in _RUNTIME_NAMES:
        return _runtime_attribute(name)
    return _models_attribute(name)


# --------------------------------------------------------------------------------------------
# Records and sources


@runtime_checkable
class HoldsRecords(Protocol):
    """A source whose system takes back a received record that stays unsettled too long (an
    SQS visibility timeout or its 12-hour ceiling, RabbitMQ's consumer_timeout)."""

    def hold_limit_s(self) -> float | None:
        """Seconds after receipt within which a batch's records may still be invoked again
        (room for that invocation already taken off); later the pipeline gives them back.
        None: no limit."""
        ...


def hold_room_s(limit_s: float, function_timeout_s: float) -> float | None:
    """A hold limit from the time a queue lets a record stay unsettled: room for one more
    invocation and a margin (a tenth, at most a minute) taken off; None when none is left."""
    room = limit_s - function_timeout_s - min(60.0, limit_s / 10)
    return room if room > 0 else None


@runtime_checkable
class Source(Protocol):
    """A source of records. It never acknowledges upstream by itself.

    The pipeline calls `receive` only when it has room (back-pressure), and settles every
    record it received exactly once with `ack` (delivered, filtered out, or written to the
    on-failure destination) or `nack` (give it back for redelivery). An `ack` that raises
    an exception settles nothing: the pipeline gives those records back with `nack` (after
    a throttle backoff). One cut short by a cancellation (a stop's timeout, a lease lost)
    may or may not have settled them: the source's `stop` deals with what it still holds.
    Sources with checkpoints must only commit the contiguous acknowledged prefix per
    ordering key.
    """

    async def start(self) -> None: ...

    async def receive(self, max_records: int, timeout_s: float) -> list[Record]:
        """Return up to `max_records` records, waiting at most `timeout_s` for the first."""
        ...

    async def ack(self, records: Sequence[Record]) -> None: ...

    async def nack(self, records: Sequence[Record]) -> None: ...

    def envelope(self, records: Sequence[Record]) -> JSONDict:
        """Build the invocation event for a batch (for async sources: for one record)."""
        ...

    def filter_view(self, record: Record) -> JSONDict | None:
        """The record as filter patterns see it (data key parsed as JSON when it is JSON);
        None for a source's control record, which filters never drop."""
        ...

    def batch_info(self, records: Sequence[Record]) -> JSONDict:
        """Batch metadata for an event-source-mapping on-failure record (may be empty)."""
        ...

    async def stop(self) -> None: ...


@runtime_checkable
class InspectsResults(Protocol):
    """A source that reads its function's responses (stream tumbling windows carry the
    function's `state` from one invocation to the next)."""

    def on_result(self, records: Sequence[Record], result: InvokeResult) -> InvokeResult:
        """Called with each invocation's result before it is judged; returns the result to
        judge (a response the source refuses becomes a function error)."""
        ...


@runtime_checkable
class EncodesEvents(Protocol):
    """Optional: a source that keeps each record's JSON from when it built the record, so a
    batch's invocation event is joined from those bytes instead of serialised again."""

    def encode_event(self, records: Sequence[Record]) -> bytes:
        """Exactly `orjson.dumps(self.envelope(records))`."""
        ...


@runtime_checkable
class AcksInMemory(Protocol):
    """Optional: a source whose `ack` only updates its own memory (a stream's settled prefix,
    whose checkpoint its own task writes later), so that no cancellation can cut it short:
    the pipeline calls `ack_now` instead of running `ack` in a task of its own
    (`delivery.settle`), which costs more than such an ack itself."""

    def ack_now(self, records: Sequence[Record]) -> None:
        """What `ack(records)` does, done before returning."""
        ...


@runtime_checkable
class PausesReceiving(Protocol):
    """Optional: a source that can stop fetching while settling still works (`triggerd
    record` gives its held records back only once nothing can fetch them again)."""

    async def pause_receiving(self) -> None:
        """Start no more fetches; return once the ones under way finished."""
        ...


class PipelineControl(Protocol):
    """What a source may ask of the pipeline that consumes it."""

    async def release_keys(self, keys: Collection[str], timeout_s: float) -> None:
        """Stop dispatching records with these ordering keys: buffered ones are nacked at once,
        batches in flight are given back at their next retry point, and this waits up to
        `timeout_s` for the in-flight ones to settle (ack or nack). For sources that lose
        keys while running (a Kafka partition revoked in a rebalance, a stream shard's lease
        taken over): settle what was done, then give the key up."""
        ...


@runtime_checkable
class ControlledSource(Protocol):
    """Optional: a source that needs the pipeline's control gets it once, before `receive`."""

    def attach(self, control: PipelineControl) -> None: ...


@runtime_checkable
class ReportsStats(Protocol):
    """Optional: a source that reports lag per partition (metrics, `triggerd status`)."""

    def stats(self) -> SourceStats: ...


@runtime_checkable
class RunsOnce(Protocol):
    """Optional: a source whose work must run on one daemon of a cluster at a time (a
    schedule, a PostgreSQL replication slot). The daemon receives from it only while it
    holds the lease `singleton_lease` (triggerd.state.leases). On the async path its
    checkpoints are written fenced by the lease's epoch. On the pipeline (sync) path, when
    the lease is lost the batches in flight still end and settle (their acks reach the
    source after the loss), so such a source must only ever move its checkpoint over records
    that were delivered: a successor then skips nothing undelivered."""

    @property
    def singleton_lease(self) -> str: ...

    async def resume(self) -> None:
        """Forget the progress kept in memory and go on from the stored checkpoint (called
        each time this daemon takes the lease: another daemon may have moved it)."""
        ...


#: Writes some of a trigger's checkpoints (scope: the trigger) in one transaction.
CheckpointWriter = Callable[[Mapping[str, str | None]], Awaitable[None]]


@runtime_checkable
class LeadsWork(Protocol):
    """Optional, with RunsOnce: a singleton source that works on its own between receives
    (S3 poll lists its bucket on a timer) and writes checkpoints that no record carries.
    `lead` is called after `resume` each time this daemon takes the lease, with a writer
    fenced by it (LeaseLostError once the lease has moved on); `stand_by` when the lease is
    lost or given up: stop that work until the next `lead`."""

    async def lead(self, write_checkpoints: CheckpointWriter) -> None: ...

    async def stand_by(self) -> None: ...


class BaseSource:
    """Defaults for the optional parts of the Source protocol."""

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def nack(self, records: Sequence[Record]) -> None:
        return None

    def envelope(self, records: Sequence[Record]) -> JSONDict:
        return {"Records": [r.payload for r in records]}

    def filter_view(self, record: Record) -> JSONDict | None:
        return record.payload

    def batch_info(self, records: Sequence[Record]) -> JSONDict:
        return {}


#: An aiohttp request handler.
HttpHandler = Callable[["web.BaseRequest"], Awaitable["web.StreamResponse"]]


class HttpMount(Protocol):
    """Routes on the daemon's HTTP server (its `listen` address), for push sources such as
    webhooks. Templates use API Gateway syntax: `/orders/{id}`, `/files/{proxy+}`; the match
    is in `request["route"]` (a `triggerd.http.routes.RouteMatch`). Method "ANY" matches every
    method. Raises ValueError when the route is already taken."""

    def add_route(
        self, method: str, template: str, handler: HttpHandler, *, owner: str
    ) -> None: ...

    def remove_routes(self, owner: str) -> None: ...


class InvokeFn(Protocol):
    """Invoke the trigger's function synchronously (RequestResponse) with a payload."""

    def __call__(
        self, payload: bytes, *, trace_id: str | None = None
    ) -> Awaitable[InvokeResult]: ...


# --------------------------------------------------------------------------------------------
# Backends


class Outcome(enum.Enum):
    OK = "ok"
    #: The function ran and failed (raised, crashed, bad response): counts as an attempt.
    FUNCTION_ERROR = "function_error"
    #: The function ran past its timeout: a function error with Lambda's timeout message.
    TIMEOUT = "timeout"
    #: Concurrency limit or 429: back off, does not count as an attempt.
    THROTTLED = "throttled"
    #: The backend could not reach the function (connection refused, 5xx): back off, no count.
    INVOKE_ERROR = "invoke_error"


InvocationType = Literal["RequestResponse", "Event"]


class Backend(Protocol):
    """Where a function runs."""

    async def start(self) -> None: ...

    async def invoke(
        self,
        payload: bytes,
        *,
        request_id: str | None = None,
        invocation_type: InvocationType = "RequestResponse",
        client_context: str | None = None,
        want_log_tail: bool = False,
        trace_id: str | None = None,
    ) -> InvokeResult:
        """`trace_id`: the invocation's X-Ray trace header (validated by the caller); None
        means the backend makes a fresh one where its function can see it."""
        ...

    async def stop(self) -> None: ...


# --------------------------------------------------------------------------------------------
# Destinations


class Destination(Protocol):
    """An on-failure destination. `send` returns only once the record is durably stored."""

    async def start(self) -> None: ...

    async def send(self, record: JSONDict) -> None: ...

    async def stop(self) -> None: ...


# --------------------------------------------------------------------------------------------
# Plugins (entry-point objects)


_M = TypeVar("_M", bound="Model")


def plugin_config(config: object, model: type[_M]) -> _M:
    """The config a plugin's `create` was given, as the plugin's own model: the registry
    validates it with `config_model`, so anything else is a caller's mistake (TypeError)."""
    if not isinstance(config, model):
        raise TypeError(f"expected {model.__name__}, got {type(config).__name__}")
    return config


@dataclass(frozen=True, slots=True)
class SourceCommand:
    """`triggerd <type> <name> TRIGGER`: an operation on a trigger's source (e.g. `triggerd
    postgres drop-slot`). `run(source_config, trigger, state)` returns what it did."""

    help: str
    run: Callable[[Any, str, StateStore], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class SourcePlugin:
    config_model: type[SourceConfig]
    create: Callable[[Any, SourceContext], Source]
    #: generate-event: sample event in AWS shape for this source type.
    sample_event: Callable[[Mapping[str, str]], JSONDict] | None = None
    #: generate-event: the options `sample_event` accepts (name -> one-line help), listed by
    #: `generate-event SOURCE --help`; any other option is refused.
    sample_options: Mapping[str, str] = field(default_factory=dict)
    #: `triggerd status`: one line about a trigger's source read from the external system
    #: (`(source_config, trigger)`); None when there is nothing to say. May raise
    #: RetryableError when the system cannot be reached.
    status: Callable[[Any, str], Awaitable[str | None]] | None = None
    #: `triggerd validate --connect` (`(source_config, trigger)`): the server answers and
    #: accepts the credentials; problems only it can reveal (a missing queue, a refused
    #: login) raised as a ConfigError (one line each); RetryableError (or PermanentError)
    #: when it cannot be reached. Bounded by the caller's timeout.
    check: Callable[[Any, str], Awaitable[None]] | None = None
    #: The same check for a source whose server is keyed by region (AWS), used instead of
    #: `check`: `(source_config, trigger, region)`, `region` being the daemon's (`[daemon]
    #: region`, the `SourceContext.region` the running source gets), for a source that
    #: names none, so the check looks where the source will.
    check_in_region: Callable[[Any, str, str], Awaitable[None]] | None = None
    #: `triggerd <type> <name> TRIGGER` commands.
    commands: Mapping[str, SourceCommand] = field(default_factory=dict)


#: Where a backend reports what it is building (one line at a time).
ProgressFn = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class BackendPlugin:
    config_model: type[FunctionConfig]
    create: Callable[[Any, BackendContext], Backend]
    #: `triggerd validate`: problems found without building anything (a missing
    #: interpreter), raised as a ConfigError; `(function_config, function_name)`. It
    #: returns None when it checked everything at once, or an awaitable that finishes the
    #: check (a process to start): a config whose checks all finish at once is validated
    #: without an event loop.
    check: Callable[[Any, str], Awaitable[None] | None] | None = None
    #: `triggerd build`: prepare a function ahead of `run` (install its dependencies),
    #: reporting progress; raises ConfigError or PermanentError with the reason.
    build: Callable[[Any, BackendContext, ProgressFn], Awaitable[None]] | None = None


@dataclass(frozen=True, slots=True)
class DestinationPlugin:
    config_model: type[DestinationConfig]
    create: Callable[[Any, DestinationContext], Destination]


# --------------------------------------------------------------------------------------------
# Errors


class TriggerdError(Exception):
    """Base for errors that carry policy."""


class ConfigError(TriggerdError):
    """Bad configuration: not retryable; the daemon exits with status 2."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


class RetryableError(TriggerdError):
    """A transient failure: try again after `retry_after_s` (or the policy's backoff)."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class PermanentError(TriggerdError):
    """A failure that retrying will not fix."""


class MissingExtraError(TriggerdError):
    """A plugin needs an optional dependency that is not installed."""


class ExitCode(enum.IntEnum):
    """The daemon's exit statuses (README, "Exit codes"). The systemd unit does not restart
    on those an operator has to fix (RestartPreventExitStatus)."""

    OK = 0
    #: An unexpected failure, or a second signal forced the exit.
    FAILURE = 1
    CONFIG_INVALID = 2
    #: The state store is missing or empty although triggerd ran with one before.
    STATE_MISSING = 3
    STATE_CORRUPT = 4
    #: The state store (or its directory, or the work directory) cannot be written.
    STATE_UNWRITABLE = 5
    #: Another process holds the state store.
    STATE_LOCKED = 6
    #: The listen address cannot be bound (in use, not an address of this host, no permission).
    LISTEN_FAILED = 7
    #: The config file cannot be read (missing, a directory, no permission).
    CONFIG_UNREADABLE = 8
    #: `triggerd status`: the daemon does not answer (not running, or not at that address).
    DAEMON_UNREACHABLE = 9
    #: `triggerd status`: the daemon answers, and a trigger (or its state store) is failing.
    TRIGGER_FAILING = 10
    #: `triggerd validate --connect`: a source's server does not answer or cannot be reached
    #: (a refused login or a missing queue is a config problem: CONFIG_INVALID).
    SOURCE_UNREACHABLE = 11
    #: `state migrate`: the PostgreSQL store already holds state (`--force` empties it).
    STATE_NOT_EMPTY = 12


class OperatorError(TriggerdError):
    """A problem the operator has to fix before the daemon can start: reported as one line
    (no traceback) and exit status `exit_code`."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str, exit_code: ExitCode | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code
