"""Run inside a user namespace whose inotify watch limit is lowered (see
test_directory_watch.py): a recursive directory source whose tree grows past the limit.

`python -m tests.integration.directory_watch_limit ROOT STATE RESCAN_S WAIT_S` watches ROOT,
creates 8 subdirectories, then a file in each, receives for up to WAIT_S seconds (each batch
committed to the SQLite store at STATE, then acked; with rescans, until the rescan's report
too), and prints one JSON object: the keys delivered and the `directory.rescan_found` lines'
paths.
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
from triggerd_directory.config import DirectorySourceConfig
from triggerd_directory.source import DirectorySource

DIRECTORIES = 8


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "directory.rescan_found":
            self.found += record.__dict__["paths"]


async def main(root: Path, state: str, rescan_s: float, wait_s: float) -> None:
    log = logging.getLogger("limit")
    log.setLevel(logging.INFO)
    lines = Lines()
    log.addHandler(lines)
    store = SQLiteStateStore(state)
    await store.open()
    config = DirectorySourceConfig.model_validate(
        {"type": "directory", "path": str(root), "stable_s": 0.1, "rescan_interval_s": rescan_s}
    )
    ctx = SourceContext(trigger=TRIGGER, state=store, clock=SystemClock(), log=log)
    source = DirectorySource(config, ctx)
    await source.start()
    got: list[Record] = []
    try:
        for i in range(DIRECTORIES):
            (root / f"d{i}").mkdir()
        await asyncio.sleep(0.5)  # each new directory is watched now, or never will be
        for i in range(DIRECTORIES):
            (root / f"d{i}" / "f.txt").write_text("x")
        deadline = time.monotonic() + wait_s

        def done() -> bool:
            # With rescans, until the rescan's report too (once what it found settled).
            return len(got) >= DIRECTORIES and (rescan_s == 0 or bool(lines.found))

        while not done() and time.monotonic() < deadline:
            batch = await source.receive(DIRECTORIES, 0.2)
            if batch:
                await commit(source, store, TRIGGER, batch)
            got += batch
    finally:
        await source.stop()
        await store.close()
    keys = sorted(r.payload["s3"]["object"]["key"] for r in got)
    print(json.dumps({"keys": keys, "found": sorted(lines.found)}))


if __name__ == "__main__":
    root, state, rescan_s, wait_s = sys.argv[1:]
    asyncio.run(main(Path(root), state, float(rescan_s), float(wait_s)))
