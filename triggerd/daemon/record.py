"""`triggerd record`: capture the events a trigger would deliver as JSON fixtures, without
invoking its function and without acknowledging anything at its source.

It is the daemon's own pipeline with two parts swapped: the function's backend is a
`CaptureBackend` that writes each invocation payload to a file and answers "recorded", and
the source's acknowledgements are held (`HeldSettlement`) and given back as nacks when the
recording ends, so every record goes back to its system as if the daemon had stopped
before finishing it: an SQS message becomes visible again at once (or, should the recording
be killed, when its visibility timeout ends), a RabbitMQ message is requeued, a Kafka
recording reads with a consumer group of its own that never commits, a stream or an S3
listing writes no checkpoint. Checkpoints and the durable queue live in a throwaway copy of
the state store, so the trigger's real state is only read. A webhook is served on the
configured listen address and its callers get 202 (event mode) or a 202 "recorded"
response (sync mode).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import shutil
import sqlite3
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from triggerd.config.model import ConfigBase, TriggerBase
from triggerd.config.plugins import Registry
from triggerd.daemon.app import Daemon, Function
from triggerd.daemon.changes import enabled_triggers
from triggerd.state.factory import postgres_store, sqlite_path
from triggerd.state.pgschema import is_postgres_url
from triggerd.state.sqlite import MEMORY_PATH, SQLiteStateStore, StateStoreOpenError
from triggerd.types import (
    ConfigError,
    ExitCode,
    FunctionConfig,
    InvocationType,
    InvokeResult,
    Outcome,
    PausesReceiving,
    Record,
    Source,
    SourceContext,
    SourcePlugin,
)

log = logging.getLogger("triggerd.record")

#: What a sync caller (a webhook in sync mode) is answered while recording.
RECORDED_RESPONSE = orjson.dumps(
    {
        "statusCode": 202,
        "headers": {"content-type": "text/plain"},
        "body": "recorded by triggerd record; the function was not invoked",
    }
)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def fixture_name(trigger: str, seq: int) -> str:
    """`<trigger>-0001.json`: the trigger's name made safe for a file name, and a sequence."""
    return f"{_UNSAFE.sub('_', trigger)}-{seq:04d}.json"


def recorded_before(trigger: str, out_dir: Path) -> int:
    """The highest sequence of `trigger`'s fixtures already in `out_dir` (0: none): a new
    recording numbers on after it, so it never overwrites an earlier one's files."""
    pattern = re.compile(re.escape(_UNSAFE.sub("_", trigger)) + r"-(\d{4,})\.json")
    found = [pattern.fullmatch(p.name) for p in out_dir.iterdir()] if out_dir.is_dir() else []
    return max((int(m.group(1)) for m in found if m), default=0)


class Recorder:
    """Writes up to `count` invocation payloads into `out_dir`, numbered after `first - 1`;
    `done` is set at the last."""

    def __init__(self, trigger: str, out_dir: Path, count: int, first: int = 1) -> None:
        self.trigger = trigger
        self.out_dir = out_dir
        self.count = count
        self.files: list[Path] = []
        self.done = asyncio.Event()
        self._taken = 0
        self._first = first

    async def take(self, payload: bytes) -> bool:
        """Write one payload (pretty-printed, the same JSON value); False once `count` are."""
        if self._taken >= self.count:
            return False
        self._taken += 1
        path = self.out_dir / fixture_name(self.trigger, self._first - 1 + self._taken)
        text = orjson.dumps(orjson.loads(payload), option=orjson.OPT_INDENT_2) + b"\n"
        self.files.append(path)  # in sequence order, whichever write ends first
        await asyncio.to_thread(path.write_bytes, text)
        log.info("record.captured", extra={"trigger": self.trigger, "file": str(path)})
        if self._taken >= self.count:
            self.done.set()
        return True


