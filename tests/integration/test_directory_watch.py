"""The directory source with real watchers (inotify and polling) and the real SQLite store."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.async_source import TRIGGER, events_of, pump
from triggerd.state.sqlite import SQLiteStateStore
from triggerd.types import SourceContext, SystemClock
from triggerd_directory.config import DirectorySourceConfig
from triggerd_directory.source import DirectorySource

pytestmark = pytest.mark.integration


def make_source(
    root: Path, store: SQLiteStateStore, *, max_ready: int = 1000, **options: Any
) -> DirectorySource:
    config = DirectorySourceConfig.model_validate(
        {"type": "directory", "path": str(root), "stable_s": 0.1, **options}
    )
    ctx = SourceContext(
        trigger=TRIGGER, state=store, clock=SystemClock(), log=logging.getLogger("test.dir")
    )
    return DirectorySource(config, ctx, max_ready=max_ready)


@pytest.fixture
def watched(tmp_path: Path) -> Path:
    path = tmp_path / "watched"
    path.mkdir()
    return path


async def test_polling_mode_sees_create_modify_and_delete(
    watched: Path, store: SQLiteStateStore
) -> None:
    source = make_source(watched, store, poll_interval_s=0.05)
    await source.start()
    try:
        (watched / "p.txt").write_text("one")
        [created] = await pump(source, store, 1)
        (watched / "p.txt").write_text("two!")
        [modified] = await pump(source, store, 1)
        (watched / "p.txt").unlink()
        [deleted] = await pump(source, store, 1)
    finally:
        await source.stop()
    assert created.payload["s3"]["object"]["size"] == 3
    assert modified.payload["s3"]["object"]["size"] == 4
    assert deleted.payload["eventName"] == "ObjectRemoved:Delete"


async def test_directory_moved_in_and_out_gives_put_and_delete_per_file(
    tmp_path: Path, watched: Path, store: SQLiteStateStore
) -> None:
    outside = tmp_path / "batch 1"
    (outside / "nested").mkdir(parents=True)
    (outside / "a.txt").write_text("a")
    (outside / "nested" / "b.txt").write_text("b")
    source = make_source(watched, store)
    await source.start()
    try:
        os.rename(outside, watched / "batch 1")
        moved_in = await pump(source, store, 2)
        os.rename(watched / "batch 1", tmp_path / "archived")
        moved_out = await pump(source, store, 2)
        assert await source.receive(10, 0.5) == []
    finally:
        await source.stop()
    assert events_of(moved_in) == [
        ("ObjectCreated:Put", "batch+1/a.txt"),
        ("ObjectCreated:Put", "batch+1/nested/b.txt"),
    ]
    assert events_of(moved_out) == [
        ("ObjectRemoved:Delete", "batch+1/a.txt"),
        ("ObjectRemoved:Delete", "batch+1/nested/b.txt"),
    ]


async def test_atomic_save_by_rename_gives_one_put_with_the_final_content(
    watched: Path, store: SQLiteStateStore
) -> None:
    source = make_source(watched, store)
    await source.start()
    try:
        temp = watched / ".report.csv.partial"
        temp.write_text("col\n" * 500)
        os.replace(temp, watched / "report.csv")
        [record] = await pump(source, store, 1)
        assert await source.receive(10, 0.5) == []
    finally:
        await source.stop()
    assert record.payload["s3"]["object"]["key"] == "report.csv"
    assert record.payload["s3"]["object"]["eTag"] == hashlib.md5(b"col\n" * 500).hexdigest()


async def test_burst_of_files_is_delivered_exactly_once_under_back_pressure(
    watched: Path, store: SQLiteStateStore
) -> None:
    source = make_source(watched, store, max_ready=16)
    await source.start()
    try:
        for i in range(300):
            (watched / f"f{i:03d}.dat").write_bytes(b"%d" % i)
        records = await pump(source, store, 300, timeout_s=30.0)
        assert await source.receive(10, 0.5) == []
    finally:
        await source.stop()
    assert sorted(r.payload["s3"]["object"]["key"] for r in records) == [
        f"f{i:03d}.dat" for i in range(300)
    ]
    assert await store.queue_depth(TRIGGER) == 300


async def test_restart_on_sqlite_delivers_unsettled_and_offline_changes_and_replays_nothing(
    watched: Path, store: SQLiteStateStore
) -> None:
    (watched / "same.txt").write_text("same")
    source = make_source(watched, store)
    await source.start()
    (watched / "delivered.txt").write_text("d")
    await pump(source, store, 1)
    (watched / "in-flight.txt").write_text("i")
    [unsettled] = await source.receive(10, 5.0)  # handed out, never committed: "crash"
    await source.stop()
    (watched / "offline.txt").write_text("o")
    (watched / "delivered.txt").unlink()

    source = make_source(watched, store)
    await source.start()
    try:
        records = await pump(source, store, 3)
        assert await source.receive(10, 0.5) == []
    finally:
        await source.stop()
    assert unsettled.payload["s3"]["object"]["key"] == "in-flight.txt"
    assert events_of(records) == [
        ("ObjectCreated:Put", "in-flight.txt"),
        ("ObjectCreated:Put", "offline.txt"),
        ("ObjectRemoved:Delete", "delivered.txt"),
    ]
    assert await store.queue_depth(TRIGGER) == 4


async def test_hashing_a_large_file_keeps_the_event_loop_responsive(
    watched: Path, store: SQLiteStateStore
) -> None:
    content = os.urandom(1024 * 1024) * 48
    source = make_source(watched, store)
    await source.start()
    worst_lag = 0.0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal worst_lag
        while not stop.is_set():
            before = time.monotonic()
            await asyncio.sleep(0.01)
            worst_lag = max(worst_lag, time.monotonic() - before - 0.01)

    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(ticker())
            await asyncio.to_thread((watched / "big.bin").write_bytes, content)
            [record] = await pump(source, store, 1)
            stop.set()
    finally:
        await source.stop()
    assert record.payload["s3"]["object"]["size"] == len(content)
    assert record.payload["s3"]["object"]["eTag"] == hashlib.md5(content).hexdigest()
    assert worst_lag < 0.25


#: Inotify watches the user namespace of the watch-limit test may hold: the root and 3 of
#: its 8 new directories.
WATCH_LIMIT = 4


def run_in_namespace(
    unshare: list[str], setup: str, module: str, args: list[str]
) -> dict[str, Any]:
    """`python -m tests.integration.MODULE ARGS...` after the shell command `setup`, in new
    namespaces (`unshare` flags, as root of a new user namespace); its JSON line."""
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is not installed")
    script = f'{setup}exec "$0" -m tests.integration.{module} "$@"'
    done = subprocess.run(
        [
            "unshare",
            "--user",
            "--map-root-user",
            *unshare,
            "sh",
            "-c",
            script,
            sys.executable,
            *args,
        ],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run_with_watch_limit(tmp_path: Path, rescan_s: float, wait_s: float) -> dict[str, Any]:
    """`directory_watch_limit` in a new user namespace whose `max_inotify_watches` is
    WATCH_LIMIT (a per-namespace limit: the host's is untouched)."""
    root = tmp_path / f"tree-{rescan_s}"
    root.mkdir()
    args = [str(root), str(tmp_path / f"state-{rescan_s}.db"), str(rescan_s), str(wait_s)]
    setup = f"echo {WATCH_LIMIT} > /proc/sys/user/max_inotify_watches && "
    return run_in_namespace([], setup, "directory_watch_limit", args)


def test_a_tree_grown_past_the_inotify_watch_limit_is_delivered_by_the_rescan(
    tmp_path: Path,
) -> None:
    # The kernel refuses the watches of the directories created past the limit, and
    # watchfiles says nothing: their files are delivered by the rescan, which names them.
    everything = [f"d{i}/f.txt" for i in range(8)]
    without = run_with_watch_limit(tmp_path, rescan_s=0, wait_s=3)
    assert len(without["keys"]) <= WATCH_LIMIT - 1, "only the watched directories' files"
    with_rescans = run_with_watch_limit(tmp_path, rescan_s=1.0, wait_s=20)
    assert with_rescans["keys"] == everything
    found = with_rescans["found"]
    assert len(found) >= len(everything) - (WATCH_LIMIT - 1) and set(found) <= set(everything)


@pytest.mark.parametrize("check_ms", [200, 0], ids=["checked", "never checked"])
def test_a_file_system_mounted_on_the_watched_directory_is_watched(
    tmp_path: Path, check_ms: int
) -> None:
    # A daemon started before its mount watched the empty mount point: no notification
    # tells of the mount, and the mounted files never arrived. The watch checks its path.
    root, mounted = tmp_path / f"mount-point-{check_ms}", tmp_path / f"mounted-{check_ms}"
    root.mkdir()
    mounted.mkdir()
    (mounted / "early.txt").write_text("there before the mount")
    state = str(tmp_path / f"state-{check_ms}.db")
    # 0: a check interval longer than the wait (as before the check existed)
    interval = check_ms or 60_000
    wait_s = 15 if check_ms else 3
    args = [str(root), str(mounted), state, str(interval), str(wait_s)]
    result = run_in_namespace(["--mount"], "", "directory_mount", args)
    if check_ms:
        assert result["keys"] == ["early.txt", "late.txt"]
        (error,) = result["errors"]
        assert "a file system mounted on it" in error
    else:
        assert result == {"keys": [], "errors": []}, "the watch follows the mount point"
