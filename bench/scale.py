"""Scale figures of the daemon, each beside a baseline measured in the same run.

- directory: `triggerd run` (a subprocess, default settings) watching an empty directory
  into which 1,000 / 10,000 / 50,000 small files are written; the time from the first file
  written to the last invocation of the no-op function (counted on /metrics), and the
  daemon's peak RSS, against a bare `watchfiles.awatch` loop counting the same workload's
  added files (bench/directory.py's).
- async backlog: 100,000 events enqueued into the durable queue in 1,000-event transactions
  (the rate as the queue grows), then 10,000 more from 64 concurrent callers at that depth
  (group commit), against a bare sqlite3 loop committing the same batch sizes; then the
  drain rate and the file size after (bench/async_queue.py's `drain_rows`).
- idle: two daemons side by side for `idle_s` (60 s) after they got ready: 50 local
  functions with 200 triggers (per function a sync webhook, an event-mode webhook, a
  `rate(1 day)` schedule and a directory), and one function with 200 `rate(1 day)`
  schedules; CPU time (user + system, /proc) over the window as a share of one core, and
  RSS, against a bare `asyncio.sleep` process measured the same way.
- s3: a 20,000-object moto_server bucket scanned by the S3 source in poll mode (first scan,
  then a rescan with no changes; bench/s3_poll.py's), against a bare ListObjectsV2 loop, and
  the benchmark process's RSS growth over the scans.

`python -m bench --only scale` runs everything; `python -m bench.scale --part idle` one part.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench import (
    BENCH_DIR,
    HELLO_DIR,
    BenchError,
    Row,
    async_queue,
    directory,
    format_table,
    run_async,
    s3_poll,
)
from bench.harness import free_port, stop_process, stop_session

NAME = "scale"
#: Runtime packages (boto3) shared by the benchmark daemons: installed once, not per run.
RUNTIMES_DIR = BENCH_DIR / ".runtimes"
PARTS = ("directory", "backlog", "idle", "s3")


@dataclass(frozen=True, slots=True)
class Settings:
    directory_files: tuple[int, ...] = (1_000, 10_000, 50_000)
    backlog: int = 100_000
    backlog_callers: int = 64
    backlog_at_depth: int = 10_000
    idle_s: float = 60.0
    idle_functions: int = 50
    idle_schedules: int = 200
    s3_objects: int = 20_000
    parts: tuple[str, ...] = PARTS
    ready_timeout_s: float = 120.0
    deliver_timeout_s: float = 600.0


QUICK = Settings(
    directory_files=(1_000, 10_000),
    backlog=20_000,
    backlog_at_depth=2_000,
    idle_s=20.0,
    s3_objects=2_000,
)
SMOKE = Settings(
    directory_files=(50,),
    backlog=500,
    backlog_at_depth=100,
    idle_s=1.0,
    idle_functions=2,
    idle_schedules=4,
    s3_objects=30,
    parts=("directory", "backlog", "idle"),
)


# ---- a daemon as a subprocess ---------------------------------------------------------------


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    control: str
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid


def _daemon_toml(tmp: Path, control: str, listen: str = "") -> str:
    return (
        "[daemon]\n"
        f'state = "sqlite:///{tmp}/state/triggerd.db"\n'
        f'listen = "{listen}"\n'
        f'control_listen = "{control}"\n'
        f'runtimes_dir = "{RUNTIMES_DIR}"\n'
    )


def _function_toml(name: str) -> str:
    return f'[functions.{name}]\nbackend = "local"\nhandler = "app.handler"\ncode = "{HELLO_DIR}"\n'


def _trigger_toml(name: str, function: str, source: str) -> str:
    return f'[[triggers]]\nname = "{name}"\nfunction = "{function}"\nsource = {source}\n'


@contextlib.contextmanager
def daemon(
    tmp: Path, body: str, control: str, timeout_s: float, listen: str = ""
) -> Iterator[Daemon]:
    """`triggerd run` on `body` (functions and triggers) until its ready summary; stopped by
    pid afterwards, whatever happens."""
    config = tmp / "triggerd.toml"
    config.write_text(_daemon_toml(tmp, control, listen) + body)
    log = tmp / "daemon.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "triggerd", "run", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            start_new_session=True,
        )
    try:
        _wait_ready(proc, timeout_s, log)
        yield Daemon(proc, control, log)
    finally:
        stop_session(proc)


def _wait_ready(proc: subprocess.Popen[bytes], timeout_s: float, log: Path) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    line = b""
    # The summary's first line comes once the daemon is ready (a thread: readline blocks).
    reader = _LineReader(proc)
    while time.monotonic() < deadline:
        line = reader.line(0.2)
        if line.startswith(b"triggerd "):
            return
        if proc.poll() is not None:
            break
    tail = log.read_text(errors="replace")[-2000:]
    raise BenchError(f"the daemon did not get ready ({line!r}); its log ends:\n{tail}")


class _LineReader:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        import queue
        import threading

        self._lines: queue.Queue[bytes] = queue.Queue()
        assert proc.stdout is not None
        stdout = proc.stdout

        def pump() -> None:
            for line in stdout:
                self._lines.put(line)

        threading.Thread(target=pump, daemon=True).start()

    def line(self, timeout_s: float) -> bytes:
        import queue

        try:
            return self._lines.get(timeout=timeout_s)
        except queue.Empty:
            return b""


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its waited-for children."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


_INVOCATIONS = re.compile(
    rb'^triggerd_invocations_total\{function="([^"]+)",outcome="ok"\} (\S+)', re.M
)


def invocations_ok(control: str) -> int:
    """Successful invocations of every function, from the daemon's /metrics."""
    with urllib.request.urlopen(f"http://{control}/metrics", timeout=10) as resp:
        text = resp.read()
    return int(sum(float(m.group(2)) for m in _INVOCATIONS.finditer(text)))


