"""What invocation logs cost the daemon (#21 item 3): daemon CPU per request on the sync
webhook at the default INFO level against the same daemon at WARNING (no START/END/REPORT,
no output check), side by side in one run.

Two `triggerd run` daemons on the webhook_wrk config (the no-op hello function, JSON logs on
stderr to a file), one at `log_level = "INFO"`, one at `"WARNING"`; wrk drives each in turn
for `seconds` at 16 connections, in rotated rounds (the order reversed every other round, so
neither side always runs right after the other). A side's CPU in a round is its process's
user + system time from /proc (all its threads, not its workers) over the round, divided by the
requests wrk counted; the figure is the logs' share of the daemon's CPU at INFO, 1 - WARNING/INFO,
the median over the rounds (each round pairs the two sides measured within seconds of each
other, which cancels most of the machine's load changes). The target (#21): logs at most 5% of
the daemon's CPU. Needs wrk and Linux's /proc; skipped with the reason printed otherwise.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench import BenchError, Row
from bench.harness import free_port, stop_process
from bench.webhook_wrk import _LUA, PATH, _wait_for, triggerd_config

NAME = "logs"
LEVELS = ("INFO", "WARNING")


@dataclass(frozen=True, slots=True)
class Settings:
    #: Seconds of each wrk run.
    seconds: int = 4
    #: Rounds (each runs both daemons once).
    rounds: int = 12
    connections: int = 16


QUICK = Settings(seconds=3, rounds=6)
SMOKE = Settings(seconds=1, rounds=1, connections=4)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def _daemon(tmp: Path, level: str) -> Iterator[tuple[str, int]]:
    """A daemon at `level` (its logs to a file); yields its URL and PID once it answered."""
    where = tmp / level.lower()
    where.mkdir()
    port = free_port()
    config = triggerd_config(port).replace("[daemon]\n", f'[daemon]\nlog_level = "{level}"\n', 1)
    (where / "triggerd.toml").write_text(config)
    argv = [sys.executable, "-m", "triggerd", "run", str(where / "triggerd.toml")]
    url = f"http://127.0.0.1:{port}{PATH}"
    log = where / "triggerd.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, cwd=where, start_new_session=True
        )
    try:
        _wait_for(url, proc, log, timeout_s=300)
        yield url, proc.pid
    finally:
        # One SIGTERM to its PID: the daemon stops its workers (each in its own session,
        # out of its process group); a second SIGTERM would force its exit without the drain.
        stop_process(proc)


def _wrk_requests(url: str, settings: Settings, script: Path, connections: int) -> int:
    """The requests wrk had answered, all with a 2xx (BenchError otherwise: wrk counts an
    error response as a request, and one the daemon refused or failed is not the request
    whose CPU is measured)."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{settings.seconds}s", "-s", str(script), url]
    out = subprocess.run(
        cmd, capture_output=True, text=True, timeout=settings.seconds + 60, check=True
    ).stdout
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        raise BenchError(f"{url} answered {bad.group(1)} request(s) with an error:\n{out}")
    for line in out.splitlines():
        if " requests in " in line:
            return int(line.split()[0])
    raise BenchError(f"unexpected wrk output:\n{out}")


def run(settings: Settings) -> list[Row]:
    if shutil.which("wrk") is None or not Path("/proc/self/stat").exists():
        print(f"{NAME}: skipped: needs wrk (apt-get install wrk) and /proc", file=sys.stderr)
        return []
    with tempfile.TemporaryDirectory(prefix="triggerd-logs-") as name, ExitStack() as stack:
        tmp = Path(name)
        script = tmp / "post.lua"
        script.write_text(_LUA)
        sides = {level: stack.enter_context(_daemon(tmp, level)) for level in LEVELS}
        for url, _ in sides.values():  # every worker started once
            _wrk_requests(url, Settings(seconds=1), script, settings.connections)
        per_request: dict[str, list[float]] = {level: [] for level in LEVELS}
        loads = []
        for n in range(settings.rounds):
            loads.append(os.getloadavg()[0])
            for level in LEVELS if n % 2 == 0 else LEVELS[::-1]:
                url, pid = sides[level]
                before = cpu_seconds(pid)
                requests = _wrk_requests(url, settings, script, settings.connections)
                spent = cpu_seconds(pid) - before
                per_request[level].append(spent / max(requests, 1) * 1e6)
    info, warning = per_request["INFO"], per_request["WARNING"]
    shares = [1 - b / a for a, b in zip(info, warning, strict=True) if a > 0]
    desc = "the same daemon at log level WARNING, same wrk, alternating rounds"
    load = f"load average {min(loads):.1f}-{max(loads):.1f}"
    return [
        Row(
            NAME,
            f"daemon CPU per request (µs) at INFO, {settings.connections} connections "
            f"(median of {settings.rounds} rounds, {load})",
            statistics.median(info),
            statistics.median(warning),
            baseline_desc=desc,
            digits=0,
        ),
        Row(
            NAME,
            "logs' share of the daemon's CPU at INFO, 1 - WARNING/INFO, % (median of the rounds)",
            statistics.median(shares) * 100 if shares else float("nan"),
            target=5,
            op="<=",
            digits=1,
        ),
    ]
