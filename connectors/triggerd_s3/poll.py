"""Poll mode: list the bucket on an interval and diff against the state store.

State (scope = the trigger's name): `o:<key>` -> `{"etag":..,"size":..,"last_modified":..}`
(compact JSON) for every object consumers have been told about, `meta:sequencer` (the last
sequencer issued), `meta:initialized` (set once the first listing is complete) and, with
`starting_position = LATEST`, `meta:latest_from` (epoch seconds, stored before the first
listing starts: the daemon's clock rounded down to the second, minus one second).

With LATEST the first listing records the objects it finds silently. One that is
interrupted (a failover, a crash) is done again by the next lister from the same
`meta:latest_from`: the objects modified at or after it were put after the first start and
get their event (rather than being taken for old ones), and the objects the interrupted
listing recorded that are gone since get their Delete.

A scan reads the stored entries under `o:<prefix>` once, then walks ListObjectsV2 pages
(`page_size` keys each) and, per object, pops its stored entry and compares: new or changed
objects give ObjectCreated:Put. Whatever is left in the stored map after the last page was not
in the listing: ObjectRemoved:Delete. The listing itself is never accumulated (one page at a
time) and the stored map shrinks as pages are consumed, so peak memory is one copy of the
stored entries (the StateStore interface offers prefix reads only, not ordered range reads,
so a fully streaming merge of the two sorted sequences is not possible through it). A listing
that fails half-way emits no deletions, and the next listing starts only once the events it
did emit are settled.

Each record's checkpoint is `{"o:<key>": new state or None, "meta:sequencer": ..}`; the
pipeline commits it atomically with putting the event on the durable queue. The next scan
starts only after every record of the previous one is acked, so it compares against committed
state: a restart neither replays committed changes nor loses uncommitted ones (they are found
again by the next listing). Changes that are not selected by `events` update the state
without an event.

Across a cluster (RunsOnce, lease `s3poll:<trigger>`): only the daemon holding the lease
lists the bucket. The listing loop starts at the first `receive` after `start`; with a lease,
`resume` + `lead` (this daemon took it) reset what is kept in memory (the sequencer is read
again: another daemon may have moved it; every scan reads the stored objects anyway) and
route the silent state writes through the fenced writer, and `stand_by` (lost or given up)
stops the loop. A fenced write refused ends the loop until the lease is taken again.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from triggerd.config.aws import error_code, not_an_answer
from triggerd.delivery.retry import Backoff
from triggerd.events.s3 import (
    Sequencer,
    new_host_id,
    new_request_id,
    s3_event_record,
)
from triggerd.events.timestamps import iso_ms
from triggerd.state.leases import LeaseLostError
from triggerd.types import BaseSource, CheckpointWriter, JSONDict, Record, SourceContext

from .client import describe_error, open_client
from .config import S3SourceConfig

OBJECT_PREFIX = "o:"
INITIALIZED_KEY = "meta:initialized"
LATEST_FROM_KEY = "meta:latest_from"
SEQUENCER_KEY = "meta:sequencer"

_PUT = "ObjectCreated:Put"
_DELETE = "ObjectRemoved:Delete"
_RETRY_MAX_S = 300.0
#: Silent state updates (unselected events, LATEST baseline) are written this many at a time.
_SILENT_CHUNK = 1000


class NotAListingError(RuntimeError):
    """A ListObjectsV2 page that is no S3 answer (an HTML page a proxy or another web server
    answered with 200): the listing fails, as one cut short does."""


@dataclass(frozen=True, slots=True)
class ObjectState:
    etag: str
    size: int
    last_modified: str
    #: LastModified as epoch seconds (the Put event's eventTime); not persisted.
    epoch: float = field(default=0.0, compare=False)

    def encode(self) -> str:
        return orjson.dumps(
            {"etag": self.etag, "size": self.size, "last_modified": self.last_modified}
        ).decode()

    @classmethod
    def from_listing(cls, obj: JSONDict) -> ObjectState:
        modified = obj.get("LastModified")
        epoch = float(modified.timestamp()) if isinstance(modified, datetime) else 0.0
        stamp = iso_ms(epoch) if epoch else ""
        return cls(str(obj.get("ETag", "")).strip('"'), int(obj.get("Size", 0)), stamp, epoch)


@dataclass(slots=True)
class ScanStats:
    listed: int = 0
    created: int = 0
    deleted: int = 0
    silent: int = 0


class PollSource(BaseSource):
    def __init__(
        self,
        config: S3SourceConfig,
        ctx: SourceContext,
        client: Any = None,
        *,
        max_ready: int = 1000,
    ) -> None:
        self._cfg = config
        self._ctx = ctx
        self._log = ctx.log
        self._scope = ctx.trigger
        self._region = config.region or ctx.region
        self._owner = config.account_id or ctx.account_id
        self._secrets = config.secrets()
        self._client = client
        self._stack = AsyncExitStack()
        self._ready: asyncio.Queue[Record] = asyncio.Queue(max(1, max_ready))
        self._returned: deque[Record] = deque()
        self._outstanding = 0
        self._drained = asyncio.Event()
        self._drained.set()
        self._seq = Sequencer(ctx.clock.time)
        self._task: asyncio.Task[None] | None = None
        #: `start` was called: the first `receive` starts the listing loop.
        self._started = False
        #: Another daemon holds the lease (or this one has not taken it yet since `stand_by`).
        self._standing_by = False
        #: Where the silent state writes go: straight to the store, or fenced by the lease.
        self._write: CheckpointWriter = self._write_direct
        #: Completed scans (tests and benchmarks wait on it).
        self.scans = 0
        self.scan_done = asyncio.Event()

    async def start(self) -> None:
        if self._client is None:
            self._client = await open_client(
                self._stack,
                "s3",
                self._cfg,
                region=self._region,
                endpoint_url=self._cfg.endpoint_url,
            )
        await self._load_sequencer()
        self._started = True
        self._log.info(
            "s3.started",
            extra={
                "trigger": self._scope,
                "bucket": self._cfg.bucket,
                "mode": "poll",
                "prefix": self._cfg.prefix,
                "poll_interval_s": self._cfg.poll_interval_s,
            },
        )

    async def stop(self) -> None:
        await self._stop_polling()
        await self._stack.aclose()

    async def _load_sequencer(self) -> None:
        last = await self._ctx.state.get_checkpoint(self._scope, SEQUENCER_KEY)
        self._seq = Sequencer(self._ctx.clock.time, last)

    async def _stop_polling(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _forget_scan(self) -> None:
        """Drop what the stopped scan had emitted and not settled (its checkpoints are not
        committed: the next listing finds those changes again)."""
        self._ready = asyncio.Queue(self._ready.maxsize)
        self._returned.clear()
        self._outstanding = 0
        self._drained.set()

    async def _write_direct(self, checkpoints: Mapping[str, str | None]) -> None:
        await self._ctx.state.set_checkpoints(self._scope, checkpoints)

    # ---- one lister per cluster (RunsOnce, LeadsWork) -------------------------------------

    @property
    def singleton_lease(self) -> str:
        """One daemon of a cluster lists the bucket: the holder of this lease."""
        return f"s3poll:{self._scope}"

    async def resume(self) -> None:
        """This daemon (again) holds the lease: forget the last tenure's scan and read the
        sequencer again (another daemon may have listed meanwhile)."""
        await self._stop_polling()
        self._forget_scan()
        await self._load_sequencer()

    async def lead(self, write_checkpoints: CheckpointWriter) -> None:
        self._write = write_checkpoints
        self._standing_by = False

    async def stand_by(self) -> None:
        """The lease is lost or given up: no more listing until the next `lead`."""
        self._standing_by = True
        await self._stop_polling()
        self._forget_scan()
        self._write = self._write_direct

    # ---- Source protocol ------------------------------------------------------------------

    async def receive(self, max_records: int, timeout_s: float) -> list[Record]:
        if max_records <= 0:
            return []
        if self._task is None and self._started and not self._standing_by:
            self._task = asyncio.create_task(self._poll_loop(), name=f"s3-poll:{self._scope}")
        out: list[Record] = []
        while self._returned and len(out) < max_records:
            out.append(self._returned.popleft())
        if not out:
            try:
                async with asyncio.timeout(max(0.0, timeout_s)):
                    out.append(await self._ready.get())
            except TimeoutError:
                return []
        while len(out) < max_records and not self._ready.empty():
            out.append(self._ready.get_nowait())
        return out

    async def ack(self, records: Sequence[Record]) -> None:
        self._settle(len(records))

    async def nack(self, records: Sequence[Record]) -> None:
        """Hand the records out again, first (their checkpoints are not committed yet)."""
        self._returned.extendleft(reversed(records))

    def _settle(self, count: int) -> None:
        self._outstanding = max(0, self._outstanding - count)
        if self._outstanding == 0:
            self._drained.set()

    # ---- polling --------------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        failures = 0
        while True:
            try:
                stats = await self.scan_once()
                failures = 0
                self._log.debug(
                    "s3.scanned",
                    extra={
                        "trigger": self._scope,
                        "bucket": self._cfg.bucket,
                        "listed": stats.listed,
                        # Not "created": a LogRecord attribute (the call would raise).
                        "puts": stats.created,
                        "deletes": stats.deleted,
                    },
                )
                delay = self._cfg.poll_interval_s
            except asyncio.CancelledError:
                raise
            except LeaseLostError as exc:  # another daemon lists now: until `lead` again
                self._log.warning(
                    "s3.poll_fenced",
                    extra={"trigger": self._scope, "bucket": self._cfg.bucket, "error": str(exc)},
                )
                return
            except Exception as exc:  # task boundary: log, back off, list again
                failures += 1
                delay = Backoff(self._cfg.poll_interval_s, _RETRY_MAX_S, jitter=0).delay(failures)
                self._log.warning(
                    "s3.poll_failed",
                    extra={
                        "trigger": self._scope,
                        "bucket": self._cfg.bucket,
                        "error": describe_error(exc, self._secrets),
                        "code": error_code(exc) or "",
                        "retry_in_s": delay,
                    },
                )
            await self._ctx.clock.sleep(delay)

    async def scan_once(self) -> ScanStats:
        """List the bucket once, emit the differences, and wait until they are all acked."""
        # A scan that failed half-way may have emitted records not committed yet: compared
        # against the state before them, they would be emitted a second time.
        await self._drained.wait()
        state = self._ctx.state
        initialized = await state.get_checkpoint(self._scope, INITIALIZED_KEY)
        emit = initialized is not None or self._cfg.starting_position == "TRIM_HORIZON"
        # LATEST's first listing done again: objects modified since the first start (of the
        # interrupted one) still get events.
        since = None if emit else await self._latest_from()
        versioned = await self._versioned()
        stored = await state.list_checkpoints(self._scope, OBJECT_PREFIX + self._cfg.prefix)
        stats = ScanStats()
        silent: dict[str, str | None] = {}
        async for page in self._pages():
            for obj in page:
                key = str(obj["Key"])
                if not self._cfg.key_matches(key):
                    continue
                stats.listed += 1
                new = ObjectState.from_listing(obj)
                encoded = new.encode()
                if stored.pop(OBJECT_PREFIX + key, None) == encoded:
                    continue
                new_since = since is not None and new.epoch >= since
                if (emit or new_since) and self._cfg.event_selected(_PUT):
                    version = await self._version_id(key, new) if versioned else None
                    await self._emit(_PUT, key, new, version)
                    stats.created += 1
                else:
                    silent[OBJECT_PREFIX + key] = encoded
            await self._flush(silent, stats, force=False)
        for ckey in stored:
            key = ckey[len(OBJECT_PREFIX) :]
            if not self._cfg.key_matches(key):
                continue  # outside the rules (they changed): not ours to delete
            # Not emitting: stored by an interrupted first listing, so gone since the start.
            if self._cfg.event_selected(_DELETE):
                await self._emit(_DELETE, key, None, None)
                stats.deleted += 1
            else:
                silent[ckey] = None
            await self._flush(silent, stats, force=False)
        await self._flush(silent, stats, force=True)
        await self._drained.wait()
        if initialized is None:
            await self._write({INITIALIZED_KEY: "1"})
        self.scans += 1
        self.scan_done.set()
        return stats

    async def _flush(self, silent: dict[str, str | None], stats: ScanStats, *, force: bool) -> None:
        if silent and (force or len(silent) >= _SILENT_CHUNK):
            await self._write(silent)
            stats.silent += len(silent)
            silent.clear()

    async def _pages(self) -> AsyncIterator[list[JSONDict]]:
        paginator = self._client.get_paginator("list_objects_v2")
        kwargs: dict[str, Any] = {
            "Bucket": self._cfg.bucket,
            "PaginationConfig": {"PageSize": self._cfg.page_size},
        }
        if self._cfg.prefix:
            kwargs["Prefix"] = self._cfg.prefix
        async for page in paginator.paginate(**kwargs):
            problem = not_an_answer(page, "Name")
            if problem is not None:
                # botocore parses any 200 body (a web page too) into an empty listing: taken
                # as one, every object known would get an ObjectRemoved:Delete.
                raise NotAListingError(f"ListObjectsV2 of bucket {self._cfg.bucket}: {problem}")
            yield list(page.get("Contents", []))

    async def _latest_from(self) -> float | None:
        """When an interrupted first listing (LATEST) started; None for the very first one,
        which stores when it starts (fenced when leading) for the one that may redo it."""
        saved = await self._ctx.state.get_checkpoint(self._scope, LATEST_FROM_KEY)
        if saved is not None:
            with contextlib.suppress(ValueError):
                return float(saved)
        since = float(math.floor(self._ctx.clock.time() - 1.0))
        await self._write({LATEST_FROM_KEY: f"{since:.0f}"})
        return None

    async def _versioned(self) -> bool:
        try:
            response = await self._client.get_bucket_versioning(Bucket=self._cfg.bucket)
        except asyncio.CancelledError:
            raise
        except Exception:  # servers without versioning support: no versionId
            return False
        return response.get("Status") in ("Enabled", "Suspended")

    async def _version_id(self, key: str, listed: ObjectState) -> str | None:
        """The current version's id (HEAD), if it is still the object that was listed."""
        try:
            head = await self._client.head_object(Bucket=self._cfg.bucket, Key=key)
        except asyncio.CancelledError:
            raise
        except Exception:  # gone or unreadable since the listing: no versionId
            return None
        if str(head.get("ETag", "")).strip('"') != listed.etag:
            return None
        version = head.get("VersionId")
        return str(version) if version and version != "null" else None

    async def _emit(
        self, event_name: str, key: str, new: ObjectState | None, version_id: str | None
    ) -> None:
        now = self._ctx.clock.time()
        sequencer = self._seq.next()
        payload = s3_event_record(
            event_name=event_name,
            bucket=self._cfg.bucket,
            key=key,
            size=new.size if new else None,
            etag=new.etag if new else None,
            sequencer=sequencer,
            event_time=new.epoch if new and new.epoch else now,
            region=self._region,
            configuration_id=self._cfg.configuration_id,
            version_id=version_id,
            principal_id=self._owner,
            request_id=new_request_id(),
            host_id=new_host_id(),
        )
        record = Record(
            payload=payload,
            item_id=sequencer,
            size=len(orjson.dumps(payload)),
            created_at=now,
            checkpoint={
                OBJECT_PREFIX + key: new.encode() if new else None,
                SEQUENCER_KEY: sequencer,
            },
        )
        self._outstanding += 1
        self._drained.clear()
        await self._ready.put(record)