class CaptureBackend:
    """A backend that records each invocation payload instead of running the function."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

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
        rid = request_id or str(uuid.uuid4())
        if await self.recorder.take(payload):
            return InvokeResult(Outcome.OK, RECORDED_RESPONSE, rid)
        # Enough recorded: the pipeline backs off until the recording stops and gives the
        # rest back.
        body = orjson.dumps(
            {
                "errorType": "TooManyRequestsException",
                "errorMessage": "triggerd record: the requested events are recorded",
            }
        )
        return InvokeResult(Outcome.THROTTLED, body, rid, retry_after_s=1.0)


class HeldSettlement:
    """Replaces a source's `ack` (the records are held) and `stop` (they are nacked first).

    The source object itself stays what the pipeline sees, so its optional capabilities
    (lease extension, lag, pipeline control) keep working; only these two methods change.
    """

    def __init__(self, source: Source, passes_acks: bool) -> None:
        self.held: list[Record] = []
        self._source = source
        self._ack = source.ack
        self._nack = source.nack
        self._stop = source.stop
        self._passes_acks = passes_acks
        source.ack = self.ack  # type: ignore[method-assign]
        source.stop = self.stop  # type: ignore[method-assign]

    async def ack(self, records: Sequence[Record]) -> None:
        if self._passes_acks:
            await self._ack(records)
        else:
            self.held.extend(records)

    async def give_back(self) -> None:
        held, self.held = self.held, []
        for record in held:
            record.failed = False  # given back, not a failed attempt
        if held:
            await self._nack(held)

    async def stop(self) -> None:
        try:
            if self.held and isinstance(self._source, PausesReceiving):
                await self._source.pause_receiving()  # or it may fetch them again
            await self.give_back()
        finally:
            await self._stop()


@dataclasses.dataclass
class RecordingRegistry(Registry):
    """The registry whose source plugins come back with their settlement held."""

    settlements: list[HeldSettlement] = dataclasses.field(default_factory=list)

    def source(self, name: str) -> SourcePlugin:
        plugin = super().source(name)

        def create(config: Any, ctx: SourceContext) -> Source:
            source = plugin.create(config, ctx)
            self.settlements.append(HeldSettlement(source, config.record_passes_acks))
            return source

        return dataclasses.replace(plugin, create=create)


@dataclasses.dataclass
class RecordingDaemon(Daemon):
    """The daemon with its one function captured instead of run."""

    recorder: Recorder | None = None

    async def start_function(self, name: str, fcfg: FunctionConfig) -> Function:
        assert self.recorder is not None
        ctx = self.context(name)
        return Function(name, fcfg, CaptureBackend(self.recorder), ctx.function_arn)


def recording_trigger(cfg: ConfigBase, name: str) -> TriggerBase:
    """The trigger to record (ConfigError naming the known ones, or why it cannot be)."""
    triggers = {cfg.trigger_name(i): t for i, t in enumerate(cfg.trigger_list)}
    trigger = triggers.get(name)
    if trigger is None:
        known = ", ".join(triggers) or "none"
        raise ConfigError([f"no trigger {name!r} in the config (triggers: {known})"])
    refusal = trigger.source_config.record_refusal()
    if refusal is not None:
        raise ConfigError([f"trigger {name!r} cannot be recorded: {refusal}"])
    return trigger


def recording_config(cfg: ConfigBase, name: str, scratch: Path) -> ConfigBase:
    """The config reduced to the trigger (enabled, no on-failure destination, its source as
    a recording reads it) and its function, with a state store and work directory in
    `scratch` and no control listener."""
    trigger = recording_trigger(cfg, name)
    source = trigger.source_config.recording_copy(name)
    trigger = trigger.model_copy(
        update={"name": name, "enabled": True, "on_failure": None, "source": source}
    )
    daemon = cfg.daemon.model_copy(
        update={
            "state": f"sqlite:///{scratch / 'state.db'}",
            "work_dir": str(scratch / "work"),
            "control_listen": "",
            "control_on_public": False,
            # Only a push source with routes (a webhook) needs the public listener.
            "listen": cfg.daemon.listen if source.http_routes() else "",
        }
    )
    return cfg.model_copy(
        update={
            "daemon": daemon,
            "functions": {trigger.function: cfg.functions[trigger.function]},
            "triggers": [trigger],
        }
    )


def _copy_store(src: str, dst: Path) -> None:
    """SQLite's online backup: consistent while a daemon writes the store."""
    with (
        sqlite3.connect(f"file:{src}?mode=ro", uri=True) as source,
        sqlite3.connect(dst) as target,
    ):
        source.backup(target)
    source.close()
    target.close()


async def _postgres_checkpoints(url: str, trigger: str) -> dict[str, str]:
    """The trigger's checkpoints in a PostgreSQL store, only read (its schema is never
    created or migrated); none when the database has no triggerd schema yet."""
    store = postgres_store(url)
    try:
        await store.open_without_migrating()
    except StateStoreOpenError as exc:
        if exc.exit_code == ExitCode.STATE_MISSING:
            return {}
        raise
    try:
        return await store.list_checkpoints(trigger)
    finally:
        await store.close()


async def _prepare_scratch(cfg: ConfigBase, name: str, scratch: Path) -> None:
    """The state store's copy in `scratch` (the trigger's checkpoints read, never written
    back), with the trigger not paused; nothing when there is no store yet. From a
    PostgreSQL store only the trigger's checkpoints are copied: the rest is not read."""
    copy = scratch / "state.db"
    if is_postgres_url(cfg.daemon.state):
        checkpoints = await _postgres_checkpoints(cfg.daemon.state, name)
        if checkpoints:
            store = SQLiteStateStore(str(copy))
            await store.open()
            try:
                await store.set_checkpoints(name, dict(checkpoints))
            finally:
                await store.close()
        return
    try:
        path = sqlite_path(cfg.daemon.state)
    except ConfigError:
        path = MEMORY_PATH
    if path != MEMORY_PATH and await asyncio.to_thread(Path(path).is_file):
        await asyncio.to_thread(_copy_store, path, copy)
        store = SQLiteStateStore(str(copy))
        await store.open()
        try:
            await store.set_paused(name, False)
        finally:
            await store.close()


async def record(
    cfg: ConfigBase,
    registry: Registry,
    trigger: str,
    out_dir: Path,
    *,
    count: int,
    timeout_s: float,
) -> list[Path]:
    """Record up to `count` invocation payloads of `trigger` into `out_dir`, for at most
    `timeout_s` seconds; returns the files written. ConfigError when the trigger cannot be
    recorded; the daemon's start-up errors (OperatorError, ...) as `run` raises them."""
    recording_trigger(cfg, trigger)
    await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
    scratch = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="triggerd-record-"))
    try:
        await _prepare_scratch(cfg, trigger, scratch)
        rcfg = recording_config(cfg, trigger, scratch)
        assert list(enabled_triggers(rcfg)) == [trigger]
        first = 1 + await asyncio.to_thread(recorded_before, trigger, out_dir)
        recorder = Recorder(trigger, out_dir, count, first)
        registry = RecordingRegistry(
            entry_points=registry.entry_points,
            loaded=registry.loaded,
            discovering=registry.discovering,
        )
        daemon = RecordingDaemon(rcfg, registry, accept_fresh_state=True, recorder=recorder)
        async with daemon.running():
            log.info(
                "record.started",
                extra={"trigger": trigger, "count": count, "listen": daemon.listen_address},
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(recorder.done.wait(), timeout_s)
        return recorder.files
    finally:
        await asyncio.to_thread(shutil.rmtree, scratch, ignore_errors=True)
