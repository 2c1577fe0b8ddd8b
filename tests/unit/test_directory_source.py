"""The directory source against real temporary directories and an in-memory checkpoint store."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import os
import re
import threading
import time
import types
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, cast

import pydantic
import pytest

from tests.async_source import events_of
from triggerd.events.timestamps import iso_ms
from triggerd.state.base import StateStore
from triggerd.types import Clock, ConfigError, Record, SourceContext, SystemClock
from triggerd_directory import paths as paths_module
from triggerd_directory import plugin, sample_event
from triggerd_directory import source as source_module
from triggerd_directory.config import DirectorySourceConfig, bucket_name_for
from triggerd_directory.paths import Hashed, PathFilter, examine_many, hash_file
from triggerd_directory.source import DirectorySource, ResponseIds

TRIGGER = "files"


class FakeCheckpoints:
    """The checkpoint part of StateStore, in memory."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, str], str] = {}

    async def get_checkpoint(self, scope: str, key: str) -> str | None:
        return self.data.get((scope, key))

    async def set_checkpoints(self, scope: str, items: Mapping[str, str | None]) -> None:
        for key, value in items.items():
            if value is None:
                self.data.pop((scope, key), None)
            else:
                self.data[(scope, key)] = value

    async def list_checkpoints(self, scope: str, prefix: str = "") -> dict[str, str]:
        return {k: v for (s, k), v in self.data.items() if s == scope and k.startswith(prefix)}


def make_source(
    root: Path,
    store: FakeCheckpoints,
    *,
    max_ready: int = 1000,
    clock: Clock | None = None,
    **options: Any,
) -> DirectorySource:
    config = DirectorySourceConfig.model_validate(
        {"type": "directory", "path": str(root), "stable_s": 0.1, **options}
    )
    ctx = SourceContext(
        trigger=TRIGGER,
        state=cast(StateStore, store),
        clock=clock or SystemClock(),
        log=logging.getLogger("test.directory"),
    )
    return DirectorySource(config, ctx, max_ready=max_ready)


async def deliver(
    source: DirectorySource, store: FakeCheckpoints, count: int, timeout_s: float = 5.0
) -> list[Record]:
    """Receive `count` records like the pipeline does: commit each checkpoint, then ack."""
    got: list[Record] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count and time.monotonic() < deadline:
        batch = await source.receive(count - len(got), 0.1)
        for record in batch:
            assert record.checkpoint is not None
            await store.set_checkpoints(TRIGGER, record.checkpoint)
        await source.ack(batch)
        got.extend(batch)
    assert len(got) == count, f"expected {count} records, got {len(got)}"
    return got


async def assert_quiet(source: DirectorySource, window_s: float = 0.5) -> None:
    assert await source.receive(10, window_s) == []


@pytest.fixture
def store() -> FakeCheckpoints:
    return FakeCheckpoints()


@pytest.fixture
async def running(tmp_path: Path, store: FakeCheckpoints) -> AsyncIterator[DirectorySource]:
    source = make_source(tmp_path, store)
    await source.start()
    yield source
    await source.stop()


# ---- starting position ------------------------------------------------------------------


async def test_first_start_latest_emits_nothing_for_existing_files(
    tmp_path: Path, store: FakeCheckpoints
) -> None:
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("b")
    source = make_source(tmp_path, store)
    await source.start()
    try:
        await assert_quiet(source)
    finally:
        await source.stop()
    assert set(await store.list_checkpoints(TRIGGER, "f:")) == {"f:a.txt", "f:sub/b.txt"}


async def test_first_start_trim_horizon_emits_put_for_every_existing_file(
    tmp_path: Path, store: FakeCheckpoints
) -> None:
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b c.txt").write_text("b")
    source = make_source(tmp_path, store, starting_position="TRIM_HORIZON")
    await source.start()
    try:
        records = await deliver(source, store, 2)
        await assert_quiet(source)
    finally:
        await source.stop()
    assert events_of(records) == [
        ("ObjectCreated:Put", "a.txt"),
        ("ObjectCreated:Put", "sub/b+c.txt"),
    ]


# ---- live changes -----------------------------------------------------------------------


async def test_created_file_gives_put_with_size_etag_key_and_checkpoint(
    tmp_path: Path, store: FakeCheckpoints, running: DirectorySource
) -> None:
    content = b"hello, world\n" * 100
    (tmp_path / "in dir").mkdir()
    (tmp_path / "in dir" / "a+b.bin").write_bytes(content)
    [record] = await deliver(running, store, 1)
    payload = record.payload
    assert payload["eventSource"] == "aws:s3"
    assert payload["eventName"] == "ObjectCreated:Put"
    assert payload["s3"]["bucket"]["name"] == running.bucket == bucket_name_for(str(tmp_path))
    obj = payload["s3"]["object"]
    assert obj["key"] == "in+dir/a%2Bb.bin"
    assert obj["size"] == len(content)
    assert obj["eTag"] == hashlib.md5(content).hexdigest()
    assert obj["sequencer"] == record.item_id
    assert running.envelope([record]) == {"Records": [payload]}
    st = os.stat(tmp_path / "in dir" / "a+b.bin")
    # eventTime/created_at: when the change was seen, not the mtime (which cp -p, tar or rsync
    # may set to long ago, and which would make a fresh event look hours old)
    assert st.st_mtime_ns / 1e9 - 0.01 <= record.created_at <= time.time()
    assert payload["eventTime"] == iso_ms(record.created_at)
    assert record.key is None and record.size > 0
    assert record.checkpoint is not None
    assert record.checkpoint["meta:initialized"] == "1"
    assert record.checkpoint["f:in dir/a+b.bin"] == (
        f'{{"mtime_ns":{st.st_mtime_ns},"size":{len(content)},"etag":"{obj["eTag"]}"}}'
    )


async def test_file_with_an_old_preserved_mtime_gets_a_current_event_time(
    tmp_path: Path, store: FakeCheckpoints, running: DirectorySource
) -> None:
    temp = tmp_path / "restored.txt.tmp"
    temp.write_text("from an archive")
    os.utime(temp, (1_000_000_000, 1_000_000_000))  # 2001
    os.replace(temp, tmp_path / "restored.txt")
    [record] = await deliver(running, store, 1)
    assert record.created_at > time.time() - 60
    assert record.checkpoint is not None
    assert '"mtime_ns":1000000000000000000' in (record.checkpoint["f:restored.txt"] or "")


async def test_file_written_in_pieces_is_delivered_once_complete(
    tmp_path: Path, store: FakeCheckpoints
) -> None:
    source = make_source(tmp_path, store, stable_s=0.3)
    await source.start()
    try:
        path = tmp_path / "big.log"
        with path.open("wb") as fh:
            for _ in range(7):  # pieces over ~0.6 s, each gap well under stable_s
                fh.write(b"x" * 1000)
                fh.flush()
                await asyncio.sleep(0.1)
        [record] = await deliver(source, store, 1)
        await assert_quiet(source)
    finally:
        await source.stop()
    assert record.payload["s3"]["object"]["size"] == 7000
    assert record.payload["s3"]["object"]["eTag"] == hashlib.md5(b"x" * 7000).hexdigest()


