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
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import BENCH_DIR, BenchError, Row
from bench.harness import free_port, stop_process

NAME = "startup"
EXAMPLES = BENCH_DIR.parent / "examples"


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
    config.write_text(text)
    return config


def hyperfine(commands: list[str], settings: Settings, cwd: Path) -> dict[str, float]:
    """Mean seconds of each command, from one hyperfine run (commands alternate there)."""
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
    return {r["command"]: statistics.median(r["times"]) for r in results}


def daemon_ready_s(config: Path) -> float:
    """Seconds from spawning `triggerd run` to its ready summary on stdout."""
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
        if not line.startswith(b"triggerd "):
            raise BenchError(f"triggerd run did not get ready: {line!r}")
        return ready
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        stop_process(proc)


def bare_s() -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - t0


def run(settings: Settings) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="triggerd-startup-") as name:
        tmp = Path(name)
        config = copy_example(tmp)
        py = sys.executable
        bare = f"{py} -c pass"
        commands = {
            "validate": f"{py} -m triggerd validate {config}",
            "status": f"{py} -m triggerd status -c {config}",
            "generate-event": f"{py} -m triggerd generate-event directory",
        }
        daemon_ready_s(config)  # builds the example's functions once, creates the state
        if shutil.which("hyperfine") is None:
            print(f"{NAME}: commands skipped: hyperfine is not installed", file=sys.stderr)
        else:
            times = hyperfine([bare, *commands.values()], settings, tmp)
            for label, command in commands.items():
                rows.append(
                    Row(
                        NAME,
                        f"triggerd {label} on the bundled example (ms, median, hyperfine)",
                        times[command] * 1000,
                        times[bare] * 1000,
                        target=150,
                        baseline_desc="python -c pass, same interpreter, same hyperfine run",
                        digits=0,
                    )
                )
        ready, bares = [], []
        for _ in range(settings.daemon_rounds):
            ready.append(daemon_ready_s(config))
            bares.append(bare_s())
        rows.append(
            Row(
                NAME,
                f"triggerd run on the bundled example: spawn to ready (ms, median of "
                f"{settings.daemon_rounds})",
                statistics.median(ready) * 1000,
                statistics.median(bares) * 1000,
                target=250,
                baseline_desc="python -c pass, spawned alternately in the same run",
                digits=0,
            )
        )
    return rows