# ---- directory ----------------------------------------------------------------------------


async def directory_rows(root: Path, settings: Settings) -> list[Row]:
    rows: list[Row] = []
    for files in settings.directory_files:
        work = root / f"directory-{files}"
        (work / "inbox").mkdir(parents=True)
        (work / "bare").mkdir()
        dsettings = replace(directory.Settings(), files=files, timeout_s=settings.deliver_timeout_s)
        bare = await directory.baseline_rate(work / "bare", dsettings)
        body = _function_toml("hello") + _trigger_toml(
            "inbox", "hello", f'{{ type = "directory", path = "{work / "inbox"}" }}'
        )
        control = f"127.0.0.1:{free_port()}"
        with daemon(work, body, control, settings.ready_timeout_s) as d:
            start_kb = rss_kb(d.pid)
            peak_kb = start_kb

            async def until_done(d: Daemon = d, files: int = files) -> int:
                nonlocal peak_kb
                while True:
                    n = await asyncio.to_thread(invocations_ok, d.control)
                    peak_kb = max(peak_kb, rss_kb(d.pid))
                    if n >= files:
                        return n
                    await asyncio.sleep(0.2)

            run = await directory.timed_workload(work / "inbox", dsettings, until_done)
            end_kb = rss_kb(d.pid)
        rows.append(
            Row(
                NAME,
                f"directory, {files:,} files written into a watched directory: seconds from "
                f"the first file to the last invocation (daemon RSS {start_kb / 1024:.0f} MB "
                f"ready, peak {peak_kb / 1024:.0f} MB, {end_kb / 1024:.0f} MB after)",
                files / run.rate,
                files / bare.rate,
                baseline_desc="bare watchfiles.awatch loop counting the same files added "
                "(bench/directory.py)",
                digits=1,
            )
        )
    return rows


# ---- async backlog ------------------------------------------------------------------------