async def test_deleted_file_gives_delete_without_size_or_etag(
    tmp_path: Path, store: FakeCheckpoints, running: DirectorySource
) -> None:
    (tmp_path / "gone.txt").write_text("bye")
    await deliver(running, store, 1)
    (tmp_path / "gone.txt").unlink()
    [record] = await deliver(running, store, 1)
    assert record.payload["eventName"] == "ObjectRemoved:Delete"
    assert set(record.payload["s3"]["object"]) == {"key", "sequencer"}
    assert record.checkpoint is not None and record.checkpoint["f:gone.txt"] is None
    assert await store.list_checkpoints(TRIGGER, "f:") == {}


async def test_file_created_and_deleted_within_stable_window_gives_nothing(
    tmp_path: Path, store: FakeCheckpoints
) -> None:
    source = make_source(tmp_path, store, stable_s=0.4)
    await source.start()
    try:
        (tmp_path / "brief.txt").write_text("x")
        await asyncio.sleep(0.1)
        (tmp_path / "brief.txt").unlink()
        await assert_quiet(source, 0.8)
    finally:
        await source.stop()


async def test_modification_after_delivery_gives_a_new_put(
    tmp_path: Path, store: FakeCheckpoints, running: DirectorySource
) -> None:
    (tmp_path / "f.txt").write_text("one")
    [first] = await deliver(running, store, 1)
    (tmp_path / "f.txt").write_text("two, longer")
    [second] = await deliver(running, store, 1)
    assert second.payload["eventName"] == "ObjectCreated:Put"
    assert second.payload["s3"]["object"]["size"] == len("two, longer")
    assert second.item_id > first.item_id


