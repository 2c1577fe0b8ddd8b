"""Opening the daemon's state store safely: what the daemon keeps beside an SQLite store
(a PostgreSQL store is opened as it is: it is shared by several daemons on purpose).

- `<store>.lock`, held (flock) while a daemon runs: a second daemon on the same store is
  refused instead of sharing its queue and checkpoints.
- `state-identity.json` in the work directory: the store's path and the identity written into
  it when it was created. A store that later is missing, empty or another one is refused
  (accepted events and checkpoints would be gone silently: a TRIM_HORIZON directory trigger
  would replay every file); `--accept-fresh-state` starts a new one.
- `state-running` in the work directory, present from start to a clean close: found at start,
  it means the previous run did not stop cleanly, and the store's integrity is checked.

Errors are `StateStoreOpenError`s: one line, with the exit status that says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

from triggerd.state.base import StateStore
from triggerd.state.factory import postgres_store, sqlite_path
from triggerd.state.pgschema import is_postgres_url
from triggerd.state.sqlite import (
    FRESH_START_HINT,
    MEMORY_PATH,
    SQLiteStateStore,
    StateStoreOpenError,
    WriteHook,
    open_error,
)
from triggerd.types import Clock, ExitCode

log = logging.getLogger(__name__)

IDENTITY_FILE = "state-identity.json"
RUNNING_FILE = "state-running"
#: Everything the guard writes is for the daemon's user only.
_MODE = 0o600


def _work_dir_error(work_dir: Path, exc: OSError) -> StateStoreOpenError:
    """The work directory (daemon.work_dir, or the default beside the store) named as what
    cannot be created or written, not the state store."""
    return StateStoreOpenError(
        f"the work directory {work_dir} (daemon.work_dir) cannot be created or written "
        f"({exc.strerror or exc}): check its permissions and free space (and ReadWritePaths= "
        "under systemd)",
        ExitCode.STATE_UNWRITABLE,
    )


@dataclass(frozen=True, slots=True)
class Previous:
    """What the work directory says about earlier runs."""

    store_id: str | None
    store_path: str | None
    unclean: bool


class StoreGuard:
    """The lock, identity marker and running flag of one store (blocking file operations:
    call them off the event loop)."""

    def __init__(self, db_path: str, work_dir: Path) -> None:
        self.db_path = db_path
        self.work_dir = work_dir
        self.lock_path = db_path + ".lock"
        self._lock_fd: int | None = None

    def acquire(self) -> Previous:
        """Take the lock and read the marker; StateStoreOpenError if either is impossible."""
        try:
            self.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise _work_dir_error(self.work_dir, exc) from None
        try:
            Path(self.db_path).parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, _MODE)
        except OSError as exc:
            raise open_error(self.db_path, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StateStoreOpenError(
                    f"the state store {self.db_path} is in use by another triggerd "
                    f"(pid {holder}, lock {self.lock_path})",
                    ExitCode.STATE_LOCKED,
                ) from None
            raise open_error(self.db_path, exc) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd
        store_id, store_path = self._read_identity()
        unclean = (self.work_dir / RUNNING_FILE).exists()
        return Previous(store_id, store_path, unclean)

    def _read_identity(self) -> tuple[str | None, str | None]:
        path = self.work_dir / IDENTITY_FILE
        try:
            doc = json.loads(path.read_text())
            return str(doc["store_id"]), str(doc.get("store", ""))
        except FileNotFoundError:
            return None, None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # Unreadable marker: no evidence of an earlier store; say so and go on.
            log.warning("state.identity_unreadable", extra={"path": str(path), "error": str(exc)})
            return None, None

    def started(self, store_id: str) -> None:
        """Record the store's identity and that a run is in progress."""
        doc = {"store": self.db_path, "store_id": store_id}
        try:
            _write_atomic(self.work_dir / IDENTITY_FILE, json.dumps(doc).encode() + b"\n")
            _write_atomic(self.work_dir / RUNNING_FILE, f"{os.getpid()}\n".encode())
        except OSError as exc:
            raise _work_dir_error(self.work_dir, exc) from None

    def stopped_cleanly(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.work_dir / RUNNING_FILE).unlink()

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _MODE)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


async def open_state_store(
    url: str,
    work_dir: Path,
    stack: AsyncExitStack,
    *,
    accept_fresh: bool = False,
    clock: Clock | None = None,
    before_write: WriteHook | None = None,
) -> StateStore:
    """Open the daemon's store (closed by `stack`): refuse a second daemon, a missing, empty
    or replaced store (unless `accept_fresh`), and a corrupt one; check integrity after an
    unclean stop."""
    if is_postgres_url(url):
        # Shared by several daemons by design: no lock file, and no identity marker (the
        # database is the one the URL names; it outlives every daemon's host).
        pg = postgres_store(url, clock=clock)
        await pg.open()
        stack.push_async_callback(pg.close)
        return pg
    path = sqlite_path(url)
    if path == MEMORY_PATH:
        store = SQLiteStateStore(path, clock=clock, before_write=before_write)
        await store.open()
        stack.push_async_callback(store.close)
        return store
    guard = StoreGuard(path, work_dir)
    previous = await asyncio.to_thread(guard.acquire)
    stack.callback(guard.release)
    if previous.unclean:
        log.warning("state.unclean_stop", extra={"path": path})
    store = SQLiteStateStore(
        path,
        clock=clock,
        create=previous.store_id is None or accept_fresh,
        check_integrity=previous.unclean,
        before_write=before_write,
    )
    await store.open()
    if previous.store_id is not None and store.store_id != previous.store_id:
        if not accept_fresh:
            await store.close()
            raise StateStoreOpenError(
                f"the state store {path} is not the one triggerd last ran with "
                f"({previous.store_path or 'unknown path'}, recorded in "
                f"{work_dir / IDENTITY_FILE}): restore that one, or {FRESH_START_HINT}",
                ExitCode.STATE_MISSING,
            )
        log.warning("state.fresh_start", extra={"path": path, "previous": previous.store_path})

    async def close() -> None:
        await store.close()
        await asyncio.to_thread(guard.stopped_cleanly)

    stack.push_async_callback(close)
    await asyncio.to_thread(guard.started, store.store_id)
    return store
