"""The sync webhook at default settings under an external load generator (wrk), side by side
with a bare aiohttp server and serverless-offline, in one run.

Each server runs as its own process: `triggerd run` on a config with one webhook route and the
no-op hello function on the local backend, everything else at its default (INFO logs, JSON on
stderr, which goes to a file); a bare aiohttp server answering the same body; and, when it is
installed, serverless-offline 13 with serverless 3 serving the same handler (python3.11) on an
`httpApi` route. wrk drives each with POSTs for `seconds`, in alternating rounds (triggerd,
bare, serverless-offline, triggerd, ...), at 16 connections and at 1; the figure of each side
is its median over the rounds, p99 the median of the rounds' p99s.

External tools, skipped with the reason printed when missing: wrk (`apt-get install wrk`:
without it this benchmark has no figures), and serverless-offline: point
`TRIGGERD_BENCH_SLS_DIR` at a directory where `npm install serverless@3
serverless-offline@13` was run (its node_modules/.bin/serverless is used; `python3` on PATH
must be 3.11, as serverless-offline starts its Python handlers with it).
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench import HELLO_DIR, BenchError, Row
from bench.harness import free_port, stop_session

NAME = "webhook_wrk"
PATH = "/hello"
SLS_ENV = "TRIGGERD_BENCH_SLS_DIR"


@dataclass(frozen=True, slots=True)
class Settings:
    #: Seconds of each wrk run (wrk takes whole seconds).
    seconds: int = 5
    #: Alternating rounds of each server.
    rounds: int = 5
    #: Connections for the throughput figures (and 1 for the single-connection ones).
    connections: int = 16
    #: wrk threads.
    threads: int = 2


QUICK = Settings(seconds=3, rounds=3)
SMOKE = Settings(seconds=1, rounds=1, connections=4, threads=1)

#: The request body; wrk's Lua script sets the method, body and content type.
_LUA = """wrk.method = "POST"
wrk.body = '{"n":1}'
wrk.headers["Content-Type"] = "application/json"
"""

_BARE = """
import sys
from aiohttp import web

async def hello(request):
    await request.read()
    return web.Response(body=b'{"hello": "world"}', content_type="application/json")

app = web.Application()
app.router.add_post("/hello", hello)
try:
    import uvloop
    uvloop.install()
except ImportError:
    pass
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""

_SERVERLESS_YML = """service: hello
frameworkVersion: "3"
provider:
  name: aws
  runtime: python3.11
functions:
  hello:
    handler: app.handler
    events:
      - httpApi:
          path: /hello
          method: post
plugins:
  - serverless-offline
custom:
  serverless-offline:
    httpPort: {http}
    lambdaPort: {lambda_port}
    noPrependStageInUrl: true
"""


@dataclass(slots=True)
class WrkResult:
    rps: float
    p99_ms: float
    errors: int


def parse_wrk(out: str) -> WrkResult:
    """Requests/s, the p99 latency and the error count from `wrk --latency` output."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    if rps is None or p99 is None:
        raise BenchError(f"unexpected wrk output:\n{out}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non_2xx:
        errors += int(non_2xx.group(1))
    return WrkResult(float(rps.group(1)), float(p99.group(1)) * scale, errors)


def wrk(url: str, connections: int, settings: Settings, script: Path) -> WrkResult:
    threads = min(settings.threads, connections)
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{settings.seconds}s", "--latency"]
    out = subprocess.run(
        [*cmd, "-s", str(script), url],
        capture_output=True,
        text=True,
        timeout=settings.seconds + 60,
        check=True,
    ).stdout
    return parse_wrk(out)


def _wait_for(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    """Until a POST to `url` answers 200 (the function is warm), or BenchError."""
    deadline = time.monotonic() + timeout_s
    while True:
        req = urllib.request.Request(url, data=b'{"n":1}', method="POST")
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:]
            raise BenchError(f"{url} did not answer\n{tail}")
        time.sleep(0.2)


@contextmanager
def _process(
    argv: list[str], log: Path, url: str, cwd: Path, env: dict[str, str] | None = None
) -> Iterator[str]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env, start_new_session=True
        )
    try:
        _wait_for(url, proc, log, timeout_s=300)
        yield url
    finally:
        stop_session(proc)  # serverless-offline's handler processes too


def triggerd_config(port: int, control_port: int | None = None) -> str:
    """The daemon's config: the webhook on `port`, the control listener on `control_port`
    (a free one by default: never the default 9071, which another daemon may hold)."""
    control = free_port() if control_port is None else control_port
    return f"""[daemon]
state = "sqlite:///state/state.db"
listen = "127.0.0.1:{port}"
control_listen = "127.0.0.1:{control}"

[functions.hello]
handler = "app.handler"
code = "{HELLO_DIR}"
timeout_s = 30