async def backlog_rows(root: Path, settings: Settings) -> list[Row]:
    path = root / "backlog.db"
    store = await async_queue.fresh_store(path)
    try:
        t0 = time.perf_counter()
        await async_queue.queue_backlog(store, settings.backlog)
        fill = settings.backlog / (time.perf_counter() - t0)
        depth = await store.queue_depth(async_queue.TRIGGER)
        at_depth = await async_queue.triggerd_enqueue(
            store, settings.backlog_callers, settings.backlog_at_depth
        )
    finally:
        await store.close()
    raw_path = root / "raw-fill.db"
    await (await async_queue.fresh_store(raw_path)).close()  # the same schema, empty
    raw_fill = await asyncio.to_thread(async_queue.raw_enqueue, raw_path, 1000, settings.backlog)
    raw_callers = await asyncio.to_thread(
        async_queue.raw_enqueue,
        raw_path,
        settings.backlog_callers,
        settings.backlog_at_depth,
    )
    rows = [
        Row(
            NAME,
            f"async backlog: enqueue events/s filling the queue to {settings.backlog:,} "
            "(1,000 events per enqueue)",
            fill,
            raw_fill,
            baseline_desc="bare sqlite3 loop committing 1,000 rows per transaction, same "
            "file settings",
            digits=0,
        ),
        Row(
            NAME,
            f"async backlog: enqueue events/s at a depth of {depth:,}, "
            f"{settings.backlog_callers} callers one event each (group commit)",
            at_depth,
            raw_callers,
            baseline_desc=f"bare sqlite3 loop committing {settings.backlog_callers} rows per "
            "transaction into a file holding the same backlog",
            digits=0,
        ),
    ]
    drain = replace(async_queue.Settings(), backlog=settings.backlog)
    for row in await async_queue.drain_rows(root, drain):
        rows.append(replace(row, benchmark=NAME, metric=f"async backlog: {row.metric}"))
    return rows


# ---- idle ---------------------------------------------------------------------------------


def _many_triggers(root: Path, functions: int) -> str:
    body = ""
    for i in range(functions):
        fn = f"f{i:02d}"
        inbox = root / "inboxes" / fn
        inbox.mkdir(parents=True)
        body += _function_toml(fn)
        body += _trigger_toml(f"{fn}-sync", fn, f'{{ type = "webhook", path = "/sync/{fn}" }}')
        body += _trigger_toml(
            f"{fn}-event",
            fn,
            f'{{ type = "webhook", path = "/event/{fn}", invocation_mode = "event" }}',
        )
        body += _trigger_toml(
            f"{fn}-daily", fn, '{ type = "schedule", expression = "rate(1 day)" }'
        )
        body += _trigger_toml(f"{fn}-inbox", fn, f'{{ type = "directory", path = "{inbox}" }}')
    return body


def _many_schedules(count: int) -> str:
    body = _function_toml("hello")
    for i in range(count):
        body += _trigger_toml(
            f"daily-{i:03d}", "hello", '{ type = "schedule", expression = "rate(1 day)" }'
        )
    return body


@dataclass
class Idle:
    cpu_share: float
    rss_kb: int


def _watch(pids: list[int], seconds: float) -> list[Idle]:
    """Each process's CPU over `seconds` as a share of one core, and its RSS at the end."""
    before = [cpu_s(p) for p in pids]
    t0 = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - t0
    return [Idle((cpu_s(p) - b) / elapsed, rss_kb(p)) for p, b in zip(pids, before, strict=True)]


