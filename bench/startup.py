"""Start-up time of the commands an operator types, against `python -c pass` in the same run.

`triggerd validate`, `status` (its state store made by a first start, no daemon running: it
reports the daemon as not answering) and `generate-event` on the bundled example
(examples/triggerd.toml, copied to a temporary directory with a free port) are timed with
hyperfine (`apt-get install hyperfine`; skipped, with the reason printed, without it), each
beside the same interpreter running `-c pass`. The daemon's start is timed here, because it
does not exit: from spawning `triggerd run` to its ready summary on stdout (printed once the
state store is open, the functions built, the sources started and the listener bound), in
alternating rounds with spawning `python -c pass` to its exit; the example's functions are
built once before the measured rounds, as they are on every start but the first.

Each command is reported twice: its wall time and its CPU time (user + system, children
included: a probe of an interpreter counts), both beside `python -c pass`'s in the same run,
with the load average during the run: on a machine shared with other work the wall time
mostly measures the wait for a core, so the CPU time and the ratios are what to compare.
The project's modules are byte-compiled first (`compileall`), as an installed wheel's are:
with PYTHONDONTWRITEBYTECODE set, a source checkout would otherwise compile every module on
every start.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import BENCH_DIR, BenchError, Row
from bench.harness import free_port, stop_session

NAME = "startup"
EXAMPLES = BENCH_DIR.parent / "examples"
PACKAGE_DIRS = ("triggerd", "connectors")


@dataclass(frozen=True, slots=True)
class Settings:
    #: hyperfine runs per command (after `warmup` unmeasured ones).
    runs: int = 30
    warmup: int = 3
    #: Daemon starts (each beside a `python -c pass`).
    daemon_rounds: int = 10


QUICK = Settings(runs=10, warmup=2, daemon_rounds=4)
SMOKE = Settings(runs=2, warmup=0, daemon_rounds=1)


def copy_example(tmp: Path) -> Path:
    """The bundled example in `tmp`, listening on a free port; its config's path."""
    work = tmp / "example"
    shutil.copytree(EXAMPLES, work, ignore=shutil.ignore_patterns("state", "out", "*.txt"))
    config = work / "triggerd.toml"
    text = config.read_text().replace("127.0.0.1:9070", f"127.0.0.1:{free_port()}")
    text = text.replace("127.0.0.1:9071", f"127.0.0.1:{free_port()}")
    config.write_text(text)
    return config


def compile_project() -> None:
    """Byte-compile triggerd and its connectors, as installing a wheel does."""
    root = BENCH_DIR.parent
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "compileall",
            "-q",
            str(root / "triggerd"),
            str(root / "connectors"),
        ],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )


@dataclass(frozen=True, slots=True)
class Timing:
    """Median wall seconds and median CPU seconds (user + system, children included)."""

    wall_s: float
    cpu_s: float


def hyperfine(commands: list[str], settings: Settings, cwd: Path) -> dict[str, Timing]:
    """Each command's median wall time and mean CPU time (hyperfine reports CPU as means),
    from one hyperfine run."""
    out = cwd / "hyperfine.json"
    subprocess.run(
        [
            "hyperfine",
            "-N",
            "--style",
            "none",
            "--ignore-failure",  # status exits 9 when no daemon answers: still a start-up
            "--warmup",
            str(settings.warmup),
            "--runs",
            str(max(settings.runs, 2)),
            "--export-json",
            str(out),
            *commands,
        ],
        check=True,
        cwd=cwd,
        capture_output=True,
    )
    results = json.loads(out.read_text())["results"]
    return {
        r["command"]: Timing(statistics.median(r["times"]), r["user"] + r["system"])
        for r in results
    }


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process and its waited-for children."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    ticks = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def daemon_ready(config: Path) -> Timing:
    """Seconds from spawning `triggerd run` to its ready summary on stdout, and the CPU
    seconds the daemon used until then."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "triggerd", "run", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=config.parent,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        ready = time.perf_counter() - t0
        cpu = _cpu_s(proc.pid)
        if not line.startswith(b"triggerd "):
            raise BenchError(f"triggerd run did not get ready: {line!r}")
        return Timing(ready, cpu)
    finally:
        stop_session(proc)


def bare() -> Timing:
    before = os.times()
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    wall = time.perf_counter() - t0
    after = os.times()
    return Timing(
        wall,
        after.children_user
        - before.children_user
        + after.children_system
        - (before.children_system),
    )


def _rows(label: str, target: float, got: Timing, base: Timing, how: str, load: str) -> list[Row]:
    return [
        Row(
            NAME,
            f"{label}: wall (ms, {how}; load average {load})",
            got.wall_s * 1000,
            base.wall_s * 1000,
            target=target,
            baseline_desc="python -c pass, same interpreter, same run",
            digits=0,
        ),
        Row(
            NAME,
            f"{label}: CPU, user + system (ms, {how})",
            got.cpu_s * 1000,
            base.cpu_s * 1000,
            target=target,
            baseline_desc="python -c pass, same interpreter, same run",
            digits=0,
        ),
    ]


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def run(settings: Settings) -> list[Row]:
    rows: list[Row] = []
    compile_project()
    with tempfile.TemporaryDirectory(prefix="triggerd-startup-") as name:
        tmp = Path(name)
        config = copy_example(tmp)
        py = sys.executable
        base = f"{py} -c pass"
        commands = {
            "validate": f"{py} -m triggerd validate {config}",
            "status": f"{py} -m triggerd status -c {config}",
            "generate-event": f"{py} -m triggerd generate-event directory",
        }
        daemon_ready(config)  # builds the example's functions once, creates the state
        if shutil.which("hyperfine") is None:
            print(f"{NAME}: commands skipped: hyperfine is not installed", file=sys.stderr)
        else:
            load = _load()
            times = hyperfine([base, *commands.values()], settings, tmp)
            for label, command in commands.items():
                rows += _rows(
                    f"triggerd {label} on the bundled example",
                    150,
                    times[command],
                    times[base],
                    "hyperfine: median wall, mean CPU",
                    f"{load} before, {_load()} after",
                )
        load = _load()
        ready, bares = [], []
        for _ in range(settings.daemon_rounds):
            ready.append(daemon_ready(config))
            bares.append(bare())
        rows += _rows(
            "triggerd run on the bundled example, spawn to ready",
            250,
            _median(ready),
            _median(bares),
            f"median of {settings.daemon_rounds}",
            f"{load} before, {_load()} after",
        )
    return rows


def _median(timings: list[Timing]) -> Timing:
    return Timing(
        statistics.median(t.wall_s for t in timings), statistics.median(t.cpu_s for t in timings)
    )
