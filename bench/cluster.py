"""Several daemons on one PostgreSQL state store (real `triggerd run` subprocesses, a fresh
database on the server that `TRIGGERD_BENCH_PG` names, default the machine's 127.0.0.1:5432 as
postgres; created and dropped here), against one daemon on the SQLite store, in one run.

- Drain: `backlog` Invoke API `Event` invocations of the no-op hello function are put on the
  function's durable queue (`invoke-api:hello`: the rows the Invoke API writes, written by the
  store's own `enqueue` before the daemons start, due in an hour). Once 1, 2 or 3 daemons
  (`workers` local workers each) are ready, every queued event is made due (one UPDATE) and
  one Invoke API `Event` call to each daemon wakes its queue (a daemon on SQLite hears of no
  other writer); the figure is the backlog and those calls over the time from the wake-up to
  the last invocation (each daemon's /metrics). The baseline is one daemon on the SQLite store
  draining the same backlog the same way. Each row names the load average when it started (the
  machine is shared) and how the invocations spread over the daemons.
- CPU: the daemons' own CPU time (user + system, /proc; their workers not included) per event
  over the drain, against the SQLite daemon's.
- Memory: each daemon's RSS (its own process, not its workers) after the drain, against its
  RSS when it was ready.
- Failover: two daemons with a `rate(1 second)` schedule (`TRIGGERD_TEST_SECOND_RATES=1`) and
  `singleton_lease_timeout_s = L`; the lease holder is killed (kill -9) and the figure is the
  time from the kill to the first invocation (by the survivor) of a tick due after the kill.
  The killed daemon is restarted as a standby and the next round kills the new leader; median
  of `failover_rounds`. Its baseline is L: a takeover waits for the lease to run out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from bench import BENCH_DIR, HELLO_DIR, BenchError, Row, median, run_async
from bench.harness import free_port
from bench.idle_rss import rss_mb
from bench.pg_state import fresh_database
from bench.scale import cpu_s, invocations_ok
from triggerd.state.base import NewEvent
from triggerd.state.factory import create_state_store, sqlite_path

NAME = "cluster"
FUNCTION = "hello"
QUEUE = f"invoke-api:{FUNCTION}"  # triggerd.http.queues.queue_name
TICKS_DIR = BENCH_DIR / "functions" / "ticks"
SCHEDULE = "every-second"
RUNTIMES_DIR = BENCH_DIR / ".runtimes"
INVOKE_PATH = f"/2015-03-31/functions/{FUNCTION}/invocations"
HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class Settings:
    backlog: int = 5_000
    #: Daemon counts on the PostgreSQL store.
    daemons: tuple[int, ...] = (1, 2, 3)
    #: Local workers per daemon (reserved and provisioned concurrency of the function).
    workers: int = 4
    #: singleton_lease_timeout_s values of the failover rows.
    failover_leases_s: tuple[float, ...] = (2.0, 15.0)
    failover_rounds: int = 3
    ready_timeout_s: float = 120.0
    drain_timeout_s: float = 300.0


QUICK = Settings(backlog=2_000, failover_leases_s=(2.0,))
SMOKE = Settings(
    backlog=100,
    daemons=(1,),
    workers=1,
    failover_leases_s=(2.0,),
    failover_rounds=1,
)


def load_average() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


# ---- daemons as subprocesses ---------------------------------------------------------------


@dataclass
class Daemon:
    """One `triggerd run` subprocess, its output in files under its own directory."""

    root: Path
    config: str
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    runs: int = 0

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise BenchError("the daemon is not running")
        return self.proc.pid

    def spawn(self, extra_env: dict[str, str] | None = None) -> None:
        self.runs += 1
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / "triggerd.toml"
        path.write_text(self.config)
        env = {**os.environ, **self.env, **(extra_env or {})}
        with (
            open(self.root / f"stdout.{self.runs}.log", "wb") as out,
            open(self.root / f"stderr.{self.runs}.log", "wb") as err,
        ):
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "triggerd", "run", str(path)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
                cwd=self.root,
            )

    async def ready(self, timeout_s: float) -> None:
        """Wait for the ready summary ("... trigger(s) ...") on stdout."""
        stdout = self.root / f"stdout.{self.runs}.log"
        deadline = time.monotonic() + timeout_s
        while b"trigger(s)" not in stdout.read_bytes():
            if self.proc is None or self.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"a daemon did not get ready; its log ends:\n{self.tail()}")
            await asyncio.sleep(0.05)

    def tail(self) -> str:
        err = self.root / f"stderr.{self.runs}.log"
        return err.read_text(errors="replace")[-2000:] if err.exists() else ""

    def kill9(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait(10)  # already dead: reaping is immediate

    async def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
            await asyncio.to_thread(proc.wait, 10)


@contextlib.asynccontextmanager
async def running(daemons: list[Daemon], timeout_s: float) -> AsyncIterator[list[Daemon]]:
    """The daemons started side by side and ready; stopped (by PID) on exit, whatever
    happens."""
    try:
        for d in daemons:
            d.spawn()
        await asyncio.gather(*(d.ready(timeout_s) for d in daemons))
        yield daemons
    finally:
        for d in daemons:
            await d.stop()


# ---- drain --------------------------------------------------------------------------------


def drain_config(root: Path, state: str, control: str, workers: int) -> str:
    return f"""
