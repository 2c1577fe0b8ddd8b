"""Idle RSS of the daemon: `python -m triggerd run bench/idle.toml` (one local function, an
hourly schedule, a directory trigger), 2 s after it printed its ready summary, against a bare
`python -c "import asyncio; asyncio.run(asyncio.sleep(5))"` measured the same way."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench import BENCH_DIR, BenchError, Row, run_async

NAME = "idle_rss"
CONFIG = BENCH_DIR / "idle.toml"
BARE = "import asyncio; asyncio.run(asyncio.sleep(5))"


@dataclass(frozen=True, slots=True)
class Settings:
    #: How long after ready the RSS is read.
    settle_s: float = 2.0
    ready_timeout_s: float = 20.0
    stop_timeout_s: float = 15.0


QUICK = Settings()
SMOKE = Settings(settle_s=0.2)


def rss_mb(pid: int) -> float:
    """VmRSS of one process (not its children), MB."""
    status = Path(f"/proc/{pid}/status").read_text()
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"no VmRSS for pid {pid}")


async def wait_ready(proc: asyncio.subprocess.Process, timeout_s: float) -> None:
    assert proc.stdout is not None
    async with asyncio.timeout(timeout_s):
        while True:
            line = await proc.stdout.readline()
            if not line:
                raise BenchError(f"the daemon exited ({await proc.wait()}) before it was ready")
            if b"trigger(s)" in line:
                return


async def stop(proc: asyncio.subprocess.Process, timeout_s: float) -> int:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(timeout_s):
            return await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise BenchError("the daemon did not exit on SIGTERM") from None


async def daemon_rss_mb(settings: Settings) -> float:
    with tempfile.TemporaryDirectory(prefix="triggerd-bench-") as tmp:
        os.mkdir(os.path.join(tmp, "inbox"))
        env = dict(os.environ, BENCH_TMP=tmp)
        with open(os.path.join(tmp, "stderr.log"), "wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "triggerd",
                "run",
                str(CONFIG),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                env=env,
            )
            try:
                await wait_ready(proc, settings.ready_timeout_s)
                await asyncio.sleep(settings.settle_s)
                rss = rss_mb(proc.pid)
            except BaseException:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
                print(f"idle_rss: daemon stderr:\n{_tail(tmp)}", file=sys.stderr)
                raise
            code = await stop(proc, settings.stop_timeout_s)
        if code != 0:
            raise BenchError(f"the daemon exited with status {code} on SIGTERM")
    return rss


def _tail(tmp: str) -> str:
    return Path(tmp, "stderr.log").read_text(errors="replace")[-2000:]


async def bare_rss_mb(settings: Settings) -> float:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", BARE, stdin=asyncio.subprocess.DEVNULL
    )
    try:
        await asyncio.sleep(settings.settle_s)
        return rss_mb(proc.pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


async def measure(settings: Settings) -> list[Row]:
    daemon = await daemon_rss_mb(settings)
    bare = await bare_rss_mb(settings)
    return [
        Row(
            NAME,
            "daemon VmRSS when idle (MB)",
            daemon,
            bare,
            target=80,
            baseline_desc="bare `python -c 'import asyncio; asyncio.run(asyncio.sleep(5))'`",
            digits=1,
        )
    ]


def run(settings: Settings) -> list[Row]:
    return run_async(measure(settings))