[[triggers]]
name = "hook"
function = "hello"
source = {{ type = "webhook", path = "{PATH}", method = "POST" }}
"""


@contextmanager
def triggerd_server(tmp: Path) -> Iterator[str]:
    port = free_port()
    (tmp / "triggerd.toml").write_text(triggerd_config(port))
    argv = [sys.executable, "-m", "triggerd", "run", str(tmp / "triggerd.toml")]
    url = f"http://127.0.0.1:{port}{PATH}"
    # stderr (the logs, JSON: not a terminal) to a file, as under a service manager.
    with _process(argv, tmp / "triggerd.log", url, tmp) as ready:
        yield ready


@contextmanager
def bare_server(tmp: Path) -> Iterator[str]:
    port = free_port()
    (tmp / "bare.py").write_text(_BARE)
    url = f"http://127.0.0.1:{port}{PATH}"
    with _process([sys.executable, str(tmp / "bare.py"), str(port)], tmp / "bare.log", url, tmp):
        yield url


def serverless_missing() -> str | None:
    """Why serverless-offline cannot run here (None when it can)."""
    where = os.environ.get(SLS_ENV)
    if not where:
        return f"{SLS_ENV} is not set (npm install serverless@3 serverless-offline@13 there)"
    if not (Path(where) / "node_modules" / ".bin" / "serverless").exists():
        return f"{where}/node_modules/.bin/serverless not found"
    python3 = shutil.which("python3")
    if python3 is None:
        return "no python3 on PATH for serverless-offline's handler processes"
    version = subprocess.run(
        [python3, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    if version != "3.11":
        return f"python3 on PATH is {version}, the handler's runtime is python3.11"
    return None


@contextmanager
def serverless_server(
    tmp: Path, *, handler: Path = HELLO_DIR / "app.py", options: tuple[str, ...] = ()
) -> Iterator[str]:
    """serverless-offline serving `handler` (copied to `tmp/serverless/app.py`) as
    `app.handler` on POST /hello, with extra `serverless offline start` options (e.g.
    --reloadHandler); yields the URL once it answered 200."""
    sls = Path(os.environ[SLS_ENV]).resolve()
    app = tmp / "serverless"
    app.mkdir()
    http_port, lambda_port = free_port(), free_port()
    (app / "serverless.yml").write_text(
        _SERVERLESS_YML.format(http=http_port, lambda_port=lambda_port)
    )
    shutil.copy(handler, app / "app.py")
    (app / "node_modules").symlink_to(sls / "node_modules")
    env = {**os.environ, "SLS_TELEMETRY_DISABLED": "1", "SLS_NOTIFICATIONS_MODE": "off"}
    argv = [str(sls / "node_modules" / ".bin" / "serverless"), "offline", "start", *options]
    url = f"http://127.0.0.1:{http_port}{PATH}"
    with _process(argv, tmp / "serverless.log", url, app, env):
        yield url


def _rows(figures: dict[str, dict[str, list[WrkResult]]], settings: Settings) -> list[Row]:
    def rps(side: str, conns: str) -> float:
        return statistics.median(r.rps for r in figures[side][conns])

    def p99(side: str, conns: str) -> float:
        return statistics.median(r.p99_ms for r in figures[side][conns])

    many, rounds = f"{settings.connections}", settings.rounds
    bare_desc = "a bare aiohttp server, same body, same wrk"
    rows = [
        Row(
            NAME,
            f"requests/s, {many} connections (median of {rounds} rounds), vs bare aiohttp",
            rps("triggerd", many),
            rps("bare", many),
            baseline_desc=bare_desc,
            digits=0,
        ),
        Row(
            NAME,
            "requests/s as a share of the bare aiohttp server's",
            rps("triggerd", many) / rps("bare", many),
            target=0.3,
            op=">=",
        ),
        Row(NAME, f"p99 (ms), {many} connections", p99("triggerd", many), p99("bare", many)),
        Row(NAME, "requests/s, 1 connection", rps("triggerd", "1"), rps("bare", "1"), digits=0),
    ]
    if "serverless" in figures:
        sls_desc = "serverless-offline 13 (serverless 3, httpApi, python3.11), same wrk"
        rows += [
            Row(
                NAME,
                f"requests/s, {many} connections, vs serverless-offline",
                rps("triggerd", many),
                rps("serverless", many),
                baseline_desc=sls_desc,
                digits=0,
            ),
            Row(
                NAME,
                "requests/s as a multiple of serverless-offline's",
                rps("triggerd", many) / rps("serverless", many),
                target=1.5,
                op=">=",
            ),
            Row(
                NAME,
                f"p99 (ms), {many} connections, vs serverless-offline",
                p99("triggerd", many),
                p99("serverless", many),
                target=p99("serverless", many),
                target_note="no worse than serverless-offline's",
            ),
            Row(
                NAME,
                "requests/s, 1 connection, vs serverless-offline",
                rps("triggerd", "1"),
                rps("serverless", "1"),
                digits=0,
            ),
        ]
    errors = sum(r.errors for side in figures.values() for runs in side.values() for r in runs)
    if errors:
        rows.append(Row(NAME, "wrk socket errors and non-2xx answers, all sides", errors, digits=0))
    return rows


def run(settings: Settings) -> list[Row]:
    if shutil.which("wrk") is None:
        print(f"{NAME}: skipped: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return []
    missing = serverless_missing()
    if missing is not None:
        print(f"{NAME}: serverless-offline skipped: {missing}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="triggerd-wrk-") as name, ExitStack() as stack:
        tmp = Path(name)
        script = tmp / "post.lua"
        script.write_text(_LUA)
        urls = {
            "triggerd": stack.enter_context(triggerd_server(tmp)),
            "bare": stack.enter_context(bare_server(tmp)),
        }
        if missing is None:
            urls["serverless"] = stack.enter_context(serverless_server(tmp))
        conns = (str(settings.connections), "1")
        figures: dict[str, dict[str, list[WrkResult]]] = {s: {c: [] for c in conns} for s in urls}
        warmup = Settings(seconds=1, rounds=1, connections=settings.connections, threads=1)
        for url in urls.values():  # every worker of each side started once
            wrk(url, settings.connections, warmup, script)
        for _ in range(settings.rounds):
            for c in conns:
                for side, url in urls.items():
                    figures[side][c].append(wrk(url, int(c), settings, script))
        return _rows(figures, settings)