def idle_rows(root: Path, settings: Settings) -> list[Row]:
    many, sched = root / "many", root / "schedules"
    many.mkdir()
    sched.mkdir()
    bare = subprocess.Popen(
        [sys.executable, "-c", "import asyncio; asyncio.run(asyncio.sleep(1e9))"],
        stdin=subprocess.DEVNULL,
    )
    body_many = _many_triggers(many, settings.idle_functions)
    with (
        contextlib.closing(_Killer(bare)),
        daemon(
            many,
            body_many,
            f"127.0.0.1:{free_port()}",
            settings.ready_timeout_s,
            listen=f"127.0.0.1:{free_port()}",
        ) as d_many,
        daemon(
            sched,
            _many_schedules(settings.idle_schedules),
            f"127.0.0.1:{free_port()}",
            settings.ready_timeout_s,
        ) as d_sched,
    ):
        time.sleep(min(5.0, settings.idle_s))  # the start's own work (first scans) settles
        load = "/".join(f"{x:.1f}" for x in os.getloadavg())
        m, s, b = _watch([d_many.pid, d_sched.pid, bare.pid], settings.idle_s)
    window = f"over {settings.idle_s:.0f} s; load average {load}"
    base = "bare `asyncio.run(asyncio.sleep(...))` process, measured over the same window"
    triggers = settings.idle_functions * 4
    return [
        Row(
            NAME,
            f"idle: {settings.idle_functions} functions, {triggers} triggers (webhooks, "
            f"schedules, directories): CPU, % of one core ({window})",
            m.cpu_share * 100,
            b.cpu_share * 100 or None,  # a bare sleeping process often uses no tick
            baseline_desc=base,
            digits=2,
        ),
        Row(
            NAME,
            f"idle: {settings.idle_functions} functions, {triggers} triggers: daemon RSS (MB)",
            m.rss_kb / 1024,
            b.rss_kb / 1024,
            baseline_desc=base,
            digits=1,
        ),
        Row(
            NAME,
            f"idle: {settings.idle_schedules} `rate(1 day)` schedules: CPU, % of one core "
            f"({window})",
            s.cpu_share * 100,
            b.cpu_share * 100 or None,  # a bare sleeping process often uses no tick
            target=0.5,
            baseline_desc=base,
            digits=2,
        ),
        Row(
            NAME,
            f"idle: {settings.idle_schedules} `rate(1 day)` schedules: daemon RSS (MB)",
            s.rss_kb / 1024,
            b.rss_kb / 1024,
            baseline_desc=base,
            digits=1,
        ),
    ]


class _Killer:
    def __init__(self, proc: subprocess.Popen[Any]) -> None:
        self.proc = proc

    def close(self) -> None:
        self.proc.kill()
        stop_process(self.proc)


# ---- s3 -----------------------------------------------------------------------------------


async def s3_rows(settings: Settings) -> list[Row]:
    before = rss_kb(os.getpid())
    s3 = replace(
        s3_poll.Settings(),
        objects=settings.s3_objects,
        # moto answers a PutObject in 13-25 ms: filling 20,000 takes minutes on a busy machine
        fill_concurrency=32,
        timeout_s=settings.deliver_timeout_s * 3,
    )
    rows = await s3_poll.measure(s3)
    after = rss_kb(os.getpid())
    out = [
        replace(
            row,
            benchmark=NAME,
            metric=f"s3, {settings.s3_objects:,}-object moto bucket: {row.metric}",
        )
        for row in rows
    ]
    out.append(
        Row(
            NAME,
            f"s3, {settings.s3_objects:,}-object bucket: benchmark process RSS after the "
            "scans (MB; the source runs in it)",
            after / 1024,
            before / 1024,
            baseline_desc="the same process before the bucket was filled and scanned",
            digits=1,
        )
    )
    return out


# ---- run ----------------------------------------------------------------------------------


async def measure(settings: Settings) -> list[Row]:
    rows: list[Row] = []
    RUNTIMES_DIR.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="triggerd-scale-") as name:
        root = Path(name)
        if "directory" in settings.parts:
            rows += await directory_rows(root, settings)
        if "backlog" in settings.parts:
            rows += await backlog_rows(root, settings)
        if "idle" in settings.parts:
            rows += await asyncio.to_thread(idle_rows, root, settings)
        if "s3" in settings.parts:
            rows += await s3_rows(settings)
    return rows


def run(settings: Settings) -> list[Row]:
    return run_async(measure(settings))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--part", action="append", choices=PARTS, help="repeatable; default all")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else Settings()
    if args.part:
        settings = replace(settings, parts=tuple(args.part))
    print(format_table(run(settings)), flush=True)


if __name__ == "__main__":
    main()
