"""What the system tests of several daemons on one PostgreSQL state store share: the `[daemon]`
table of a member's config, a member whose every run records into a file of its own, starting
members side by side, and reading the cluster through `triggerd status -o json`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.system.conftest import FUNCTIONS, Daemon


def daemon_table(
    state: str, work_dir: Path, control_port: int | None = None, **settings: int | str
) -> str:
    """The `[daemon]` table of a member on the store `state`: no public listener, the control
    listener on `control_port` (off when None), JSON logs, a 5 s shutdown, and `settings`
    (e.g. `singleton_lease_timeout_s=2`)."""
    control = "" if control_port is None else f"127.0.0.1:{control_port}"
    lines = [
        "[daemon]",
        f'state = "{state}"',
        'listen = ""',
        f'control_listen = "{control}"',
        f'work_dir = "{work_dir}"',
        "shutdown_timeout_s = 5",
        'log_format = "json"',
        *(f"{key} = {json.dumps(value)}" for key, value in settings.items()),
    ]
    return "\n".join(lines) + "\n"


#: The test-only `rate(N seconds)` schedules (triggerd.connectors' schedule source).
SECOND_RATES = {"TRIGGERD_TEST_SECOND_RATES": "1"}


def every_second_config(state: str, work_dir: Path, lease_s: int) -> str:
    """A member with one `rate(1 second)` schedule (`every-second`) whose function records
    each tick in `${TICK_FILE}`; claims and the schedule's lease both last `lease_s`."""
    leases = daemon_table(
        state, work_dir, lease_timeout_s=lease_s, singleton_lease_timeout_s=lease_s
    )
    return f"""
{leases}

[functions.ticker]
handler = "app.handler"
code = "{FUNCTIONS / "recorder"}"
timeout_s = 10
environment = {{ RECORD_FILE = "${{TICK_FILE}}" }}

[[triggers]]
name = "every-second"
function = "ticker"

[triggers.source]
type = "schedule"
expression = "rate(1 second)"
"""


def start_all(daemons: Iterable[Daemon]) -> None:
    """Start the daemons side by side (each start waits for its daemon to be ready; the
    first daemons of a test session install the runtimes' boto3, slow on a loaded machine)."""
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda d: d.start(ready_timeout=120), daemons))


def status(daemon: Daemon, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """`triggerd status -o json` with the daemon's config (`env` for the variables it names)."""
    out = subprocess.run(
        [sys.executable, "-m", "triggerd", "status", "-o", "json"],
        cwd=daemon.workdir,
        env=dict(os.environ, **(env or {})),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


def member_id(daemon: Daemon) -> str:
    """The member id the daemon's current run logged on opening the store."""
    return next(str(e["member"]) for e in daemon.events() if e.get("event") == "state.opened")


def json_lines(path: Path, end: str = "}") -> list[Any]:
    """The complete JSON lines (ending with `end`) a function wrote to `path`, if any."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith(end)]


class Member:
    """One daemon of a cluster; each run records what it invoked into a file of its own,
    `<name>.<run>.jsonl`, whose path its config reads from the variable `record_env`."""

    def __init__(
        self, name: str, tmp: Path, text: str, record_env: str, env: Mapping[str, str] | None = None
    ) -> None:
        (tmp / name).mkdir()
        self.name = name
        self.tmp = tmp
        self.record_env = record_env
        self.env = dict(env or {})
        self.daemon = Daemon(tmp / name, text)

    def run_file(self, run: int) -> Path:
        return self.tmp / f"{self.name}.{run}.jsonl"

    @property
    def current_file(self) -> Path:
        """The record file of the current (or last) run."""
        return self.run_file(self.daemon.runs)

    def start(self) -> None:
        env = {**self.env, self.record_env: str(self.run_file(self.daemon.runs + 1))}
        self.daemon.start(ready_timeout=120, env=env)

    def event_names(self) -> list[str]:
        return [str(e.get("event")) for e in self.daemon.events()]

    def logged(self, event: str, **fields: object) -> bool:
        """Whether the current run logged `event` with these fields."""
        return any(
            e.get("event") == event and all(e.get(k) == v for k, v in fields.items())
            for e in self.daemon.events()
        )

    def member_id(self) -> str:
        return member_id(self.daemon)

    def status(self) -> dict[str, Any]:
        return status(self.daemon, {**self.env, self.record_env: "unused"})