async def test_rewrite_with_identical_size_and_mtime_gives_nothing(
    tmp_path: Path, store: FakeCheckpoints, running: DirectorySource
) -> None:
    path = tmp_path / "same.txt"
    path.write_text("abc")
    await deliver(running, store, 1)
    st = path.stat()
    temp = tmp_path / "same.txt.tmp"  # a temporary name: ignored by default
    temp.write_text("abc")
    os.utime(temp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(temp, path)
    await assert_quiet(running)


async def test_include_exclude_and_temporary_files_are_filtered(
    tmp_path: Path, store: FakeCheckpoints
) -> None:
    source = make_source(tmp_path, store, include=["*.csv", "docs/**"], exclude=["**/skip-*"])
    await source.start()
    try:
        (tmp_path / "docs" / "deep").mkdir(parents=True)
        (tmp_path / "hidden").mkdir()
        for name in [
            "a.csv",
            "hidden/b.csv",
            "docs/deep/c.md",
            "a.txt",
            "skip-d.csv",
            "docs/skip-e.md",
            ".f.csv",
            "g.csv~",
            "h.csv.tmp",
            "docs/.git-like/x.md",
        ]:
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_text(name)
        records = await deliver(source, store, 3)
        await assert_quiet(source)
    finally:
        await source.stop()
    assert events_of(records) == [
        ("ObjectCreated:Put", "a.csv"),
        ("ObjectCreated:Put", "docs/deep/c.md"),
        ("ObjectCreated:Put", "hidden/b.csv"),
    ]


async def test_non_recursive_source_ignores_subdirectories(
    tmp_path: Path, store: FakeCheckpoints
) -> None:
    source = make_source(tmp_path, store, recursive=False)
    await source.start()
    try:
        (tmp_path / "sub").mkdir()
        (tmp_path / "sub" / "nested.txt").write_text("n")
        (tmp_path / "top.txt").write_text("t")
        records = await deliver(source, store, 1)
        await assert_quiet(source)
    finally:
        await source.stop()
    assert events_of(records) == [("ObjectCreated:Put", "top.txt")]


async def test_events_option_limits_which_changes_are_emitted(
    tmp_path: Path, store: FakeCheckpoints
) -> None:
    source = make_source(tmp_path, store, events=["deleted"])
    await source.start()
    try:
        (tmp_path / "x.txt").write_text("x")
        await assert_quiet(source)
        (tmp_path / "x.txt").unlink()
        [record] = await deliver(source, store, 1)
    finally:
        await source.stop()
    assert record.payload["eventName"] == "ObjectRemoved:Delete"


# ---- restart ----------------------------------------------------------------------------


async def test_restart_delivers_exactly_the_changes_made_while_down(
    tmp_path: Path, store: FakeCheckpoints
) -> None:
    for name in ("keep.txt", "change.txt", "remove.txt"):
        (tmp_path / name).write_text(name)
    source = make_source(tmp_path, store, starting_position="TRIM_HORIZON")
    await source.start()
    await deliver(source, store, 3)
    await source.stop()

    (tmp_path / "change.txt").write_text("changed while down")
    (tmp_path / "remove.txt").unlink()
    (tmp_path / "new.txt").write_text("new")

    source = make_source(tmp_path, store, starting_position="TRIM_HORIZON")
    await source.start()
    try:
        records = await deliver(source, store, 3)
        await assert_quiet(source)
    finally:
        await source.stop()
    assert events_of(records) == [
        ("ObjectCreated:Put", "change.txt"),
        ("ObjectCreated:Put", "new.txt"),
        ("ObjectRemoved:Delete", "remove.txt"),
    ]

    source = make_source(tmp_path, store)
    await source.start()
    try:
        await assert_quiet(source)  # everything was delivered: nothing is replayed
    finally:
        await source.stop()


async def test_latest_start_then_restart_delivers_files_created_while_down(
    tmp_path: Path, store: FakeCheckpoints
) -> None:
    (tmp_path / "old.txt").write_text("old")
    source = make_source(tmp_path, store)
    await source.start()
    await source.stop()
    (tmp_path / "new.txt").write_text("new")
    source = make_source(tmp_path, store)
    await source.start()
    try:
        records = await deliver(source, store, 1)
        await assert_quiet(source)
    finally:
        await source.stop()
    assert events_of(records) == [("ObjectCreated:Put", "new.txt")]


async def test_sequencers_strictly_increase_across_records_and_restarts(
    tmp_path: Path, store: FakeCheckpoints
) -> None:
    source = make_source(tmp_path, store)
    await source.start()
    for i in range(5):
        (tmp_path / f"{i}.txt").write_text(str(i))
    first = await deliver(source, store, 5)
    await source.stop()
    (tmp_path / "later.txt").write_text("later")
    source = make_source(tmp_path, store)
    await source.start()
    try:
        second = await deliver(source, store, 1)
    finally:
        await source.stop()
    sequencers = [r.item_id for r in first + second]
    assert sequencers == sorted(sequencers) and len(set(sequencers)) == 6
    assert all(len(s) == 16 and s == s.upper() for s in sequencers)


# ---- settlement -------------------------------------------------------------------------


async def test_nacked_record_is_delivered_again_and_an_acked_one_is_not(
    tmp_path: Path, store: FakeCheckpoints, running: DirectorySource
) -> None:
    (tmp_path / "a.txt").write_text("a")
    [record] = await running.receive(10, 5.0)
    await running.nack([record])
    [again] = await running.receive(10, 1.0)
    assert again.item_id == record.item_id and again.payload == record.payload
    assert again.checkpoint == record.checkpoint
    await running.ack([again])
    await assert_quiet(running)


async def test_change_while_unacked_gives_new_record_and_stale_nack_keeps_newer_state(
    tmp_path: Path, store: FakeCheckpoints, running: DirectorySource
) -> None:
    path = tmp_path / "a.txt"
    path.write_text("v1")
    [first] = await running.receive(10, 5.0)
    path.write_text("version 2")
    [second] = await deliver(running, store, 1)
    assert second.payload["s3"]["object"]["size"] == len("version 2")
    await running.nack([first])
    [again] = await running.receive(10, 1.0)
    assert again.item_id == first.item_id
    assert again.checkpoint is not None and "f:a.txt" not in again.checkpoint
    await store.set_checkpoints(TRIGGER, again.checkpoint)
    await running.ack([again])
    stored = await store.get_checkpoint(TRIGGER, "f:a.txt")
    assert stored is not None and '"size":9' in stored


async def test_ready_queue_is_bounded_and_loses_no_change(
    tmp_path: Path, store: FakeCheckpoints
) -> None:
    source = make_source(tmp_path, store, max_ready=2)
    await source.start()
    try:
        for i in range(7):
            (tmp_path / f"{i}.txt").write_text(str(i))
        await asyncio.sleep(0.5)  # all settled by now, but only 2 may wait in the queue
        first = await source.receive(100, 1.0)
        assert 1 <= len(first) <= 2
        for record in first:
            await store.set_checkpoints(TRIGGER, record.checkpoint or {})
        await source.ack(first)
        records = first + await deliver(source, store, 7 - len(first))
        await assert_quiet(source)
    finally:
        await source.stop()
    assert {r.payload["s3"]["object"]["key"] for r in records} == {f"{i}.txt" for i in range(7)}


async def test_receive_waits_at_most_timeout_and_stop_is_idempotent(
    tmp_path: Path, store: FakeCheckpoints
) -> None:
    source = make_source(tmp_path, store)
    await source.start()
    started = time.monotonic()
    assert await source.receive(10, 0.2) == []
    assert 0.15 <= time.monotonic() - started < 10, "waited the timeout, then returned"
    await source.stop()
    await source.stop()


async def test_every_watcher_gets_its_own_thread_beyond_anyios_default_forty(
    tmp_path: Path,
) -> None:
    """watchfiles watches on a thread of anyio's default limiter (40 tokens per loop) and holds
    it for the whole watch: the 41st directory trigger would wait for another's 5 s timeout."""
    from anyio import to_thread

    limiter = to_thread.current_default_thread_limiter()
    base = limiter.total_tokens
    count = int(base) + 5
    roots = [tmp_path / f"d{i}" for i in range(count)]
    sources = []
    for root in roots:
        root.mkdir()
        sources.append(make_source(root, FakeCheckpoints()))
    try:
        for source in sources:
            await source.start()
        deadline = time.monotonic() + 10
        while limiter.borrowed_tokens < count and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert limiter.borrowed_tokens == count, "every watcher is watching at once"
        assert limiter.total_tokens == base + count, "the default's 40 stay free for others"
        (roots[-1] / "last.txt").write_text("x")
        (record,) = await sources[-1].receive(10, 5.0)
        assert record.payload["s3"]["object"]["key"] == "last.txt"
    finally:
        for source in sources:
            await source.stop()
    assert (limiter.total_tokens, limiter.borrowed_tokens) == (base, 0)


def watchfiles_failing(monkeypatch: pytest.MonkeyPatch, *errors: Exception) -> list[int]:
    """The source's watchfiles: its awatch raises `errors` in turn, then watches for real.
    Returns the list of awatch calls (each appends its number)."""
    import watchfiles

    calls: list[int] = []

    def awatch(*paths: Any, **kwargs: Any) -> Any:
        calls.append(len(calls) + 1)
        if len(calls) <= len(errors):
            error = errors[len(calls) - 1]

            async def failing() -> AsyncIterator[Any]:
                raise error
                yield  # an async generator, as awatch is

            return failing()
        return watchfiles.awatch(*paths, **kwargs)

    fake = types.SimpleNamespace(awatch=awatch, Change=watchfiles.Change)
    monkeypatch.setattr(source_module, "_import_watchfiles", lambda: fake)
    return calls


@pytest.mark.parametrize(
    ("error", "setting"),
    [
        # What watchfiles raises when the user's inotify instances are used up...
        (
            RuntimeError("Error creating recommended watcher: Too many open files (os error 24)"),
            "fs.inotify.max_user_instances",
        ),
        # ...and when a recursive watch needs more watches than the user may have.
        (
            OSError('OS file watch limit reached. about ["/srv/in/d18"]'),
            "fs.inotify.max_user_watches",
        ),
    ],
)
async def test_an_inotify_limit_is_one_line_naming_the_sysctl_and_changes_still_arrive(
    tmp_path: Path,
    store: FakeCheckpoints,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    error: Exception,
    setting: str,
) -> None:
    calls = watchfiles_failing(monkeypatch, *[error] * 100)
    source = make_source(tmp_path, store)
    caplog.set_level(logging.INFO, logger="test.directory")
    await source.start()
    try:
        (tmp_path / "a.txt").write_text("a")
        (record,) = await deliver(source, store, 1)  # found by the rescan before each retry
        assert record.payload["s3"]["object"]["key"] == "a.txt"
    finally:
        await source.stop()
    failed = [r for r in caplog.records if r.getMessage() == "directory.watch_failed"]
    assert failed and len(calls) >= 2
    first = failed[0]
    assert first.levelno == logging.ERROR and first.exc_info is None, "one line, no traceback"
    assert setting in first.__dict__["error"] and "poll_interval_s" in first.__dict__["error"]
    assert first.__dict__["retry_in_s"] == 1.0


async def test_an_unexpected_watch_failure_is_logged_with_its_traceback_and_watching_resumes(
    tmp_path: Path,
    store: FakeCheckpoints,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = watchfiles_failing(monkeypatch, ValueError("a bug"))
    source = make_source(tmp_path, store)
    caplog.set_level(logging.INFO, logger="test.directory")
    await source.start()
    try:
        deadline = time.monotonic() + 10
        while len(calls) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert calls == [1, 2], "watched again after the pause"
        (tmp_path / "b.txt").write_text("b")
        (record,) = await deliver(source, store, 1)
        assert record.payload["s3"]["object"]["key"] == "b.txt"
    finally:
        await source.stop()
    (failed,) = [r for r in caplog.records if r.getMessage() == "directory.watch_failed"]
    assert failed.exc_info is not None and failed.exc_info[0] is ValueError
    assert "error" not in failed.__dict__


@pytest.mark.parametrize("how", ["deleted", "moved", "made again at once", "gone a while"])
async def test_a_watched_directory_deleted_and_made_again_is_watched_again(
    tmp_path: Path, store: FakeCheckpoints, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    # The watch follows the directory it was set on: once that is gone, a new one at the
    # path was never watched, and its files waited for the next start (or the rescan).
    root = tmp_path / "watched"
    root.mkdir()
    source = make_source(root, store, rescan_interval_s=0)
    caplog.set_level(logging.INFO, logger="test.directory")
    await source.start()
    try:
        (root / "a.txt").write_text("a")
        await deliver(source, store, 1)
        if how == "moved":
            root.rename(tmp_path / "elsewhere")
        else:
            (root / "a.txt").unlink()
            root.rmdir()
        if how == "made again at once":
            root.mkdir()  # on ext4, mostly with the same inode
        # "gone a while": until a retry found no directory there (awatch would have watched
        # nothing from then on, without a word)
        lines = 2 if how == "gone a while" else 1
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and lines > sum(
            r.getMessage() == "directory.watch_failed" for r in caplog.records
        ):
            await asyncio.sleep(0.05)
        if how != "made again at once":
            root.mkdir()
        (root / "b.txt").write_text("b")
        records = await deliver(source, store, 2, timeout_s=15)
    finally:
        await source.stop()
    assert events_of(records) == [
        ("ObjectCreated:Put", "b.txt"),
        ("ObjectRemoved:Delete", "a.txt"),
    ]
    failed = [r for r in caplog.records if r.getMessage() == "directory.watch_failed"]
    assert failed and all(r.exc_info is None for r in failed), "one line each, no traceback"
    assert any("deleted, moved or replaced" in r.__dict__["error"] for r in failed)
    if how == "gone a while":
        assert any("does not exist" in r.__dict__["error"] for r in failed)


async def test_a_watched_symlink_re_pointed_to_another_directory_is_watched_again(
    tmp_path: Path,
    store: FakeCheckpoints,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No notification tells of it (nor of a file system mounted on the path): the watch
    # went on following the old directory, and files in the new one never arrived.
    monkeypatch.setattr(source_module, "ROOT_CHECK_MS", 200)
    old, new, link = tmp_path / "old", tmp_path / "new", tmp_path / "inbox"
    old.mkdir()
    new.mkdir()
    link.symlink_to(old)
    source = make_source(link, store, rescan_interval_s=0)
    caplog.set_level(logging.INFO, logger="test.directory")
    await source.start()
    try:
        (link / "a.txt").write_text("a")
        await deliver(source, store, 1)
        (tmp_path / "inbox.new").symlink_to(new)
        (tmp_path / "inbox.new").replace(link)  # as `ln -sfn new inbox` does
        (new / "b.txt").write_text("b")
        records = await deliver(source, store, 2, timeout_s=15)
    finally:
        await source.stop()
    assert sorted(events_of(records)) == [
        ("ObjectCreated:Put", "b.txt"),
        ("ObjectRemoved:Delete", "a.txt"),
    ]
    (failed,) = [r for r in caplog.records if r.getMessage() == "directory.watch_failed"]
    assert failed.exc_info is None and "symlink re-pointed" in failed.__dict__["error"]


async def test_a_root_whose_stat_fails_for_a_while_keeps_its_watch(
    tmp_path: Path,
    store: FakeCheckpoints,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A stat of the path that fails without saying the directory is gone (EIO, a network
    # file system's timeout) tells nothing of where the path leads: the watch, on the same
    # directory still, goes on. It was restarted (a directory.watch_failed error claiming
    # the directory was replaced, and a diff of the whole tree) at every such failure.
    monkeypatch.setattr(source_module, "ROOT_CHECK_MS", 100)
    root = tmp_path / "watched"
    root.mkdir()
    failing, failed_twice = threading.Event(), threading.Event()
    failures = 0
    real_stat = os.stat

    def flaky_stat(path: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal failures
        if failing.is_set() and os.fspath(path) == str(root):
            failures += 1
            if failures >= 2:
                failed_twice.set()
            raise OSError(errno.EIO, "Input/output error", str(root))
        return real_stat(path, *args, **kwargs)

    source = make_source(root, store, rescan_interval_s=0)
    caplog.set_level(logging.INFO, logger="test.directory")
    await source.start()
    try:
        monkeypatch.setattr(os, "stat", flaky_stat)
        failing.set()
        assert await asyncio.to_thread(failed_twice.wait, 10), "the root was not checked"
        failing.clear()
        (root / "a.txt").write_text("a")
        records = await deliver(source, store, 1)
    finally:
        failing.clear()
        await source.stop()
    assert events_of(records) == [("ObjectCreated:Put", "a.txt")]
    assert not [r for r in caplog.records if r.getMessage() == "directory.watch_failed"]


async def test_a_file_replaced_by_a_directory_of_its_name_is_removed_and_the_directory_read(
    tmp_path: Path, store: FakeCheckpoints
) -> None:
    source = make_source(tmp_path, store, rescan_interval_s=0)
    await source.start()
    try:
        (tmp_path / "x").write_text("a file")
        await deliver(source, store, 1)
        (tmp_path / "x").unlink()
        staging = tmp_path.parent / f"{tmp_path.name}-staging"
        staging.mkdir()
        (staging / "inner.txt").write_text("i")
        staging.rename(tmp_path / "x")
        records = await deliver(source, store, 2)
    finally:
        await source.stop()
    assert events_of(records) == [
        ("ObjectCreated:Put", "x/inner.txt"),
        ("ObjectRemoved:Delete", "x"),
    ]
    assert sorted(source._known) == ["x/inner.txt"]


def losing_notifications(source: DirectorySource, word: str) -> None:
    """The source's watcher drops every change whose path contains `word`, as the kernel's
    queue overflow or a directory left unwatched does (watchfiles reports neither)."""
    on_changes = source._on_changes

    def lossy(changes: set[tuple[Any, str]]) -> None:
        on_changes({(change, path) for change, path in changes if word not in path})

    source._on_changes = lossy  # type: ignore[method-assign]


def rescan_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == "directory.rescan_found"]


async def test_a_rescan_delivers_the_changes_notifications_missed_and_names_them(
    tmp_path: Path, store: FakeCheckpoints, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "lost-gone.txt").write_text("here at start")
    source = make_source(tmp_path, store, rescan_interval_s=0.3)
    losing_notifications(source, "lost")
    caplog.set_level(logging.INFO, logger="test.directory")
    await source.start()
    try:
        (tmp_path / "seen.txt").write_text("notified")
        (tmp_path / "lost-dir").mkdir()  # an unwatched new directory: nothing from it
        (tmp_path / "lost-dir" / "new.txt").write_text("never notified")
        (tmp_path / "lost-gone.txt").unlink()
        records = await deliver(source, store, 3)
        deadline = time.monotonic() + 10
        while not rescan_lines(caplog) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await assert_quiet(source, 0.8)  # later rescans find nothing more
    finally:
        await source.stop()
    assert sorted(events_of(records)) == [
        ("ObjectCreated:Put", "lost-dir/new.txt"),
        ("ObjectCreated:Put", "seen.txt"),
        ("ObjectRemoved:Delete", "lost-gone.txt"),
    ]
    (line,) = rescan_lines(caplog)
    assert line.levelno == logging.WARNING and line.exc_info is None
    assert line.__dict__["changes"] == 2
    assert sorted(line.__dict__["paths"]) == ["lost-dir/new.txt", "lost-gone.txt"]
    assert "fs.inotify.max_user_watches" in line.__dict__["reason"]


async def test_a_change_notified_while_a_rescan_waits_is_not_reported_as_missed(
    tmp_path: Path, store: FakeCheckpoints, caplog: pytest.LogCaptureFixture
) -> None:
    # The rescan runs between a change and its notification (the watcher's debounce): it
    # marks the file, and the notification that arrives within the wait clears it.
    source = make_source(tmp_path, store, rescan_interval_s=3600)
    caplog.set_level(logging.INFO, logger="test.directory")
    await source.start()
    try:
        (tmp_path / "racing.txt").write_text("x")
        await source._rescan()  # at once: the notification is at least 100 ms away
        (record,) = await deliver(source, store, 1)
        await source._rescan()  # delivered and known: nothing differs
    finally:
        await source.stop()
    assert record.payload["s3"]["object"]["key"] == "racing.txt"
    assert rescan_lines(caplog) == []


async def test_a_rescan_leaves_a_file_being_settled_to_its_own_timer(
    tmp_path: Path, store: FakeCheckpoints
) -> None:
    source = make_source(tmp_path, store, rescan_interval_s=3600, stable_s=30)
    await source.start()
    try:
        (tmp_path / "slow.txt").write_text("still being written")
        deadline = time.monotonic() + 5
        while "slow.txt" not in source._observed and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        before = source._observed["slow.txt"]  # stat-ed: due 30 s after its last change
        await source._rescan()
        assert source._observed["slow.txt"] is before, "not marked afresh by the rescan"
    finally:
        await source.stop()


async def test_a_rescan_while_the_watch_was_down_names_the_watch_not_inotify(
    tmp_path: Path, store: FakeCheckpoints, caplog: pytest.LogCaptureFixture
) -> None:
    source = make_source(tmp_path, store, rescan_interval_s=3600)
    losing_notifications(source, "lost")
    caplog.set_level(logging.INFO, logger="test.directory")
    await source.start()
    try:
        (tmp_path / "lost.txt").write_text("x")
        source._watching = False  # as after a failure, until the retry sets it up again
        rescan = asyncio.create_task(source._rescan())
        await asyncio.sleep(0.3)
        source._watching, source._watch_starts = True, source._watch_starts + 1
        await rescan
    finally:
        await source.stop()
    (line,) = rescan_lines(caplog)
    assert "watch was not running" in line.__dict__["reason"]


async def test_a_rescan_leaves_an_unreadable_file_alone_until_it_changes(
    tmp_path: Path,
    store: FakeCheckpoints,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # (The tests run as root, whom permissions do not stop: the read fails by hand.)
    real_hash = paths_module._hash

    def read(path: str, *args: Any) -> Any:
        if path.endswith("locked.txt"):
            raise PermissionError(13, "Permission denied", path)
        return real_hash(path, *args)

    monkeypatch.setattr(paths_module, "_hash", read)
    source = make_source(tmp_path, store, rescan_interval_s=3600)
    caplog.set_level(logging.INFO, logger="test.directory")
    await source.start()
    try:
        (tmp_path / "locked.txt").write_text("secret")
        deadline = time.monotonic() + 5
        while "locked.txt" not in source._unreadable and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for _ in range(2):
            await source._rescan()
        await assert_quiet(source, 0.3)
    finally:
        await source.stop()
    failed = [r for r in caplog.records if r.getMessage() == "directory.read_failed"]
    assert len(failed) == 1, "logged once, not again at each rescan"
    assert rescan_lines(caplog) == []


async def test_a_rescan_leaves_the_files_of_a_directory_moved_in_to_its_expansion(
    tmp_path: Path, store: FakeCheckpoints, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "watched"
    root.mkdir()
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "report.txt").write_text("r")
    source = make_source(root, store, rescan_interval_s=3600, stable_s=0.5)
    caplog.set_level(logging.INFO, logger="test.directory")
    await source.start()
    try:
        staging.rename(root / "batch")
        deadline = time.monotonic() + 5
        while "batch" not in source._dirty and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await source._rescan()  # the directory's notification came: its expansion is due
        (record,) = await deliver(source, store, 1)
    finally:
        await source.stop()
    assert record.payload["s3"]["object"]["key"] == "batch/report.txt"
    assert rescan_lines(caplog) == []


async def test_a_rescan_leaves_a_deletion_being_settled_to_its_own_timer(
    tmp_path: Path, store: FakeCheckpoints
) -> None:
    source = make_source(tmp_path, store, rescan_interval_s=3600, stable_s=30)
    (tmp_path / "gone.txt").write_text("x")
    await source.start()
    try:
        source._remember("gone.txt", source_module.FileCheckpoint(1, 1, None))
        (tmp_path / "gone.txt").unlink()
        deadline = time.monotonic() + 5
        while "gone.txt" not in source._observed and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        before = source._observed["gone.txt"]
        await source._rescan()
        assert source._observed["gone.txt"] is before, "not marked afresh by the rescan"
    finally:
        await source.stop()


async def test_a_failed_rescan_is_one_line_and_the_next_one_runs(
    tmp_path: Path,
    store: FakeCheckpoints,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A rescan lists the directory first: one it cannot list (or gone) is one line, not
    # every file taken for deleted (scan_tree skips a directory it cannot list).
    scans = 0
    real_scan = source_module._scan_root

    def scan_root(*args: Any) -> Any:
        nonlocal scans
        scans += 1
        if scans == 1:
            raise PermissionError(13, "Permission denied", str(tmp_path))
        return real_scan(*args)

    monkeypatch.setattr(source_module, "_scan_root", scan_root)
    source = make_source(tmp_path, store, rescan_interval_s=0.1)
    caplog.set_level(logging.INFO, logger="test.directory")
    await source.start()
    try:
        deadline = time.monotonic() + 5
        while scans < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        await source.stop()
    assert scans >= 3
    (failed,) = [r for r in caplog.records if r.getMessage() == "directory.rescan_failed"]
    assert failed.levelno == logging.WARNING and failed.exc_info is None
    assert "Permission denied" in failed.__dict__["error"]


def test_a_scan_stops_before_its_next_directory_once_its_flag_is_set(tmp_path: Path) -> None:
    for i in range(20):
        (tmp_path / f"d{i}").mkdir()
        (tmp_path / f"d{i}" / "f.txt").write_text("x")

    class SetOnThirdLook:
        looks = 0

        def is_set(self) -> bool:
            self.looks += 1
            return self.looks >= 3

    flag = SetOnThirdLook()
    with pytest.raises(paths_module.ScanStopped):
        paths_module.scan_tree(str(tmp_path), PathFilter(), stop=flag)
    assert flag.looks == 3, "two directories listed, then given up"
    assert len(paths_module.scan_tree(str(tmp_path), PathFilter())) == 20


class SlowScans:
    """Once `slow` is set, every directory below `under` takes 50 ms to list: `started` is
    set at the first such listing, `ended` when a scan that made one returns or raises."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, under: Path) -> None:
        self.slow, self.started, self.ended = (
            threading.Event(),
            threading.Event(),
            threading.Event(),
        )
        real_scandir, real_scan = os.scandir, source_module.scan_tree

        def slow_scandir(path: Any = ".") -> Any:
            if self.slow.is_set() and str(path).startswith(str(under)):
                self.started.set()
                time.sleep(0.05)
            return real_scandir(path)

        def scan_tree(*args: Any, **kwargs: Any) -> Any:
            try:
                return real_scan(*args, **kwargs)
            finally:
                if self.started.is_set():
                    self.ended.set()

        monkeypatch.setattr(os, "scandir", slow_scandir)
        monkeypatch.setattr(source_module, "scan_tree", scan_tree)


@pytest.mark.parametrize("mode", [{"rescan_interval_s": 0.1}, {"poll_interval_s": 0.1}])
async def test_stop_ends_a_rescan_under_way_instead_of_leaving_its_thread_to_finish(
    tmp_path: Path, store: FakeCheckpoints, monkeypatch: pytest.MonkeyPatch, mode: dict[str, Any]
) -> None:
    # A thread cannot be cancelled: a scan left running after stop holds the process's exit
    # until it ends. Here every directory takes 50 ms to list: the whole scan at least 10 s.
    tree = tmp_path / "tree"
    for i in range(200):
        (tree / f"d{i}").mkdir(parents=True)
    scans = SlowScans(monkeypatch, tree)
    source = make_source(tree, store, **mode)
    await source.start()
    try:
        scans.slow.set()
        assert await asyncio.to_thread(scans.started.wait, 10), "no scan started"
    finally:
        await source.stop()
    assert await asyncio.to_thread(scans.ended.wait, 5), "the scan went on after stop"


async def test_stop_ends_the_scan_of_a_directory_moved_in_instead_of_leaving_it_to_finish(
    tmp_path: Path, store: FakeCheckpoints, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A directory moved into the tree is scanned for the files it brought (a thread, like a
    # rescan's): a large one moved in just before stop held the process's exit as long.
    # Here each of its directories takes 50 ms to list: the whole scan at least 10 s.
    tree, outside = tmp_path / "tree", tmp_path / "outside"
    tree.mkdir()
    for i in range(200):
        (outside / f"d{i}").mkdir(parents=True)
    scans = SlowScans(monkeypatch, tree / "moved")
    source = make_source(tree, store, rescan_interval_s=0)
    await source.start()
    try:
        scans.slow.set()
        outside.rename(tree / "moved")
        assert await asyncio.to_thread(scans.started.wait, 10), "the directory was not scanned"
    finally:
        await source.stop()
    assert await asyncio.to_thread(scans.ended.wait, 5), "the scan went on after stop"


async def test_rescan_interval_zero_turns_rescans_off(
    tmp_path: Path, store: FakeCheckpoints
) -> None:
    source = make_source(tmp_path, store, rescan_interval_s=0)
    losing_notifications(source, "lost")
    await source.start()
    try:
        assert source._rescan_task is None
        (tmp_path / "lost.txt").write_text("x")
        await assert_quiet(source, 0.5)
    finally:
        await source.stop()


def test_rescan_interval_defaults_to_ten_minutes_and_conflicts_with_polling() -> None:
    base = {"type": "directory", "path": "."}
    assert DirectorySourceConfig.model_validate(base).rescan_interval_s == 600.0
    polling = DirectorySourceConfig.model_validate({**base, "poll_interval_s": 2})
    assert polling.rescan_interval_s == 600.0  # not used: every poll is a rescan
    with pytest.raises(pydantic.ValidationError, match="every poll is a rescan"):
        DirectorySourceConfig.model_validate(
            {**base, "poll_interval_s": 2, "rescan_interval_s": 60}
        )
    with pytest.raises(pydantic.ValidationError, match="greater than or equal to 0"):
        DirectorySourceConfig.model_validate({**base, "rescan_interval_s": -1})


async def test_start_on_missing_directory_is_a_config_error(
    tmp_path: Path, store: FakeCheckpoints
) -> None:
    source = make_source(tmp_path / "nope", store)
    with pytest.raises(ConfigError):
        await source.start()


# ---- config, filters and plugin -----------------------------------------------------------


def test_config_defaults() -> None:
    cfg = DirectorySourceConfig.model_validate({"type": "directory", "path": "in"})
    assert cfg.invocation == "async"
    assert (cfg.bucket, cfg.include, cfg.exclude, cfg.recursive) == (None, ["**"], [], True)
    assert cfg.events == ["created", "modified", "deleted"]
    assert (cfg.starting_position, cfg.stable_s, cfg.poll_interval_s) == ("LATEST", 0.5, None)
    assert cfg.ignore_temporary is True and cfg.configuration_id == "triggerd"


def test_config_resolves_relative_path_against_the_config_directory(tmp_path: Path) -> None:
    raw = {"type": "directory", "path": "incoming"}
    cfg = DirectorySourceConfig.model_validate(raw, context={"base_dir": str(tmp_path)})
    assert cfg.path == str(tmp_path / "incoming")
    absolute = {"type": "directory", "path": "/srv/in"}
    assert DirectorySourceConfig.model_validate(absolute).path == "/srv/in"


@pytest.mark.parametrize(
    "bad",
    [
        {"path": ""},
        {"bucket": "Upper"},
        {"bucket": "a..b"},
        {"bucket": "ab"},
        {"bucket": "10.0.0.1"},
        {"events": []},
        {"events": ["renamed"]},
        {"stable_s": -1},
        {"poll_interval_s": 0},
        {"unknown": 1},
        {"starting_position": "AT_TIMESTAMP"},
    ],
)
def test_config_rejects_bad_values(bad: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        DirectorySourceConfig.model_validate({"type": "directory", "path": "in", **bad})


@pytest.mark.parametrize(
    ("path", "bucket"),
    [
        ("/data/Incoming_Files", "incoming-files"),
        ("/data/x", "x-bucket"),
        ("/data/My Photos!/", "my-photos"),
        ("/data/" + "a" * 80, "a" * 63),
        ("/data/192.168.0.1", "192-168-0-1"),
        ("/data/..weird..", "weird"),
    ],
)
def test_default_bucket_name_is_a_valid_bucket_name(path: str, bucket: str) -> None:
    assert bucket_name_for(path) == bucket


@pytest.mark.parametrize(
    ("include", "exclude", "rel", "selected"),
    [
        (["**"], [], "a/b/c.txt", True),
        (["*.csv"], [], "deep/dir/x.csv", True),
        (["data/*.csv"], [], "data/x.csv", True),
        (["data/*.csv"], [], "data/sub/x.csv", False),
        (["data/**/*.csv"], [], "data/x.csv", True),
        (["data/**/*.csv"], [], "data/a/b/x.csv", True),
        (["**"], ["logs/**"], "logs/a/b.log", False),
        (["**"], ["logs/**"], "other/logs.txt", True),
        (["file?.txt"], [], "file1.txt", True),
        (["file[!0-9].txt"], [], "file1.txt", False),
        (["**"], [], ".hidden", False),
        (["**"], [], "dir/.hidden/x", False),
        (["**"], [], "x.swp", False),
        (["**"], [], "#autosave#", False),
    ],
)
def test_path_filter_globs(
    include: list[str], exclude: list[str], rel: str, selected: bool
) -> None:
    assert PathFilter(include, exclude).matches(rel) is selected


def test_path_filter_keeps_temporary_files_when_asked() -> None:
    assert PathFilter(ignore_temporary=False).matches(".hidden/x.tmp")


def test_plugin_declares_config_model_factory_and_sample_event(
    tmp_path: Path, store: FakeCheckpoints
) -> None:
    assert plugin.config_model is DirectorySourceConfig
    ctx = SourceContext(
        trigger=TRIGGER,
        state=cast(StateStore, store),
        clock=SystemClock(),
        log=logging.getLogger("test"),
    )
    cfg = DirectorySourceConfig.model_validate({"type": "directory", "path": str(tmp_path)})
    assert isinstance(plugin.create(cfg, ctx), DirectorySource)
    assert plugin.sample_event is sample_event
    event = sample_event({"bucket": "photos", "key": "a b.jpg"})
    assert event["Records"][0]["s3"]["object"]["key"] == "a+b.jpg"


def test_response_ids_keep_s3s_formats_and_differ_across_buffer_refills() -> None:
    ids = ResponseIds(batch=4)
    pairs = [ids.next() for _ in range(10)]  # three urandom reads
    for request_id, host_id in pairs:
        assert re.fullmatch(r"[0-9A-F]{16}", request_id)
        assert re.fullmatch(r"[A-Za-z0-9+/]{64}", host_id)
    assert len({r for r, _ in pairs}) == 10
    assert len({h for _, h in pairs}) == 10


def test_examine_many_hashes_files_still_in_their_expected_state(tmp_path: Path) -> None:
    big = os.urandom(2 * 1024 * 1024 + 17)  # three reads into the 1 MiB buffer
    (tmp_path / "big").write_bytes(big)
    (tmp_path / "small").write_bytes(b"abc")
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "changed").write_bytes(b"now longer")
    (tmp_path / "sub").mkdir()

    def state(name: str) -> tuple[int, int]:
        st = os.stat(tmp_path / name)
        return (st.st_mtime_ns, st.st_size)

    items = [(name, state(name), True) for name in ("big", "small", "empty")]
    items += [("changed", (state("changed")[0], 3), True), ("unwanted", None, False)]
    items += [("sub", "dir", False), ("gone", None, True)]
    (tmp_path / "unwanted").write_bytes(b"x")
    got = examine_many(str(tmp_path), items, 1 << 30)
    digests = {rel: h.etag for rel, (_, h) in got.items() if isinstance(h, Hashed)}
    assert digests == {
        "big": hashlib.md5(big).hexdigest(),
        "small": hashlib.md5(b"abc").hexdigest(),
        "empty": hashlib.md5(b"").hexdigest(),
    }
    assert got["changed"] == (state("changed"), None), "a changed file is not hashed"
    assert got["unwanted"] == (state("unwanted"), None)
    assert got["sub"] == ("dir", None) and got["gone"] == (None, None)
    small = got["small"][1]
    assert isinstance(small, Hashed) and small.after == state("small")


@pytest.mark.parametrize("hint", ["right", "stale", "none"])
def test_hash_file_hashes_the_whole_content_whatever_size_it_is_told(
    tmp_path: Path, hint: str
) -> None:
    # The size from the stat before saves the read that finds the end; a stale one (the
    # file grew since) must not cut the hash short.
    contents = {"small": b"abc", "one-buffer": b"y" * (1024 * 1024), "big": os.urandom(1_500_007)}
    for name, data in contents.items():
        (tmp_path / name).write_bytes(data)
        size = {"right": len(data), "stale": len(data) // 2, "none": None}[hint]
        hashed = hash_file(str(tmp_path), name, size=size)
        assert hashed is not None and hashed.etag == hashlib.md5(data).hexdigest(), name


def test_examine_many_stops_after_its_byte_budget(tmp_path: Path) -> None:
    for name in "abc":
        (tmp_path / name).write_bytes(b"12345")
    items = [(name, (os.stat(tmp_path / name).st_mtime_ns, 5), True) for name in "abc"]
    assert list(examine_many(str(tmp_path), items, 6)) == ["a", "b"]


async def test_records_of_a_hash_hand_off_are_handed_out_before_the_next_is_hashed(
    tmp_path: Path, store: FakeCheckpoints, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(300):
        (tmp_path / f"{i:03d}.txt").write_text(str(i))
    calls: list[int] = []
    release = threading.Event()
    real_examine_many = source_module.examine_many

    def gated_examine_many(root: str, items: list[Any], budget: int) -> Any:
        calls.append(len(items))
        if len(calls) == 2:
            release.wait(10)
        return real_examine_many(root, items, budget)

    monkeypatch.setattr(source_module, "examine_many", gated_examine_many)
    monkeypatch.setattr(source_module, "_SETTLE_FILES", 128)
    source = make_source(tmp_path, store, starting_position="TRIM_HORIZON")
    await source.start()
    try:
        first: list[Record] = []  # the second hand-off is held meanwhile
        deadline = time.monotonic() + 5.0
        while len(first) < 128 and time.monotonic() < deadline:
            first += await source.receive(128 - len(first), 0.5)
        assert len(first) == 128  # before the second hand-off could finish
        release.set()
        for record in first:
            await store.set_checkpoints(TRIGGER, record.checkpoint or {})
        await source.ack(first)
        rest = await deliver(source, store, 300 - 128)
    finally:
        release.set()
        await source.stop()
    assert calls == [128, 128, 44]
    keys = {r.payload["s3"]["object"]["key"] for r in first + rest}
    assert keys == {f"{i:03d}.txt" for i in range(300)}


# ---- the stability timer started from a file's ctime --------------------------------------


class SplitClock:
    """A wall clock and a monotonic clock that stand still, each set by the test."""

    def __init__(self, wall: float, mono: float) -> None:
        self.wall, self.mono = wall, mono

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)


def ctime_of(path: Path) -> float:
    return os.stat(path).st_ctime_ns / 1e9


async def settle_passes(source: DirectorySource, passes: int = 2) -> list[Record]:
    """Run the settle loop's passes by hand (time moves only when the test moves it)."""
    for _ in range(passes):
        await source._settle_once()
    return await source.receive(10, 0)


async def test_file_left_alone_since_before_it_was_noticed_settles_in_its_first_look(
    tmp_path: Path, store: FakeCheckpoints
) -> None:
    (tmp_path / "done.txt").write_bytes(b"complete")
    # Written 3 s ago by the wall clock, noticed 2.5 s ago: with stable_s=2 it has been left
    # alone long enough, though the source looks at it only now and no time passes after.
    clock = SplitClock(wall=ctime_of(tmp_path / "done.txt") + 3.0, mono=500.0)
    source = make_source(tmp_path, store, clock=clock, stable_s=2.0)
    source._mark("done.txt", None, now=497.5)
    [record] = await settle_passes(source, passes=1)
    assert record.payload["s3"]["object"]["eTag"] == hashlib.md5(b"complete").hexdigest()


async def test_file_changed_after_its_first_stat_is_not_delivered_on_its_old_ctime(
    tmp_path: Path, store: FakeCheckpoints
) -> None:
    path = tmp_path / "growing.log"
    path.write_bytes(b"part one")
    clock = SplitClock(wall=ctime_of(path) + 1.5, mono=500.0)
    source = make_source(tmp_path, store, clock=clock, stable_s=2.0)
    source._mark("growing.log", None, now=499.0)
    assert await settle_passes(source, passes=1) == []  # unchanged for 1.5 s by its ctime
    with path.open("ab") as fh:
        fh.write(b", part two")  # the writer comes back before the source settles it
    clock.mono += 0.6  # stable_s after the old ctime: due, and found changed
    assert await settle_passes(source) == []
    clock.mono += 2.0  # stable_s after the changed state was seen
    [record] = await settle_passes(source)
    assert record.payload["s3"]["object"]["size"] == len(b"part one, part two")


class _WholeSecondStamps:
    """`os` as `paths` uses it, on a filesystem that stamps whole seconds (ext4 with
    128-byte inodes, HFS+): each stat's ctime is rounded down to its second."""

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def stat(self, path: str) -> Any:
        st = os.stat(path)
        return types.SimpleNamespace(
            st_mode=st.st_mode,
            st_size=st.st_size,
            st_mtime_ns=st.st_mtime_ns,
            st_ctime_ns=st.st_ctime_ns // 1_000_000_000 * 1_000_000_000,
        )


async def test_a_whole_second_ctime_is_not_taken_as_the_time_of_the_change(
    tmp_path: Path, store: FakeCheckpoints, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The file was written up to a second after its stamp: 0.7 s after the stamp, it may have
    # changed only just now, and must wait stable_s from the first stat like any young file
    # (taken at its word, the stamp delivered a file written in pieces after the first).
    monkeypatch.setattr(paths_module, "os", _WholeSecondStamps())
    path = tmp_path / "upload.bin"
    path.write_bytes(b"first piece")
    stamp = os.stat(path).st_ctime_ns // 1_000_000_000
    clock = SplitClock(wall=stamp + 0.7, mono=500.0)
    source = make_source(tmp_path, store, clock=clock, stable_s=0.5)
    source._mark("upload.bin", None, now=499.9)
    assert await settle_passes(source) == []
    clock.mono += 0.5
    [record] = await settle_passes(source)
    assert record.payload["s3"]["object"]["size"] == len(b"first piece")


@pytest.mark.parametrize(
    ("options", "noticed_ago_s"),
    [
        ({}, 0.0),  # a ctime 3 s before the notification: a stepped clock, not believed
        ({"poll_interval_s": 1.0}, 2.5),  # polling (network filesystems): ctimes not used
    ],
    ids=["ctime-long-before-the-notification", "polling-mode"],
)
async def test_unbelievable_or_unused_ctime_waits_stable_s_from_the_first_stat(
    tmp_path: Path, store: FakeCheckpoints, options: dict[str, Any], noticed_ago_s: float
) -> None:
    (tmp_path / "f.txt").write_bytes(b"data")
    clock = SplitClock(wall=ctime_of(tmp_path / "f.txt") + 3.0, mono=500.0)
    source = make_source(tmp_path, store, clock=clock, stable_s=2.0, **options)
    source._mark("f.txt", None, now=500.0 - noticed_ago_s)
    assert await settle_passes(source) == []
    clock.mono += 1.9
    assert await settle_passes(source) == []
    clock.mono += 0.1
    [record] = await settle_passes(source)
    assert record.payload["s3"]["object"]["size"] == 4


async def test_files_hashed_in_their_first_look_are_bounded_by_the_ready_queue(
    tmp_path: Path, store: FakeCheckpoints
) -> None:
    for i in range(5):
        (tmp_path / f"{i}.txt").write_text(str(i))
    clock = SplitClock(wall=ctime_of(tmp_path / "4.txt") + 3.0, mono=500.0)
    source = make_source(tmp_path, store, clock=clock, stable_s=2.0, max_ready=2)
    for i in range(5):
        source._mark(f"{i}.txt", None, now=497.5)
    await source._settle_once()
    assert len(source._ready) == 2  # the other three only stat-ed, not hashed
    records = await deliver(source, store, 2)
    for _ in range(3):
        await source._settle_once()
        records += await deliver(source, store, len(source._ready))
    assert sorted(r.payload["s3"]["object"]["key"] for r in records) == [
        f"{i}.txt" for i in range(5)
    ]


async def test_files_noticed_together_and_still_young_come_due_together(
    tmp_path: Path, store: FakeCheckpoints
) -> None:
    # Timed each from its own ctime they would settle one pass (and one commit downstream)
    # apiece; timed from the latest change among them they settle in one pass.
    for name in ("a", "b", "c"):
        (tmp_path / name).write_text(name)
        await asyncio.sleep(0.03)
    ctimes = {name: ctime_of(tmp_path / name) for name in "abc"}
    assert ctimes["c"] - ctimes["a"] >= 0.02
    clock = SplitClock(wall=ctimes["c"] + 0.5, mono=500.0)
    source = make_source(tmp_path, store, clock=clock, stable_s=2.0)
    for name in "cab":  # in no order of their ctimes (a watcher batch is a set)
        source._mark(name, None, now=500.0)
    assert await settle_passes(source, passes=1) == []
    c_due_in = 2.0 - (0.5 - source_module._CTIME_TICK_S)
    gap = ctimes["c"] - ctimes["a"]
    clock.mono += c_due_in - gap / 2  # past when a would be due by its own ctime, before c
    assert await settle_passes(source) == []
    clock.mono += gap / 2 + 0.001
    records = await settle_passes(source, passes=1)
    assert sorted(r.payload["s3"]["object"]["key"] for r in records) == ["a", "b", "c"]
