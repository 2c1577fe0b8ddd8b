"""kill -9 a process that is enqueueing: every enqueue that returned must survive."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest

from triggerd.state.sqlite import SQLiteStateStore

pytestmark = pytest.mark.integration

# Enqueues events one by one, forever, and prints each request id once enqueue has returned.
WRITER = """
import asyncio, sys
from triggerd.state.base import NewEvent
from triggerd.state.sqlite import SQLiteStateStore

async def main(path):
    store = SQLiteStateStore(path)
    await store.open()
    i = 0
    while True:
        rid = f"req-{i}"
        payload = rid.encode() * 64
        await store.enqueue(
            [NewEvent("t1", "f1", payload, rid, float(i), float(i))],
            {"t1": {"last": rid}},
        )
        sys.stdout.write(rid + "\\n")
        sys.stdout.flush()
        i += 1

asyncio.run(main(sys.argv[1]))
"""

KILL_AFTER = 150


async def test_every_acknowledged_enqueue_survives_kill_9(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WRITER, str(db), stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    printed: list[str] = []
    try:
        async with asyncio.timeout(30):
            while len(printed) < KILL_AFTER:
                line = await proc.stdout.readline()
                assert line, "the writer exited early"
                printed.append(line.decode().strip())
    finally:
        proc.send_signal(signal.SIGKILL)  # mid-way: the writer is still enqueueing
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # Ids the writer printed before dying, still in the pipe, were also acknowledged.
    printed += (await proc.stdout.read()).decode().split()

    store = SQLiteStateStore(str(db))
    await store.open()
    try:
        claimed = await store.claim("t1", 1_000_000, 30, now=1e12)
        stored = {e.request_id for e in claimed}
        assert set(printed) <= stored
        assert all(e.payload == e.request_id.encode() * 64 for e in claimed)
        # The checkpoint went in the same transaction: it is at least the last printed id.
        last = await store.get_checkpoint("t1", "last")
        assert last is not None
        assert int(last.removeprefix("req-")) >= int(printed[-1].removeprefix("req-"))
        assert await store._run(lambda c: c.execute("PRAGMA integrity_check").fetchone()) == ("ok",)
    finally:
        await store.close()