[daemon]
state = "{state}"
listen = ""
control_listen = "{control}"
work_dir = "{root / "work"}"
runtimes_dir = "{RUNTIMES_DIR}"
log_level = "warning"

[functions.{FUNCTION}]
handler = "app.handler"
code = "{HELLO_DIR}"
timeout_s = 30
reserved_concurrency = {workers}
provisioned_concurrency = {workers}
"""


async def load_backlog(state: str, count: int) -> None:
    """`count` Event invocations of the hello function, due in an hour (made due later)."""
    store = create_state_store(state)
    await store.open()
    try:
        now = time.time()
        for start in range(0, count, 1000):
            await store.enqueue(
                [
                    NewEvent(QUEUE, FUNCTION, b'{"n": %d}' % n, str(uuid.uuid4()), now, now + HOUR)
                    for n in range(start, min(count, start + 1000))
                ]
            )
    finally:
        await store.close()


async def make_due(state: str) -> None:
    """Every queued event claimable now (the daemons learn of it from the next enqueue)."""
    if state.startswith("sqlite:"):
        path = sqlite_path(state)

        def update() -> None:
            with contextlib.closing(sqlite3.connect(path)) as db, db:
                db.execute("UPDATE queue SET available_at = ?", (time.time(),))

        await asyncio.to_thread(update)
        return
    import asyncpg

    conn = await asyncpg.connect(state)
    try:
        await conn.execute("UPDATE triggerd.queue SET available_at = $1", time.time())
    finally:
        await conn.close()


def invoke_event(control: str) -> None:
    """One Invoke API `Event` call: its enqueue wakes the daemon's queue."""
    request = urllib.request.Request(
        f"http://{control}{INVOKE_PATH}",
        data=b'{"wake": true}',
        headers={"X-Amz-Invocation-Type": "Event", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        if resp.status != 202:
            raise BenchError(f"the Invoke API answered {resp.status} to an Event call")


@dataclass(frozen=True, slots=True)
class Drain:
    rate: float
    per_daemon: list[int]
    rss_ready_mb: list[float]
    rss_after_mb: list[float]
    #: The daemons' own CPU time (user + system, not their workers') per event invoked.
    cpu_per_event_us: float
    load: str


async def drain(root: Path, state: str, count: int, settings: Settings) -> Drain:
    """Load the backlog, start `count` daemons on `state`, time the drain."""
    load = load_average()
    await load_backlog(state, settings.backlog)
    daemons = [
        Daemon(
            root / f"d{i}",
            drain_config(root / f"d{i}", state, f"127.0.0.1:{port}", settings.workers),
        )
        for i, port in enumerate(free_port() for _ in range(count))
    ]
    controls = [d.config.split('control_listen = "')[1].split('"')[0] for d in daemons]
    async with running(daemons, settings.ready_timeout_s):
        rss_ready = [rss_mb(d.pid) for d in daemons]
        await make_due(state)
        cpu_before = sum(cpu_s(d.pid) for d in daemons)
        started = time.time()
        await asyncio.gather(*(asyncio.to_thread(invoke_event, c) for c in controls))
        total = settings.backlog + count  # and the waking calls
        deadline = started + settings.drain_timeout_s
        while True:
            counts = await asyncio.gather(*(asyncio.to_thread(invocations_ok, c) for c in controls))
            if sum(counts) >= total:
                elapsed = time.time() - started
                break
            if time.time() > deadline:
                raise BenchError(f"only {sum(counts)} of {total} events were invoked")
            await asyncio.sleep(0.05)
        rss_after = [rss_mb(d.pid) for d in daemons]
        cpu_us = (sum(cpu_s(d.pid) for d in daemons) - cpu_before) / total * 1e6
    return Drain(total / elapsed, list(counts), rss_ready, rss_after, cpu_us, load)


def drain_rows(sqlite: Drain, pg: dict[int, Drain], settings: Settings) -> list[Row]:
    what = (
        f"drain events/s, Event backlog of {settings.backlog:,}, {settings.workers} workers/daemon"
    )
    rows = [
        Row(
            NAME,
            f"{what}: 1 daemon on SQLite (load avg {sqlite.load})",
            sqlite.rate,
            digits=0,
        )
    ]
    for n, d in pg.items():
        spread = "/".join(str(c) for c in d.per_daemon)
        rows.append(
            Row(
                NAME,
                f"{what}: {n} daemon(s) on PostgreSQL (invoked {spread}; load avg {d.load})",
                d.rate,
                sqlite.rate,
                baseline_desc="one daemon on the SQLite store draining the same backlog, same run",
                digits=0,
            )
        )
    for n, d in pg.items():
        rows.append(
            Row(
                NAME,
                f"daemon CPU per event (us, the daemons' own, not their workers'): {n} daemon(s) "
                "on PostgreSQL",
                d.cpu_per_event_us,
                sqlite.cpu_per_event_us,
                baseline_desc="CPU per event of the one daemon on the SQLite store, same run",
                digits=0,
            )
        )
    for label, d in [("1 daemon on SQLite", sqlite)] + [
        (f"{n} daemon(s) on PostgreSQL", d) for n, d in pg.items()
    ]:
        rows.append(
            Row(
                NAME,
                f"daemon RSS after the drain, largest of {label} (MB; each: "
                + "/".join(f"{mb:.1f}" for mb in d.rss_after_mb)
                + ")",
                max(d.rss_after_mb),
                max(d.rss_ready_mb),
                baseline_desc="the same daemon's RSS when it was ready (before the drain)",
                digits=1,
            )
        )
    return rows


# ---- failover -----------------------------------------------------------------------------


def schedule_config(root: Path, state: str, lease_s: float) -> str:
    return f"""
[daemon]
state = "{state}"
listen = ""
control_listen = ""
work_dir = "{root / "work"}"
runtimes_dir = "{RUNTIMES_DIR}"
log_level = "warning"
shutdown_timeout_s = 5
lease_timeout_s = 10
singleton_lease_timeout_s = {lease_s}

[functions.ticker]
handler = "app.handler"
code = "{TICKS_DIR}"
timeout_s = 10
environment = {{ RECORD_FILE = "${{RECORD_FILE}}" }}

[[triggers]]
name = "{SCHEDULE}"
function = "ticker"

[triggers.source]
type = "schedule"
expression = "rate(1 second)"
"""


def invocations(root: Path) -> list[tuple[float, float]]:
    """(invoked at, tick due at) of every recorded invocation, epoch seconds."""
    seen = []
    for path in root.glob("*/ticks.*.jsonl"):
        for line in path.read_text().splitlines():
            if line.endswith("}"):
                doc = json.loads(line)
                tick = datetime.fromisoformat(doc["tick"].replace("Z", "+00:00")).timestamp()
                seen.append((float(doc["t"]), tick))
    return seen


async def lease_holder_pid(state: str) -> int | None:
    """The pid in the member id holding the schedule's lease (host:pid:nonce)."""
    import asyncpg

    conn = await asyncpg.connect(state)
    try:
        holder = await conn.fetchval(
            "SELECT holder FROM triggerd.leases WHERE name = $1", f"schedule:{SCHEDULE}"
        )
    finally:
        await conn.close()
    return int(str(holder).split(":")[1]) if holder else None


async def until(what: str, timeout_s: float, check: Callable[[], Awaitable[bool]]) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def one_failover(
    root: Path, state: str, pair: list[Daemon], lease_s: float, restart: bool
) -> float:
    """Kill the lease holder once it fires; seconds to the first tick invoked after the kill
    of a tick due after it. The killed daemon is started again as a standby (`restart`)."""
    start = time.time()

    async def leader_fires() -> bool:
        pid = await lease_holder_pid(state)
        alive = {d.pid for d in pair if d.proc is not None and d.proc.poll() is None}
        return pid in alive and any(t > start + 0.5 for t, _ in invocations(root))

    await until("a leader firing", 4 * lease_s + 30, leader_fires)
    pid = await lease_holder_pid(state)
    leader = next(d for d in pair if d.pid == pid)
    killed_at = time.time()
    leader.kill9()

    async def taken_over() -> bool:
        return any(t > killed_at and tick > killed_at for t, tick in invocations(root))

    await until("the standby to fire", 4 * lease_s + 30, taken_over)
    took = min(t for t, tick in invocations(root) if t > killed_at and tick > killed_at)
    if restart:
        leader.spawn({"RECORD_FILE": str(leader.root / f"ticks.{leader.runs + 1}.jsonl")})
        await leader.ready(120)
    return took - killed_at


async def failover(
    root: Path, state: str, lease_s: float, settings: Settings
) -> tuple[list[float], str]:
    load = load_average()
    pair = [
        Daemon(
            root / n, schedule_config(root / n, state, lease_s), {"TRIGGERD_TEST_SECOND_RATES": "1"}
        )
        for n in "ab"
    ]
    for d in pair:  # each run of a daemon records into a file of its own
        d.env["RECORD_FILE"] = str(d.root / "ticks.1.jsonl")
    times = []
    async with running(pair, settings.ready_timeout_s):
        for n in range(settings.failover_rounds):
            last = n == settings.failover_rounds - 1
            times.append(await one_failover(root, state, pair, lease_s, restart=not last))
    return times, load


def failover_row(lease_s: float, times: list[float], load: str) -> Row:
    each = ", ".join(f"{t:.1f}" for t in times)
    return Row(
        NAME,
        f"failover s, kill -9 of the schedule's leader to the next tick invoked by the other "
        f"daemon, singleton_lease_timeout_s = {lease_s:g} (median of {each}; load avg {load})",
        median(times),
        lease_s,
        baseline_desc="failover: singleton_lease_timeout_s (a standby takes over once the "
        "killed holder's lease ran out)",
        digits=1,
    )


# ---- the run ------------------------------------------------------------------------------


async def measure(settings: Settings) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="triggerd-bench-") as tmp:
        root = Path(tmp)
        sqlite = await drain(root / "sqlite", f"sqlite:///{root / 'sqlite.db'}", 1, settings)
        pg: dict[int, Drain] = {}
        for n in settings.daemons:
            async with fresh_database() as url:
                pg[n] = await drain(root / f"pg{n}", url, n, settings)
        rows = drain_rows(sqlite, pg, settings)
        for lease_s in settings.failover_leases_s:
            async with fresh_database() as url:
                times, load = await failover(root / f"failover{lease_s:g}", url, lease_s, settings)
            rows.append(failover_row(lease_s, times, load))
    return rows


def run(settings: Settings) -> list[Row]:
    return run_async(measure(settings))
