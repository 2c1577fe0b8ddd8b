"""The edit-run loop: how soon a saved handler answers with its new code, and what one warm
invoke costs through the Invoke API and through `triggerd invoke` (a process per call).

triggerd: `triggerd run --watch` as its own process with one local python3.11 function and
the Invoke API on its control listener. Each round rewrites the handler (a new version string)
and times from the write to the first Invoke API answer carrying the new version (polled back
to back). The raw baseline of a reload is a fresh interpreter importing the edited handler and
calling it (`python3.11 -c ...`, process start included): what any reload costs at least.
Warm invokes: sequential Invoke API calls (urllib, one connection each) against the same
calls to a bare aiohttp server's fixed answer; `triggerd invoke` per call (process start,
config load, a worker started: what `sam local invoke` is compared with) against the bare
interpreter run.

serverless-offline 13 (`--reloadHandler`, the same handler on an httpApi route) is measured in
the same run when `TRIGGERD_BENCH_SLS_DIR` points at its npm install (the webhook_wrk
benchmark's setup). `sam local invoke` is not run (it needs Docker): its warm figure on these
machines, about 1.9 s, is a known figure, quoted as the target.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import BenchError, Row
from bench.harness import free_port, stop_process
from bench.webhook_wrk import bare_server, serverless_missing, serverless_server

NAME = "inner_loop"
#: `sam local invoke` (warm container) on these machines: known, not measured here.
SAM_LOCAL_INVOKE_S = 1.9

HANDLER = """import json

VERSION = {version!r}


def handler(event, context):
    return {{"statusCode": 200, "body": json.dumps({{"version": VERSION}})}}
"""


@dataclass(frozen=True, slots=True)
class Settings:
    #: Handler edits timed.
    rounds: int = 10
    #: Sequential warm Invoke API calls (and bare server calls).
    invokes: int = 200
    #: `triggerd invoke` runs (each a process).
    cli_runs: int = 5


QUICK = Settings(rounds=5, invokes=100, cli_runs=3)
SMOKE = Settings(rounds=1, invokes=5, cli_runs=1)


def write_handler(code: Path, version: str) -> float:
    """Save the handler as an editor does (one write, closed); the time it was saved."""
    (code / "app.py").write_text(HANDLER.format(version=version))
    return time.perf_counter()


def post(url: str, body: bytes = b"{}", timeout_s: float = 30) -> bytes:
    req = urllib.request.Request(url, data=body, method="POST")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        data: bytes = resp.read()
        return data


def version_of(answer: bytes) -> str | None:
    """The version in an answer: a Lambda response (Invoke API) or its HTTP body."""
    try:
        doc = json.loads(answer)
        if isinstance(doc, dict) and "body" in doc:
            doc = json.loads(doc["body"])
        return str(doc["version"]) if isinstance(doc, dict) else None
    except (ValueError, KeyError):
        return None


def until_version(url: str, version: str, saved_at: float, timeout_s: float = 30) -> float:
    """Poll `url` back to back until it answers `version`; seconds since `saved_at`."""
    while True:
        try:
            if version_of(post(url)) == version:
                return time.perf_counter() - saved_at
        except OSError:
            pass  # a reload may answer an error while the worker restarts: keep asking
        if time.perf_counter() - saved_at > timeout_s:
            raise BenchError(f"{url} did not answer version {version} within {timeout_s} s")


def reload_times(url: str, code: Path, settings: Settings, tag: str) -> list[float]:
    out = []
    for i in range(settings.rounds):
        version = f"{tag}-{i}-{'x' * (i % 3)}"
        out.append(until_version(url, version, write_handler(code, version)))
        time.sleep(0.3)  # a human does not save twice at once
    return out


def warm_ms(url: str, settings: Settings) -> float:
    for _ in range(10):
        post(url)
    times = []
    for _ in range(settings.invokes):
        t0 = time.perf_counter()
        post(url)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def timed_runs(argv: list[str], cwd: Path, runs: int) -> float:
    """Median wall seconds of running `argv` (it must exit 0)."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        done = subprocess.run(argv, cwd=cwd, capture_output=True, timeout=120)
        times.append(time.perf_counter() - t0)
        if done.returncode != 0:
            raise BenchError(f"{argv[:4]} failed: {done.stderr.decode(errors='replace')[-500:]}")
    return statistics.median(times)


def config_text(code: Path, control_port: int) -> str:
    return f"""[daemon]
state = "sqlite:///state/state.db"
listen = ""
control_listen = "127.0.0.1:{control_port}"
log_level = "WARNING"

[functions.hello]
handler = "app.handler"
code = "{code}"
runtime = "python3.11"
"""


