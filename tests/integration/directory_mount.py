"""Run inside a user and mount namespace (see test_directory_watch.py): a directory source
started on an empty mount point, a file system mounted on it afterwards, as when the daemon
starts before its mount.

`python -m tests.integration.directory_mount ROOT SOURCE STATE CHECK_MS WAIT_S` watches ROOT
(its path is checked every CHECK_MS), bind-mounts SOURCE (which holds `early.txt`) on it,
writes `late.txt` into it, receives for up to WAIT_S seconds (each batch committed to the
SQLite store at STATE, then acked) and prints one JSON object: the keys delivered and the
`directory.watch_failed` lines' errors.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from pathlib import Path

from bench.harness import commit
from tests.async_source import TRIGGER
from triggerd.state.sqlite import SQLiteStateStore
from triggerd.types import Record, SourceContext, SystemClock
from triggerd_directory import source as source_module
from triggerd_directory.config import DirectorySourceConfig


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "directory.watch_failed":
            self.errors.append(record.__dict__["error"])


async def main(root: Path, mounted: Path, state: str, check_ms: int, wait_s: float) -> None:
    log = logging.getLogger("mount")
    log.setLevel(logging.INFO)
    lines = Lines()
    log.addHandler(lines)
    source_module.ROOT_CHECK_MS = check_ms
    store = SQLiteStateStore(state)
    await store.open()
    config = DirectorySourceConfig.model_validate(
        {"type": "directory", "path": str(root), "stable_s": 0.1, "rescan_interval_s": 0}
    )
    ctx = SourceContext(trigger=TRIGGER, state=store, clock=SystemClock(), log=log)
    source = source_module.DirectorySource(config, ctx)
    await source.start()
    got: list[Record] = []
    try:
        mount = await asyncio.create_subprocess_exec("mount", "--bind", str(mounted), str(root))
        assert await mount.wait() == 0, "mount --bind failed"
        (root / "late.txt").write_text("written once mounted")
        deadline = time.monotonic() + wait_s
        while len(got) < 2 and time.monotonic() < deadline:
            batch = await source.receive(2, 0.2)
            if batch:
                await commit(source, store, TRIGGER, batch)
            got += batch
    finally:
        await source.stop()
        await store.close()
    keys = sorted(r.payload["s3"]["object"]["key"] for r in got)
    print(json.dumps({"keys": keys, "errors": lines.errors}))


if __name__ == "__main__":
    root, mounted, state, check_ms, wait_s = sys.argv[1:]
    asyncio.run(main(Path(root), Path(mounted), state, int(check_ms), float(wait_s)))
