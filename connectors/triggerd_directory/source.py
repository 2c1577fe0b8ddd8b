"""The `directory` source: file changes in a local directory as S3 event notifications.

How it works:
- A watcher task (watchfiles, or our own rescan every `poll_interval_s`) marks changed paths
  dirty. A settle task stats dirty paths and promotes a path once its state (size, mtime, or
  absence) has not changed for `stable_s`: a file still being written is delivered once,
  complete. With notifications, a file's status change time (ctime) at the first stat says
  how long it has already been left alone, so a file written and closed earlier in a burst
  need not wait `stable_s` more from when we first looked. Settled changes become records in
  a bounded ready queue; when it is full, paths simply stay dirty (coalesced per path,
  nothing lost).
- `_known` is what consumers have been (or are being) told about each file. It is updated when a
  record is created; the record's checkpoint carries the same state, and the pipeline commits
  it atomically with the enqueue. At start the persisted checkpoints are diffed against a scan,
  so changes made while the daemon was down are delivered, and delivered ones are not replayed.
- `eventTime` (and the record's `created_at`) is when the change was seen settled, not the
  file's mtime: tools such as `cp -p`, tar and rsync preserve old mtimes, which would make a
  fresh event look hours old to the maximum-event-age check.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import itertools
import logging
import os
from collections import Counter
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, NamedTuple

import orjson

from triggerd.config.plugins import import_extra
from triggerd.delivery.ready import ReadyRecords
from triggerd.events.s3 import Sequencer, s3_event_record
from triggerd.types import BaseSource, ConfigError, Record, SourceContext

from .config import DirectorySourceConfig, bucket_name_for
from .paths import (
    Examined,
    FileStat,
    Hashed,
    Observed,
    PathFilter,
    PathState,
    Probe,
    ScanStopped,
    StopFlag,
    examine_many,
    is_temporary,
    observe_many,
    scan_tree,
)

INITIALIZED_KEY = "meta:initialized"
SEQUENCER_KEY = "meta:sequencer"
FILE_PREFIX = "f:"

#: Paths stat-ed per settle pass.
_STAT_BATCH = 2000
#: Settled paths confirmed (and files hashed) per thread hand-off: their records are handed
#: out before the next ones.
_SETTLE_FILES = 512
#: Records made between two turns of the event loop while a hand-off's records are made.
_YIELD_EVERY = 128
#: Bytes hashed per thread hand-off before yielding back to the loop.
_HASH_BUDGET_BYTES = 16 * 1024 * 1024
#: How long stop() lets the watcher thread notice the stop event before cancelling it.
_WATCH_STOP_GRACE_S = 2.0
_WATCH_RETRY_MAX_S = 30.0
#: How often a watch checks that its path still leads to the directory it watches: no
#: notification tells of a symlink re-pointed or a file system mounted on the path (a
#: daemon started before its mount watched the empty mount point). A stat every 5 s.
ROOT_CHECK_MS = 5_000
#: After a rescan found changes: how long the notifications of changes made just before it
#: may still take to arrive (the watcher's 100 ms debounce, a busy event loop). A change
#: notified by then is not reported as one the notifications missed.
_NOTIFY_LAG_S = 1.0
#: Paths named in a `directory.rescan_found` line (the count is of all of them).
_RESCAN_PATHS_LOGGED = 10
#: How long a rescan waits, beyond `stable_s`, for the paths it marked to settle before it
#: reports what it found (the ones still unsettled by then are left out of the report).
_SETTLE_WAIT_S = 30.0
#: Paths compared between two turns of the event loop while a rescan diffs its scan.
_DIFF_YIELD_EVERY = 5000
#: A ctime more than this much older than the notification that marked its path is not
#: believed (a clock stepped, or a filesystem stamping another clock's time): the path then
#: waits `stable_s` from our first stat, as in polling mode. The watcher hands changes over
#: up to 100 ms (its debounce) after they happen, later when the event loop is busy.
_CTIME_SLACK_S = 1.0
#: The kernel stamps ctimes from a coarse clock (a scheduler tick, up to 10 ms on common
#: configurations) that lags the time we read: count a change as that much later.
_CTIME_TICK_S = 0.01


def _import_watchfiles() -> ModuleType:
    return import_extra("watchfiles", "directory", "the directory source")


class _RootReplaced(Exception):
    """The watched directory itself was deleted, moved away or replaced, or its path leads
    to another directory now: the watch follows the old directory, and would see nothing of
    the one at the path since."""


def watch_problem(exc: Exception) -> str | None:
    """One line for a watch failure the operator can act on (an inotify limit, the
    directory gone), or None for any other failure (logged with its traceback)."""
    if isinstance(exc, _RootReplaced):
        return (
            "the directory was deleted, moved or replaced, or its path leads elsewhere now "
            "(a symlink re-pointed, a file system mounted on it): watching the path again"
        )
    if isinstance(exc, FileNotFoundError):
        return "the directory does not exist (deleted?): watching it again once it does"
    return inotify_limit(exc)


def inotify_limit(exc: Exception) -> str | None:
    """What to tell the operator when a watcher could not start because the kernel's inotify
    limits (per user) are used up, or None for any other failure. watchfiles reports these
    as an OSError ("OS file watch limit reached") and as its WatchfilesRustInternalError
    ("Too many open files (os error 24)"), with no errno: told apart by their text."""
    text = str(exc)
    if "watch limit reached" in text:
        return (
            "the inotify watch limit is reached (one watch per watched directory): raise the "
            "sysctl fs.inotify.max_user_watches, or set poll_interval_s for this trigger"
        )
    if "Too many open files" in text or "os error 24" in text:
        return (
            "no inotify instance could be opened (Too many open files; one per directory "
            "trigger): raise the sysctl fs.inotify.max_user_instances (or the open-file "
            "limit, LimitNOFILE=), or set poll_interval_s for this trigger"
        )
    return None


@contextlib.contextmanager
def _own_watch_thread() -> Iterator[None]:
    """Add one thread to the event loop's default anyio thread limiter while a watcher runs.

    watchfiles' `awatch` runs its blocking watch with `anyio.to_thread.run_sync`, which holds a
    token of that limiter (40 per event loop) for the whole watch, up to its 5 s timeout, and
    takes one again at once. Without a token of its own per watcher, the 41st directory
    trigger of a daemon would wait for another watcher's timeout and see its changes seconds
    late; anything else running on anyio's threads would wait too. The one and minus one
    assume that nothing else in the process resizes this limiter (nothing in the daemon
    does)."""
    from anyio import to_thread  # after watchfiles, which depends on it

    limiter = to_thread.current_default_thread_limiter()
    limiter.total_tokens += 1
    try:
        yield
    finally:
        limiter.total_tokens = max(1, limiter.total_tokens - 1)


@dataclass(frozen=True, slots=True)
class FileCheckpoint:
    """What consumers were told about a file (persisted as compact JSON)."""

    mtime_ns: int
    size: int
    etag: str | None

    @property
    def stat(self) -> FileStat:
        return (self.mtime_ns, self.size)

    def encode(self) -> str:
        # orjson writes the same compact text as json.dumps(separators=(",", ":")) at a
        # tenth of the cost: one checkpoint is encoded per event.
        return orjson.dumps(
            {"mtime_ns": self.mtime_ns, "size": self.size, "etag": self.etag}
        ).decode()

    @classmethod
    def decode(cls, text: str) -> FileCheckpoint | None:
        try:
            data = orjson.loads(text)
            return cls(int(data["mtime_ns"]), int(data["size"]), data.get("etag"))
        except (ValueError, TypeError, KeyError):
            return None


class ResponseIds:
    """Random `x-amz-request-id` and `x-amz-id-2` values for records, in the formats of
    `new_request_id` and `new_host_id` (16 upper-case hex digits; 64 base64 characters), cut
    from one `os.urandom` read per `batch` records: a read per id was a seventh of the event
    loop's time per event. The read is encoded once per batch and sliced: 8 random bytes are
    16 hex digits, and 48 (a multiple of 3) are exactly 64 base64 characters, so a slice of
    the whole encoding is the encoding of its bytes."""

    _REQUEST_BYTES = 8
    _HOST_BYTES = 48

    def __init__(self, batch: int = 64) -> None:
        self._batch = max(1, batch)
        self._request_ids = ""
        self._host_ids = ""
        self._left = 0

    def next(self) -> tuple[str, str]:
        if self._left == 0:
            raw = os.urandom((self._REQUEST_BYTES + self._HOST_BYTES) * self._batch)
            split = self._REQUEST_BYTES * self._batch
            self._request_ids = raw[:split].hex().upper()
            self._host_ids = base64.b64encode(raw[split:]).decode("ascii")
            self._left = self._batch
        self._left -= 1
        i = self._left
        return self._request_ids[16 * i : 16 * i + 16], self._host_ids[64 * i : 64 * i + 64]


def _examine_and_observe(
    root: str,
    items: list[tuple[str, PathState, bool]],
    probes: list[Probe],
    max_ctime_ns: int,
    max_hashed: int,
) -> tuple[dict[str, Examined], dict[str, Observed]]:
    """`examine_many` of the paths to settle and `observe_many` of the fresh ones, in one
    thread hand-off and one byte budget."""
    found = examine_many(root, items, _HASH_BUDGET_BYTES) if items else {}
    read = sum(
        state[1]
        for state, hashed in found.values()
        if isinstance(hashed, Hashed) and isinstance(state, tuple)
    )
    budget = _HASH_BUDGET_BYTES - read
    return found, observe_many(root, probes, max_ctime_ns, budget, max_hashed)


def _scan_root(root: str, path_filter: PathFilter, stop: StopFlag) -> dict[str, FileStat]:
    """`scan_tree` of a rescan, which first makes sure the directory can be listed:
    `scan_tree` skips a directory it cannot list, and every file would seem deleted."""
    with os.scandir(root):
        pass
    return scan_tree(root, path_filter, stop=stop)


def _named(rel: str, notified: set[str]) -> bool:
    """Whether a notification named `rel` or a directory above it."""
    path = rel
    while path:
        if path in notified:
            return True
        path = path.rpartition("/")[0]
    return False


def _identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of the directory at `path`, None when there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


#: A stat of the watched path failing with these: it leads to no directory now.
_GONE_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.ESTALE})


def _leads_elsewhere(path: str, watched: tuple[int, int] | None) -> bool:
    """Whether `path` no longer leads to the directory `watched`. A stat that fails
    otherwise (EIO, a network file system's timeout, EACCES) tells nothing of where it
    leads: the watch, on its directory still, goes on, and the next check looks again."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return exc.errno in _GONE_ERRNOS
    return (st.st_dev, st.st_ino) != watched


@dataclass(slots=True)
class _Observation:
    state: PathState
    since: float


class _Handle(NamedTuple):
    """A record's ack handle (a tuple: built once per record, cheaper than a frozen
    dataclass)."""

    rel: str
    sequencer: str


class DirectorySource(BaseSource):
    def __init__(
        self, config: DirectorySourceConfig, ctx: SourceContext, *, max_ready: int = 1000
    ) -> None:
        self._cfg = config
        self._ctx = ctx
        self._log = ctx.log
        self._scope = ctx.trigger
        self._root = os.path.abspath(config.path)
        self._real_root = os.path.realpath(config.path)
        self._root_prefixes = (self._root + os.sep, self._real_root + os.sep)
        self.bucket = config.bucket or bucket_name_for(config.path)
        self._region = config.region or ctx.region
        self._owner = config.account_id or ctx.account_id
        self._filter = PathFilter(
            config.include,
            config.exclude,
            ignore_temporary=config.ignore_temporary,
            recursive=config.recursive,
        )
        self._max_ready = max(1, max_ready)
        self._known: dict[str, FileCheckpoint] = {}
        #: Directories holding known files (with counts), to find what a vanished one held.
        self._known_dirs: Counter[str] = Counter()
        self._dirty: dict[str, None] = {}  # insertion-ordered set
        self._observed: dict[str, _Observation] = {}
        #: The dirty paths not observed (stat-ed) since they were marked, with when they were
        #: marked (monotonic).
        self._fresh: dict[str, float] = {}
        #: Notifications (not our own polling, meant for network filesystems whose ctimes
        #: come from the server's clock) let a file's ctime start its stability timer.
        self._use_ctime = config.poll_interval_s is None
        self._ready = ReadyRecords()
        self._dirty_event = asyncio.Event()
        self._stop_event = asyncio.Event()
        self._latest: dict[str, str] = {}
        self._outstanding: dict[str, int] = {}
        self._seq = Sequencer(ctx.clock.time)
        self._ids = ResponseIds()
        self._watch_task: asyncio.Task[None] | None = None
        self._settle_task: asyncio.Task[None] | None = None
        self._rescan_task: asyncio.Task[None] | None = None
        #: While a rescan looks for missed changes: the paths notified since it started.
        self._notified: set[str] | None = None
        #: Paths that could not be read, with the state they had: a rescan leaves them alone
        #: until they change (a notification, or another state).
        self._unreadable: dict[str, PathState] = {}
        #: Directories whose files `_expand` is looking at (a thread hand-off).
        self._expanding: set[str] = set()
        #: Whether the watcher is running, and how many times it was set up (a rescan's
        #: report names the cause accordingly).
        self._watching = False
        self._watch_starts = 0
        #: The diffs run once a watch is set up again after a failure.
        self._resyncs: set[asyncio.Task[None]] = set()

    # ---- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        if not await asyncio.to_thread(os.path.isdir, self._root):
            raise ConfigError([f"trigger {self._scope}: {self._root} is not a directory"])
        self._stop_event.clear()
        try:
            await self._start_watching()
        except BaseException:
            await self.stop()
            raise
        self._settle_task = asyncio.create_task(
            self._settle_loop(), name=f"directory-settle:{self._scope}"
        )
        self._log.info(
            "directory.started",
            extra={
                "trigger": self._scope,
                "path": self._root,
                "bucket": self.bucket,
                "files": len(self._known),
                "pending": len(self._dirty),
            },
        )

    async def _start_watching(self) -> None:
        """Start the watch, then load checkpoints and scan, so no change falls in between."""
        interval = self._cfg.poll_interval_s
        if interval is not None:
            scan = await self._load()
            self._watch_task = asyncio.create_task(
                self._poll_loop(interval, scan), name=f"directory-poll:{self._scope}"
            )
            return
        watchfiles = _import_watchfiles()
        watched = await asyncio.to_thread(_identity, self._root)
        self._watch_task = asyncio.create_task(
            self._watch_loop(watchfiles, watched), name=f"directory-watch:{self._scope}"
        )
        # One loop turn lets the watcher register (awatch sets up its watches before its first
        # await), so nothing changed between the scan below and the watch goes unseen.
        await asyncio.sleep(0)
        if self._watch_task.done():
            self._watch_task.result()
        await self._load()
        if self._cfg.rescan_interval_s > 0:
            self._rescan_task = asyncio.create_task(
                self._rescan_loop(self._cfg.rescan_interval_s),
                name=f"directory-rescan:{self._scope}",
            )

    async def stop(self) -> None:
        self._stop_event.set()
        settle, self._settle_task = self._settle_task, None
        watch, self._watch_task = self._watch_task, None
        rescan, self._rescan_task = self._rescan_task, None
        for task in (settle, rescan, *self._resyncs):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if watch is not None:
            try:
                await asyncio.wait_for(asyncio.shield(watch), _WATCH_STOP_GRACE_S)
            except TimeoutError:
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch
            except Exception:  # already logged by the watch loop's boundary
                pass
        self._ready.wake()

    # ---- Source protocol ------------------------------------------------------------------

    async def receive(self, max_records: int, timeout_s: float) -> list[Record]:
        return await self._ready.take(max_records, timeout_s)

    async def ack(self, records: Sequence[Record]) -> None:
        for record in records:
            if isinstance(record.handle, _Handle):
                self._settled(record.handle)

    async def nack(self, records: Sequence[Record]) -> None:
        """Give records back: they are handed out again, first. A record for a file that has a
        newer record since is re-delivered without its file checkpoint, so committing it late
        cannot roll the file's state back."""
        for record in reversed(records):
            handle = record.handle
            if not isinstance(handle, _Handle):
                continue
            checkpoint = record.checkpoint
            if self._latest.get(handle.rel) != handle.sequencer:
                checkpoint = {INITIALIZED_KEY: "1"}
            self._ready.push_front(
                Record(
                    payload=record.payload,
                    item_id=record.item_id,
                    size=record.size,
                    created_at=record.created_at,
                    key=record.key,
                    handle=handle,
                    attempts=record.attempts,
                    checkpoint=checkpoint,
                )
            )

    def _settled(self, handle: _Handle) -> None:
        left = self._outstanding.get(handle.rel, 0) - 1
        if left > 0:
            self._outstanding[handle.rel] = left
        else:
            self._outstanding.pop(handle.rel, None)
            self._latest.pop(handle.rel, None)

    # ---- start-up diff ----------------------------------------------------------------------

    async def _load(self) -> dict[str, FileStat]:
        state = self._ctx.state
        stored = await state.list_checkpoints(self._scope, FILE_PREFIX)
        initialized = await state.get_checkpoint(self._scope, INITIALIZED_KEY)
        self._seq = Sequencer(
            self._ctx.clock.time, await state.get_checkpoint(self._scope, SEQUENCER_KEY)
        )
        for key, value in stored.items():
            rel = key[len(FILE_PREFIX) :]
            checkpoint = FileCheckpoint.decode(value)
            if checkpoint is not None and self._filter.matches(rel):
                self._remember(rel, checkpoint)
        scan = await asyncio.to_thread(scan_tree, self._root, self._filter)
        if initialized is None:
            baseline: dict[str, str | None] = {INITIALIZED_KEY: "1"}
            if self._cfg.starting_position == "LATEST":
                for rel, (mtime_ns, size) in scan.items():
                    self._remember(rel, FileCheckpoint(mtime_ns, size, None))
                    baseline[FILE_PREFIX + rel] = self._known[rel].encode()
            await state.set_checkpoints(self._scope, baseline)
        self._diff(scan)
        return scan

    def _diff(self, scan: dict[str, FileStat]) -> None:
        now = self._ctx.clock.monotonic()
        for rel, st in scan.items():
            known = self._known.get(rel)
            if known is None or known.stat != st:
                self._mark(rel, _Observation(st, now))
        for rel in self._known.keys() - scan.keys():
            self._mark(rel, _Observation(None, now))

    # ---- watching -----------------------------------------------------------------------

    async def _watch_loop(self, watchfiles: ModuleType, watched: tuple[int, int] | None) -> None:
        with _own_watch_thread():
            await self._watch(watchfiles, watched)

    async def _watch(self, watchfiles: ModuleType, watched: tuple[int, int] | None) -> None:
        """Watch until stopped. `watched`: the identity of the directory the watch is set on
        (read before: a thread hand-off between the caller's scan and `awatch` would let a
        change fall between them). After a failure, the watch is set up again after a pause,
        and the tree diffed once it is (what changed while there was none)."""
        delay = 1.0
        resync = False
        while not self._stop_event.is_set():
            try:
                if watched is None:
                    # awatch would watch nothing, without a word (ignore_permission_denied
                    # hides its FileNotFoundError): a missing directory is a failed attempt.
                    raise FileNotFoundError(self._root)
                if resync:
                    # Runs at awatch's first await, once its watch is set up.
                    task = asyncio.create_task(self._resync())
                    self._resyncs.add(task)
                    task.add_done_callback(self._resyncs.discard)
                self._watching = True
                self._watch_starts += 1
                checked = self._ctx.clock.monotonic()
                async for changes in watchfiles.awatch(
                    self._root,
                    watch_filter=None,
                    debounce=100,
                    step=20,
                    stop_event=self._stop_event,
                    recursive=self._cfg.recursive,
                    force_polling=False,
                    ignore_permission_denied=True,
                    rust_timeout=ROOT_CHECK_MS,
                    yield_on_timeout=True,  # an empty set: time to check the root
                ):
                    if changes:
                        self._on_changes(changes)
                        delay = 1.0
                    named = self._root_named(changes, watchfiles.Change.deleted)
                    due = self._ctx.clock.monotonic() - checked >= ROOT_CHECK_MS / 1000
                    if due:
                        checked = self._ctx.clock.monotonic()
                    if named == "deleted" or (
                        (named == "changed" or due)
                        and await asyncio.to_thread(_leads_elsewhere, self._root, watched)
                    ):
                        # (A directory made again at once may get the same inode: a
                        # deletion restarts the watch whatever the identity says.)
                        raise _RootReplaced
                return
            except Exception as exc:  # task boundary: log, resync after a pause, watch again
                self._watching = False
                extra = {"trigger": self._scope, "path": self._root, "retry_in_s": delay}
                problem = watch_problem(exc)
                if problem is not None:  # the host's doing, not a bug: one line, no traceback
                    self._log.error("directory.watch_failed", extra={**extra, "error": problem})
                else:
                    self._log.exception("directory.watch_failed", extra=extra)
            stopped = await self._stopped_after(delay)
            delay = min(delay * 2, _WATCH_RETRY_MAX_S)
            if not stopped:
                watched = await asyncio.to_thread(_identity, self._root)
                resync = True

    async def _resync(self) -> None:
        """Diff the tree against what consumers know (after the watch was set up again); a
        directory that cannot be listed is left for the watch's next attempt."""
        with contextlib.suppress(OSError, ScanStopped):
            scan = await asyncio.to_thread(_scan_root, self._root, self._filter, self._stop_event)
            await self._diff_settled(scan)

    async def _poll_loop(self, interval_s: float, previous: dict[str, FileStat]) -> None:
        """Polling mode: rescan every `interval_s` and mark what differs from the last scan.

        Our own scan rather than watchfiles' polling mode, whose poller compares mtimes in
        whole seconds and misses a second change to a file within the same second."""
        while not await self._stopped_after(interval_s):
            try:
                current = await asyncio.to_thread(
                    scan_tree, self._root, self._filter, "", self._stop_event
                )
            except ScanStopped:
                break
            except Exception:  # task boundary: log and poll again
                self._log.exception(
                    "directory.poll_failed", extra={"trigger": self._scope, "path": self._root}
                )
                continue
            for rel, st in current.items():
                if previous.get(rel) != st:
                    self._mark(rel, None)
            for rel in previous.keys() - current.keys():
                self._mark(rel, None)
            previous = current

    async def _stopped_after(self, seconds: float) -> bool:
        """Wait `seconds`, or less when the source stops; whether it is stopping."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stop_event.wait()
        return self._stop_event.is_set()

    async def _rescan_loop(self, interval_s: float) -> None:
        """Notifications can miss changes without a word, and watchfiles reports neither
        case: it drops the kernel's queue overflow (an event without a path), and a
        directory created once `fs.inotify.max_user_watches` is reached is never watched.
        Every `interval_s`, the tree is scanned again and what differs from what consumers
        know is settled as at start; the changes no notification told are logged."""
        while not await self._stopped_after(interval_s):
            try:
                await self._rescan()
            except ScanStopped:
                return
            except OSError as exc:  # the directory unreadable or gone: one line, next time
                self._log.warning(
                    "directory.rescan_failed",
                    extra={"trigger": self._scope, "path": self._root, "error": str(exc)},
                )
            except Exception:  # task boundary: log and rescan at the next interval
                self._log.exception("directory.rescan_failed", extra={"trigger": self._scope})

    async def _rescan(self) -> None:
        """One rescan. What it marks is settled as any change; once that is over, the paths
        whose settlement changed what consumers know (a record, or a quiet checkpoint), and
        that no notification named meanwhile (nor a directory above them), are reported."""
        notified: set[str] = set()
        self._notified = notified
        watch = (self._watching, self._watch_starts)
        try:
            scan = await asyncio.to_thread(_scan_root, self._root, self._filter, self._stop_event)
            found = await self._diff_settled(scan)
            if not found:
                return
            before = {rel: self._known.get(rel) for rel in found}
            await self._until_settled(found)
        finally:
            self._notified = None
        if self._stop_event.is_set():
            return  # cut short: notifications may still have been on their way
        missed = sorted(
            rel
            for rel in found
            if self._known.get(rel) != before[rel] and not _named(rel, notified)
        )
        if not missed:
            return
        if watch == (True, self._watch_starts) and self._watching:
            reason = (
                "no notification came for these changes: the kernel's inotify queue "
                "overflowed (fs.inotify.max_queued_events), or a new directory could not be "
                "watched (fs.inotify.max_user_watches: raised, it watches the directories left "
                "out from the trigger's next start)"
            )
        else:
            reason = "the watch was not running all along (see directory.watch_failed)"
        self._log.warning(
            "directory.rescan_found",
            extra={
                "trigger": self._scope,
                "path": self._root,
                "changes": len(missed),
                "paths": missed[:_RESCAN_PATHS_LOGGED],
                "reason": reason,
            },
        )

    async def _diff_settled(self, scan: dict[str, FileStat]) -> list[str]:
        """`_diff` of a rescan, for the paths not being settled already (their own changes
        are under way, or a directory above them is being looked at) and not left as they
        were when they could not be read; the paths it marked. Yields to the loop now and
        then: a tree of a million files takes most of a second."""
        found: list[str] = []
        known, unreadable = self._known, self._unreadable
        for rel in [rel for rel in unreadable if rel not in scan]:
            del unreadable[rel]  # gone (its notification may have been lost)
        for i, (rel, st) in enumerate(scan.items(), 1):
            checkpoint = known.get(rel)
            if (checkpoint is None or checkpoint.stat != st) and unreadable.get(rel) != st:
                found.append(rel)
            if i % _DIFF_YIELD_EVERY == 0:
                await asyncio.sleep(0)
        for i, rel in enumerate(list(known), 1):
            if rel not in scan:
                found.append(rel)
            if i % _DIFF_YIELD_EVERY == 0:
                await asyncio.sleep(0)
        now = self._ctx.clock.monotonic()
        marked: list[str] = []
        for rel in found:
            if self._settling(rel):
                continue
            state = scan.get(rel)
            if state is None and rel not in known:
                continue  # settled meanwhile
            self._mark(rel, _Observation(state, now))
            marked.append(rel)
        return marked

    def _settling(self, rel: str) -> bool:
        """Whether `rel`, or a directory above it, is dirty or being expanded."""
        dirty, expanding = self._dirty, self._expanding
        path = rel
        while path:
            if path in dirty or path in expanding:
                return True
            path = path.rpartition("/")[0]
        return False

    async def _until_settled(self, paths: list[str]) -> None:
        """Wait until none of `paths` is dirty any more (and at least for the notifications
        of changes made just before the scan), or the trigger stops; bounded."""
        # (a path that changed again after the scan settles `stable_s` after that change)
        bound = _NOTIFY_LAG_S + 2 * self._cfg.stable_s + _SETTLE_WAIT_S
        deadline = self._ctx.clock.monotonic() + bound
        wait = _NOTIFY_LAG_S
        while not await self._stopped_after(wait):
            if self._ctx.clock.monotonic() >= deadline:
                return
            if not any(rel in self._dirty for rel in paths):
                return
            wait = 0.1

    def _root_named(self, changes: set[tuple[Any, str]], deleted: Any) -> str | None:
        """ "deleted" when a change deletes the watched directory itself, "changed" when one
        names it otherwise (moved, its attributes changed: its identity is looked at
        again), else None."""
        roots = (self._root, self._real_root)
        named = None
        for change, path in changes:
            if path in roots:
                if change == deleted:
                    return "deleted"
                named = "changed"
        return named

    def _on_changes(self, changes: set[tuple[Any, str]]) -> None:
        ignore_temporary, recursive = self._cfg.ignore_temporary, self._cfg.recursive
        relative, mark = self._relative, self._mark
        now = self._ctx.clock.monotonic()
        notified = self._notified
        for _change, path in changes:
            rel = relative(path)
            if rel is None or (ignore_temporary and is_temporary(rel)):
                continue
            if not recursive and "/" in rel:
                continue
            mark(rel, None, now)
            if notified is not None:
                notified.add(rel)

    def _relative(self, path: str) -> str | None:
        for prefix in self._root_prefixes:
            if path.startswith(prefix):
                rel = path[len(prefix) :]
                return rel if os.sep == "/" else rel.replace(os.sep, "/")
        return None

    def _mark(self, rel: str, observation: _Observation | None, now: float | None = None) -> None:
        """Mark a path dirty; a fresh change (no observation) restarts its stability timer."""
        self._dirty[rel] = None
        if observation is None:
            self._unreadable.pop(rel, None)
            self._observed.pop(rel, None)
            self._fresh[rel] = self._ctx.clock.monotonic() if now is None else now
        else:
            self._observed[rel] = observation
            self._fresh.pop(rel, None)
        self._dirty_event.set()

    def _observe(self, rel: str, state: PathState, now: float) -> None:
        self._observed[rel] = _Observation(state, now)
        self._fresh.pop(rel, None)

    def _forget(self, rel: str) -> None:
        self._dirty.pop(rel, None)
        self._observed.pop(rel, None)
        self._fresh.pop(rel, None)

    # ---- settling -----------------------------------------------------------------------

    @property
    def _tick_s(self) -> float:
        return min(max(self._cfg.stable_s / 4, 0.01), 0.1)

    async def _settle_loop(self) -> None:
        while True:
            if not self._dirty:
                self._dirty_event.clear()
                await self._dirty_event.wait()
                continue
            self._dirty_event.clear()  # a change marked from here on wakes the next pass
            try:
                delay = await self._settle_once()
            except Exception:  # task boundary: log and keep going
                self._log.exception("directory.settle_failed", extra={"trigger": self._scope})
                delay = self._tick_s
            await self._pause(delay)

    async def _pause(self, delay_s: float) -> None:
        """Wait until the next pass is due, or less when a fresh change is marked: a fixed
        tick made each change wait up to a tick to be stat-ed and again to settle."""
        if self._dirty_event.is_set():
            await asyncio.sleep(0)
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(delay_s, 0.001)):
                await self._dirty_event.wait()

    def _stable_due(self) -> list[str]:
        """Observed dirty paths whose observation is `stable_s` old (at most `_STAT_BATCH`).
        One observed more recently cannot settle yet, and a change to it before then
        re-marks it (the watcher or the poll drops its observation), so stat-ing it early
        only cost a stat per path."""
        due: list[str] = []
        horizon = self._ctx.clock.monotonic() - self._cfg.stable_s
        observed = self._observed
        for rel in self._dirty:
            obs = observed.get(rel)
            if obs is not None and obs.since <= horizon:
                due.append(rel)
                if len(due) >= _STAT_BATCH:
                    break
        return due

    def _next_due_in(self) -> float:
        """Seconds until a dirty path is due to be stat-ed (0 for one not observed yet)."""
        if self._fresh:
            return 0.0
        earliest: float | None = None
        for obs in map(self._observed.get, self._dirty):
            if obs is not None and (earliest is None or obs.since < earliest):
                earliest = obs.since
        if earliest is None:
            return self._tick_s
        return earliest + self._cfg.stable_s - self._ctx.clock.monotonic()

    async def _settle_once(self) -> float:
        """Settle the paths due, observe fresh ones; returns the seconds to the next pass."""
        stable = self._stable_due()
        room_left = await self._settle_stable(stable) if stable else True
        if self._fresh:
            found, early = await self._examine([])
            if early:
                await self._settle_found(early, found)
        if not room_left:
            return self._tick_s  # the ready queue is full: look again in a tick
        return self._next_due_in()

    async def _examine(
        self, settle: list[tuple[str, _Observation, bool]]
    ) -> tuple[dict[str, Examined], list[tuple[str, _Observation, bool]]]:
        """One thread hand-off: confirm (and hash) the paths to settle, and stat the fresh
        paths marked so far, so a burst of changes seen while earlier ones are being
        settled starts its stability timer at once rather than after them. Fresh files
        whose ctime shows them left alone for `stable_s` already are hashed in the same
        pass (as many as the ready queue and one hand-off take): returned as more paths to
        settle, with what was found for them."""
        fresh = list(itertools.islice(self._fresh.items(), _STAT_BATCH))
        items = [(rel, obs.state, want) for rel, obs, want in settle]
        now, wall = self._ctx.clock.monotonic(), self._ctx.clock.time()
        early_room = min(self._max_ready - len(self._ready), _SETTLE_FILES) - len(items)
        probes = [self._probe(rel, marked, now, wall, early_room > 0) for rel, marked in fresh]
        max_ctime_ns = int((wall - self._cfg.stable_s - _CTIME_TICK_S) * 1e9)
        found, seen = await asyncio.to_thread(
            _examine_and_observe, self._root, items, probes, max_ctime_ns, max(early_room, 0)
        )
        now, wall = self._ctx.clock.monotonic(), self._ctx.clock.time()
        early: list[tuple[str, _Observation, bool]] = []
        young: list[str] = []
        due = latest = now - self._cfg.stable_s  # latest: of the paths not due yet
        for rel, marked in fresh:
            # One marked again meanwhile may have changed after our stat: the next pass.
            if self._fresh.get(rel) != marked or rel not in seen:
                continue
            state, ctime_ns, hashed = seen[rel]
            since = self._unchanged_since(now, wall, marked, ctime_ns)
            self._observe(rel, state, since)
            if hashed is not None:
                found[rel] = (state, hashed)
                early.append((rel, self._observed[rel], True))
            elif since > due:
                young.append(rel)
                latest = max(latest, since)
        # The paths not settled yet are timed from the latest change among them, so they
        # come due together as one pass (as a watcher batch timed from our stat did), not
        # one by one: that is a hand-off, and a commit downstream, per few files.
        for rel in young:
            self._observed[rel].since = latest
        return found, early

    def _probe(self, rel: str, marked: float, now: float, wall: float, early: bool) -> Probe:
        """How to look at a fresh path: hash it at once if it is a selected file, not what
        consumers know, and its ctime is believable by `_unchanged_since`'s rule."""
        if not (early and self._use_ctime and self._filter.matches(rel)):
            return (rel, None, None)
        known = self._known.get(rel)
        min_ctime = wall - (now - marked) - _CTIME_SLACK_S
        return (rel, int(min_ctime * 1e9), known.stat if known is not None else None)

    def _unchanged_since(
        self, now: float, wall: float, marked: float, ctime_ns: int | None
    ) -> float:
        """The monotonic time from which a just-stat-ed path is known unchanged: its ctime
        when that is believable (not in the future, and not long before the notification
        that marked the path), else now."""
        if ctime_ns is None or not self._use_ctime:
            return now
        age = wall - ctime_ns / 1e9 - _CTIME_TICK_S
        if age <= 0.0 or age > now - marked + _CTIME_SLACK_S:
            return now
        return now - age

    async def _settle_stable(self, paths: list[str]) -> bool:
        """Confirm each path still has its observed state and hash the files among them,
        `_SETTLE_FILES` a thread hand-off (bounded by bytes read), and hand out each
        hand-off's records before the next: consumers commit them while the rest are
        hashed. False when the ready queue had no room for all of them."""
        for start in range(0, len(paths), _SETTLE_FILES):
            room = self._max_ready - len(self._ready)
            if room <= 0:
                return False
            items: list[tuple[str, _Observation, bool]] = []
            for rel in paths[start : start + min(room, _SETTLE_FILES)]:
                obs = self._observed.get(rel)
                if obs is not None and rel in self._dirty:
                    items.append((rel, obs, self._wants_hash(rel, obs.state)))
            found, early = await self._examine(items)
            if not await self._settle_found(items + early, found):
                return True  # over the byte budget: the rest in the next pass
            if room < _SETTLE_FILES and start + room < len(paths):
                return False
        return True

    async def _settle_found(
        self, items: list[tuple[str, _Observation, bool]], found: dict[str, Examined]
    ) -> bool:
        """Settle one hand-off's paths; False if some were not reached (the byte budget)."""
        seen_at = self._ctx.clock.time()  # when these changes were seen settled
        quiet: dict[str, str | None] = {}
        try:
            for i, (rel, obs, want) in enumerate(items, 1):
                if rel not in found:
                    return False
                if self._observed.get(rel) is not obs:
                    continue  # changed again meanwhile: observed afresh
                state, hashed = found[rel]
                if isinstance(state, tuple) or state != obs.state:
                    self._settle_examined(rel, obs, want, (state, hashed), seen_at, quiet)
                else:
                    try:
                        await self._settle(rel, obs)
                    except OSError as exc:
                        self._read_failed(rel, exc, state)
                if i % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # consumers start committing the first ones
        finally:
            if quiet:
                await self._ctx.state.set_checkpoints(self._scope, quiet)
        return True

    def _settle_examined(
        self,
        rel: str,
        obs: _Observation,
        want: bool,
        found: Examined,
        seen_at: float,
        quiet: dict[str, str | None],
    ) -> None:
        """Settle what `examine_many` found for a path, unless it changed: a file's record
        is handed out, or with events it does not emit, its checkpoint goes to `quiet`."""
        state, hashed = found
        if state != obs.state or (want and hashed is None):
            self._observe(rel, state, self._ctx.clock.monotonic())
        elif isinstance(hashed, OSError):
            self._read_failed(rel, hashed, state)
        elif isinstance(hashed, Hashed) and isinstance(state, tuple):
            self._finish_file(rel, state, hashed, seen_at, quiet)
        else:
            self._forget(rel)  # same as what consumers know, or not selected

    def _read_failed(self, rel: str, exc: OSError, state: PathState) -> None:
        """Logged once per state of the path: a rescan leaves it alone until it changes."""
        self._log.warning(
            "directory.read_failed",
            extra={"trigger": self._scope, "path": rel, "error": str(exc)},
        )
        self._forget(rel)
        self._unreadable[rel] = state

    async def _settle(self, rel: str, obs: _Observation) -> None:
        """Settle a path that is not a regular file (any more)."""
        st = obs.state
        if st == "dir":
            if rel in self._known:
                # A file consumers know became a directory: the file is gone.
                await self._settle_missing(rel)
            await self._expand(rel)
        elif st is None:
            await self._settle_missing(rel)
        else:
            self._forget(rel)

    async def _expand(self, rel: str) -> None:
        """A directory appeared or changed: look at the files in it (a directory moved in
        brings files no watch has seen)."""
        self._forget(rel)
        if not self._filter.descend(rel):
            return
        self._expanding.add(rel)
        try:
            found = await asyncio.to_thread(
                scan_tree, self._root, self._filter, rel, self._stop_event
            )
        except ScanStopped:
            return  # the source stops: its next start diffs the whole tree
        finally:
            self._expanding.discard(rel)
        now = self._ctx.clock.monotonic()
        for child, st in found.items():
            known = self._known.get(child)
            if child not in self._dirty and (known is None or known.stat != st):
                self._mark(child, _Observation(st, now))
        self._mark_known_under(rel, exclude=found.keys())

    def _remember(self, rel: str, checkpoint: FileCheckpoint | None) -> None:
        """Set (or with None, drop) what consumers know about a file."""
        had = rel in self._known
        self._unreadable.pop(rel, None)
        if checkpoint is None:
            self._known.pop(rel, None)
        else:
            self._known[rel] = checkpoint
        if had == (checkpoint is not None):
            return
        step = 1 if checkpoint is not None else -1
        parent = rel.rpartition("/")[0]
        while parent:
            self._known_dirs[parent] += step
            if self._known_dirs[parent] <= 0:
                del self._known_dirs[parent]
            parent = parent.rpartition("/")[0]

    def _mark_known_under(self, rel: str, exclude: Collection[str] = ()) -> None:
        if rel not in self._known_dirs:
            return
        prefix = rel + "/"
        for child in [k for k in self._known if k.startswith(prefix)]:
            if child not in self._dirty and child not in exclude:
                self._mark(child, None)

    async def _settle_missing(self, rel: str) -> None:
        self._forget(rel)
        if rel not in self._known:
            self._mark_known_under(rel)  # perhaps a directory went away
            return
        self._remember(rel, None)
        if "deleted" not in self._cfg.events:
            await self._ctx.state.set_checkpoints(self._scope, {FILE_PREFIX + rel: None})
            return
        now = self._ctx.clock.time()
        self._push(self._record("ObjectRemoved:Delete", rel, None, now))

    def _wants_hash(self, rel: str, st: PathState) -> bool:
        """Whether a file in state `st` would be news: selected, and not what consumers know."""
        if not isinstance(st, tuple) or not self._filter.matches(rel):
            return False
        known = self._known.get(rel)
        return known is None or known.stat != st

    def _finish_file(
        self,
        rel: str,
        st: FileStat,
        hashed: Hashed,
        seen_at: float,
        quiet: dict[str, str | None],
    ) -> None:
        if hashed.after != st:
            self._observe(rel, hashed.after, self._ctx.clock.monotonic())
            return
        known = self._known.get(rel)
        self._forget(rel)
        checkpoint = FileCheckpoint(st[0], st[1], hashed.etag)
        self._remember(rel, checkpoint)
        kind = "created" if known is None else "modified"
        if kind not in self._cfg.events:
            quiet[FILE_PREFIX + rel] = checkpoint.encode()
            return
        self._push(self._record("ObjectCreated:Put", rel, checkpoint, seen_at))

    # ---- records ------------------------------------------------------------------------

    def _record(
        self, event_name: str, rel: str, checkpoint: FileCheckpoint | None, event_time: float
    ) -> Record:
        sequencer = self._seq.next()
        request_id, host_id = self._ids.next()
        payload = s3_event_record(
            event_name=event_name,
            bucket=self.bucket,
            key=rel,
            size=checkpoint.size if checkpoint else None,
            etag=checkpoint.etag if checkpoint else None,
            sequencer=sequencer,
            event_time=event_time,
            region=self._region,
            configuration_id=self._cfg.configuration_id,
            owner_id=self._owner,
            request_id=request_id,
            host_id=host_id,
        )
        return Record(
            payload=payload,
            item_id=sequencer,
            size=len(orjson.dumps(payload)),
            created_at=event_time,
            key=None,
            handle=_Handle(rel, sequencer),
            checkpoint={
                FILE_PREFIX + rel: checkpoint.encode() if checkpoint else None,
                INITIALIZED_KEY: "1",
                SEQUENCER_KEY: sequencer,
            },
        )

    def _push(self, record: Record) -> None:
        handle: _Handle = record.handle
        self._latest[handle.rel] = handle.sequencer
        self._outstanding[handle.rel] = self._outstanding.get(handle.rel, 0) + 1
        self._ready.push(record)
        if not self._log.isEnabledFor(logging.DEBUG):
            return
        self._log.debug(
            "directory.change",
            extra={
                "trigger": self._scope,
                "path": handle.rel,
                "event": record.payload["eventName"],
                "sequencer": handle.sequencer,
            },
        )