@contextmanager
def triggerd_watching(tmp: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    (tmp / "triggerd.toml").write_text(config_text(tmp / "fn", port))
    argv = [sys.executable, "-m", "triggerd", "run", "--watch", str(tmp / "triggerd.toml")]
    url = f"http://127.0.0.1:{port}/2015-03-31/functions/hello/invocations"
    with (tmp / "triggerd.log").open("wb") as log:
        proc = subprocess.Popen(argv, cwd=tmp, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300  # the first run installs the runtime's boto3
        while True:
            try:
                post(url)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = (tmp / "triggerd.log").read_text(errors="replace")[-2000:]
                    raise BenchError(f"triggerd run --watch did not answer\n{tail}") from None
                time.sleep(0.1)
        yield url, proc
    finally:
        stop_process(proc)


def interpreter() -> str:
    """python3.11, the function's runtime (the bare baseline runs it)."""
    for candidate in (sys.executable, "python3.11"):
        try:
            out = subprocess.run(
                [candidate, "-c", "import sys; print(sys.version_info[:2] == (3, 11))"],
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout
        except OSError:
            continue
        if out.strip() == "True":
            return candidate
    raise BenchError("no python3.11 for the function's runtime")


def rss_mb(pid: int) -> float:
    try:
        import psutil

        return float(psutil.Process(pid).memory_info().rss) / 2**20
    except Exception:  # psutil missing or the process gone: the figure is left out
        return 0.0


def run(settings: Settings) -> list[Row]:
    missing = serverless_missing()
    if missing is not None:
        print(f"{NAME}: serverless-offline skipped: {missing}", file=sys.stderr)
    python = interpreter()
    with tempfile.TemporaryDirectory(prefix="triggerd-inner-") as name:
        tmp = Path(name)
        (tmp / "fn").mkdir()
        write_handler(tmp / "fn", "start")
        bare_reload = timed_runs(
            [python, "-c", "import app; app.handler({}, None)"], tmp / "fn", settings.cli_runs
        )
        (tmp / "event.json").write_text("{}")
        with triggerd_watching(tmp) as (url, proc):
            rss_before = rss_mb(proc.pid)
            reloads = reload_times(url, tmp / "fn", settings, "triggerd")
            warm = warm_ms(url, settings)
            rss_after = rss_mb(proc.pid)
        cli = timed_runs(
            [sys.executable, "-m", "triggerd", "invoke", "hello", "-e", "event.json",
             "-c", "triggerd.toml"],
            tmp,
            settings.cli_runs,
        )  # fmt: skip
        with bare_server(tmp) as bare_url:
            bare_warm = warm_ms(bare_url, settings)
        sls: dict[str, Any] = {}
        if missing is None:
            sls = serverless_figures(tmp, settings)
    return rows(reloads, warm, cli, bare_reload, bare_warm, sls, (rss_before, rss_after), settings)


def serverless_figures(tmp: Path, settings: Settings) -> dict[str, Any]:
    handler = tmp / "sls-handler.py"
    handler.write_text(HANDLER.format(version="start"))
    with serverless_server(tmp, handler=handler, options=("--reloadHandler",)) as url:
        code = tmp / "serverless"
        return {
            "reloads": reload_times(url, code, settings, "sls"),
            "warm_ms": warm_ms(url, settings),
        }


def rows(
    reloads: list[float],
    warm: float,
    cli: float,
    bare_reload: float,
    bare_warm: float,
    sls: dict[str, Any],
    rss: tuple[float, float],
    settings: Settings,
) -> list[Row]:
    med: Callable[[list[float]], float] = statistics.median
    n = settings.rounds
    bare = "a fresh python3.11 importing the edited handler and calling it (process start)"
    out = [
        Row(
            NAME,
            f"save -> new code answers (s), median of {n} edits",
            med(reloads),
            bare_reload,
            target=1.0,
            target_note="within a second",
            baseline_desc=bare,
        ),
        Row(NAME, f"save -> new code answers (s), slowest of {n}", max(reloads), target=1.0),
        Row(
            NAME,
            "warm invoke through the Invoke API (ms), median",
            warm,
            bare_warm,
            baseline_desc="a bare aiohttp server's fixed answer, same urllib client",
        ),
        Row(
            NAME,
            "`triggerd invoke` (s), process start included, vs sam local invoke's known 1.9 s",
            cli,
            SAM_LOCAL_INVOKE_S,
            target=SAM_LOCAL_INVOKE_S,
            target_note="sam local invoke, warm (known figure, not measured)",
            baseline_desc="sam local invoke, warm container: a known figure, not measured",
        ),
        Row(
            NAME,
            "daemon RSS growth over the edits and invokes (MB)",
            rss[1] - rss[0],
            digits=1,
        ),
    ]
    if sls:
        desc = "serverless-offline 13 --reloadHandler (serverless 3, httpApi, python3.11)"
        out += [
            Row(
                NAME,
                "save -> new code answers (s), median, vs serverless-offline",
                med(reloads),
                med(sls["reloads"]),
                baseline_desc=desc,
            ),
            Row(
                NAME,
                "warm invoke (ms), median, Invoke API vs serverless-offline HTTP",
                warm,
                sls["warm_ms"],
                target=sls["warm_ms"],
                target_note="no slower than serverless-offline",
            ),
        ]
    return out
