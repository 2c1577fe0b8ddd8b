"""Opening the daemon's state store: missing, empty, replaced, corrupt, truncated and locked
stores are refused with one line and the exit status that says why; an integrity check after
an unclean stop; files created 0600; write failures reported and cleared."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import stat
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from triggerd.state.base import NewEvent
from triggerd.state.guard import IDENTITY_FILE, RUNNING_FILE, open_state_store
from triggerd.state.sqlite import SQLiteStateStore, StateStoreError, StateStoreOpenError
from triggerd.types import ExitCode

pytestmark = pytest.mark.asyncio


def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state' / 'state.db'}"


def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "state.db"


async def run_once(tmp_path: Path, *, events: int = 0, accept_fresh: bool = False) -> str:
    """Open, optionally queue events, close cleanly; returns the store's identity."""
    async with AsyncExitStack() as stack:
        store = await open_state_store(
            url(tmp_path), tmp_path / "run", stack, accept_fresh=accept_fresh
        )
        if events:
            await store.enqueue(
                [NewEvent("t", "f", b"x" * 2000, f"r{i}", 0.0, 0.0) for i in range(events)]
            )
        assert isinstance(store, SQLiteStateStore)
        return store.store_id


async def refused(tmp_path: Path, **kw: bool) -> StateStoreOpenError:
    with pytest.raises(StateStoreOpenError) as info:
        await run_once(tmp_path, **kw)
    assert "\n" not in str(info.value)
    return info.value


async def test_a_first_start_creates_the_store_and_records_its_identity(tmp_path: Path) -> None:
    store_id = await run_once(tmp_path)
    marker = json.loads((tmp_path / "run" / IDENTITY_FILE).read_text())
    assert marker == {"store": str(db(tmp_path)), "store_id": store_id}
    assert not (tmp_path / "run" / RUNNING_FILE).exists()  # a clean close
    assert await run_once(tmp_path) == store_id  # the same store next time


async def test_a_deleted_store_is_refused_unless_a_fresh_start_is_accepted(
    tmp_path: Path,
) -> None:
    first = await run_once(tmp_path, events=3)
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(str(db(tmp_path)) + suffix)
    error = await refused(tmp_path)
    assert error.exit_code == ExitCode.STATE_MISSING
    assert "does not exist" in str(error) and "--accept-fresh-state" in str(error)
    assert not db(tmp_path).exists()  # refusing creates nothing
    second = await run_once(tmp_path, accept_fresh=True)
    assert second != first
    assert await run_once(tmp_path) == second  # the new one is remembered


async def test_a_zero_byte_store_is_refused(tmp_path: Path) -> None:
    await run_once(tmp_path, events=3)
    db(tmp_path).write_bytes(b"")
    error = await refused(tmp_path)
    assert error.exit_code == ExitCode.STATE_MISSING and "is empty" in str(error)
    assert db(tmp_path).stat().st_size == 0  # untouched
    await run_once(tmp_path, accept_fresh=True)


async def test_another_store_in_its_place_is_refused(tmp_path: Path) -> None:
    await run_once(tmp_path)
    other = tmp_path / "other"
    await run_once(other)
    db(tmp_path).write_bytes(db(other).read_bytes())
    error = await refused(tmp_path)
    assert error.exit_code == ExitCode.STATE_MISSING
    assert "is not the one triggerd last ran with" in str(error)


async def test_a_file_that_is_not_a_database_is_corrupt(tmp_path: Path) -> None:
    await run_once(tmp_path)
    db(tmp_path).write_bytes(b"this is not sqlite\n" * 300)
    error = await refused(tmp_path)
    assert error.exit_code == ExitCode.STATE_CORRUPT and "corrupt" in str(error)


async def test_a_truncated_store_is_corrupt(tmp_path: Path) -> None:
    await run_once(tmp_path, events=50)
    size = db(tmp_path).stat().st_size
    with db(tmp_path).open("r+b") as f:
        f.truncate(size // 2)
    error = await refused(tmp_path)
    assert error.exit_code == ExitCode.STATE_CORRUPT and "truncated" in str(error)


async def corrupt_last_page(tmp_path: Path) -> None:
    await run_once(tmp_path, events=50)
    with db(tmp_path).open("r+b") as f:
        f.seek(-4096, os.SEEK_END)
        f.write(b"\xff" * 4096)


async def test_the_integrity_check_runs_only_after_an_unclean_stop(tmp_path: Path) -> None:
    await corrupt_last_page(tmp_path)
    await run_once(tmp_path)  # a clean stop before: no full check, the damage goes unseen
    (tmp_path / "run" / RUNNING_FILE).write_text("12345\n")  # as a kill -9 leaves it
    error = await refused(tmp_path)
    assert error.exit_code == ExitCode.STATE_CORRUPT
    assert "failed its integrity check" in str(error)


async def test_an_intact_store_passes_the_check_after_an_unclean_stop(tmp_path: Path) -> None:
    await run_once(tmp_path, events=5)
    (tmp_path / "run" / RUNNING_FILE).write_text("12345\n")
    await run_once(tmp_path)
    assert not (tmp_path / "run" / RUNNING_FILE).exists()


async def test_a_second_daemon_on_the_same_store_is_refused(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        await open_state_store(url(tmp_path), tmp_path / "run", stack)
        error = await refused(tmp_path)
        assert error.exit_code == ExitCode.STATE_LOCKED
        assert f"pid {os.getpid()}" in str(error)
    await run_once(tmp_path)  # released on close


async def test_files_are_created_for_the_owner_only(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        store = await open_state_store(url(tmp_path), tmp_path / "run", stack)
        await store.enqueue([NewEvent("t", "f", b"{}", "r", 0.0, 0.0)])
        paths = [db(tmp_path), Path(str(db(tmp_path)) + "-wal"), Path(str(db(tmp_path)) + ".lock")]
        paths += [tmp_path / "run" / IDENTITY_FILE, tmp_path / "run" / RUNNING_FILE]
        for path in paths:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


async def test_a_failing_write_is_reported_until_one_succeeds(tmp_path: Path) -> None:
    full = [True]

    def hook(conn: sqlite3.Connection) -> None:
        if full[0]:
            raise sqlite3.OperationalError("database or disk is full")

    store = SQLiteStateStore(str(tmp_path / "s.db"), before_write=hook)
    full[0] = False
    await store.open()
    try:
        full[0] = True
        with pytest.raises(StateStoreError):
            await store.enqueue([NewEvent("t", "f", b"{}", "r", 0.0, 0.0)])
        assert store.write_error == "database or disk is full"
        assert await store.queue_depth() == 0  # rolled back; reads still work
        full[0] = False
        await store.enqueue([NewEvent("t", "f", b"{}", "r", 0.0, 0.0)])
        assert store.write_error is None
    finally:
        await store.close()


async def test_a_work_dir_that_cannot_be_created_is_named_as_the_work_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(StateStoreOpenError) as info:
        async with AsyncExitStack() as stack:
            await open_state_store(url(tmp_path), blocker / "run", stack)
    assert info.value.exit_code == ExitCode.STATE_UNWRITABLE
    assert str(info.value).startswith(f"the work directory {blocker / 'run'} (daemon.work_dir) ")
    assert "state.db" not in str(info.value)
