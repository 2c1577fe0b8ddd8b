"""A throwaway PostgreSQL cluster with `wal_level = logical` for CDC tests and benchmarks.

initdb refuses to run as root, so the cluster belongs to an unprivileged user (`pgtest`,
created when missing, as root only); it listens on a free loopback port, its socket and data
live in a temporary directory, and it is stopped by PID (postmaster.pid) on exit.
`synchronous_commit` stays on: the SQL decoding functions only see WAL up to the flush
pointer.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench import BenchError

USER = "pgtest"


def _bindir() -> Path:
    """The newest server installation (Debian keeps them under /usr/lib/postgresql), else
    the directory of an initdb on PATH."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    found = candidates[0] if candidates else shutil.which("initdb")
    if not found:
        raise BenchError("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    return Path(found).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", USER, "--", *cmd]


def _ensure_user() -> None:
    if os.geteuid() != 0:
        return
    if subprocess.run(["id", "-u", USER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "-M", USER], check=True, capture_output=True)


@dataclass
class Cluster:
    bindir: Path
    root: Path
    port: int

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "postgres.log"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def dsn_for(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def start(self) -> None:
        out = subprocess.run(
            _as_user(
                [
                    str(self.bindir / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.log_path),
                    "-w",
                    "-t",
                    "30",
                    "start",
                ]
            ),
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            tail = (
                self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
            )
            raise BenchError(f"pg_ctl start failed: {out.stderr.strip()}\n{tail}")

    def stop(self, mode: str = "fast") -> None:
        """Stop by PID: SIGINT is PostgreSQL's fast shutdown (SIGQUIT immediate)."""
        pid = self.pid()
        if pid is None:
            return
        sig = signal.SIGQUIT if mode == "immediate" else signal.SIGINT
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def psql(self, sql: str, database: str = "postgres") -> str:
        out = subprocess.run(
            [
                str(self.bindir / "psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if out.returncode != 0:
            raise BenchError(f"psql failed: {out.stderr.strip()}")
        return out.stdout


@contextmanager
def postgres_cluster(settings: dict[str, str] | None = None) -> Iterator[Cluster]:
    """A started cluster with wal_level = logical; stopped (by PID) and removed on exit."""
    bindir = _bindir()
    _ensure_user()
    root = Path(tempfile.mkdtemp(prefix="triggerd-pg-"))
    os.chmod(root, 0o755)
    if os.geteuid() == 0:
        shutil.chown(root, USER)
    cluster = Cluster(bindir, root, _free_port())
    try:
        out = subprocess.run(
            _as_user(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(cluster.data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ]
            ),
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            raise BenchError(f"initdb failed: {out.stderr.strip()}")
        conf = {
            "wal_level": "logical",
            "max_replication_slots": "40",
            "max_wal_senders": "10",
            "port": str(cluster.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{root}'",
            "fsync": "off",
            "full_page_writes": "off",
            "shared_buffers": "32MB",
            "max_connections": "60",
            **(settings or {}),
        }
        with (cluster.data / "postgresql.conf").open("a") as f:
            f.writelines(f"{k} = {v}\n" for k, v in conf.items())
        cluster.start()
        yield cluster
    finally:
        cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
