"""`triggerd run` with a postgres trigger as a subprocess against the session's throwaway
cluster: SIGKILL mid-batch then restart (nothing lost, nothing skipped), a 100,000-row
transaction with the daemon's RSS bounded, slot lag in /metrics and `triggerd status`,
`triggerd postgres drop-slot`, and one-line errors for wal_level and a missing REPLICATION
attribute."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.integration.postgres_support import unique
from tests.system.conftest import Daemon, free_port, wait_for
from tests.triggerd_cli import triggerd_cli

pytestmark = [pytest.mark.system, pytest.mark.integration]

ROW_IDS = Path(__file__).parent / "functions" / "row_ids"


def config(tmp: Path, dsn: str, table: str, *, sleep_s: float = 0.0, batch: int = 10) -> str:
    return f"""
[daemon]
state = "sqlite:///state/state.db"
listen = "127.0.0.1:{free_port()}"
control_listen = ""
control_on_public = true
shutdown_timeout_s = 5
log_format = "json"

[functions.rows]
handler = "app.handler"
code = "{ROW_IDS}"
timeout_s = 30
environment = {{ RECORD_FILE = "{tmp / "ids.jsonl"}", SLEEP_S = "{sleep_s}" }}

[[triggers]]
name = "orders"
function = "rows"
batch_size = {batch}
maximum_concurrency = 2
source = {{ type = "postgres", dsn = "{dsn}", tables = ["{table}"], poll_interval_s = 0.02, \
max_poll_interval_s = 0.2, lag_interval_s = 0.5 }}
"""


def delivered(tmp: Path) -> list[int]:
    path = tmp / "ids.jsonl"
    if not path.exists():
        return []
    out: list[int] = []
    for line in path.read_text().splitlines():
        if line.endswith("]"):
            out += json.loads(line)
    return out


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return triggerd_cli(cwd, *args)


@pytest.fixture
def table(pg_cluster: Any) -> str:
    name = unique("orders")
    pg_cluster.psql(f"CREATE TABLE {name} (id int PRIMARY KEY, v text)")
    return name


@pytest.mark.timeout(120)
def test_kill9_mid_batch_then_restart_delivers_every_row(
    tmp_path: Path, daemon_factory: Any, pg_cluster: Any, table: str
) -> None:
    d: Daemon = daemon_factory(config(tmp_path, pg_cluster.dsn, table, sleep_s=0.1))
    try:
        d.start()
        pg_cluster.psql(
            f"INSERT INTO {table} SELECT g, 'x' FROM generate_series(1, 100) g;"
            f"INSERT INTO {table} SELECT g, 'y' FROM generate_series(101, 150) g;"
        )
        wait_for(lambda: len(delivered(tmp_path)) >= 20, 30, "some batches")
        d.kill9()
        assert len(set(delivered(tmp_path))) < 150, "killed while work was pending"
        d.start()
        wait_for(lambda: set(delivered(tmp_path)) >= set(range(1, 151)), 60, "every row")
        got = delivered(tmp_path)
        assert sorted(set(got)) == list(range(1, 151)), "nothing lost or invented"
        first_run = got[: got.index(max(got[:20]))]
        assert first_run == sorted(first_run), "in commit order"
        status = cli("status", "-c", str(d.config), cwd=tmp_path)
        assert status.returncode == 0, status.stderr
        assert "orders: slot triggerd_orders: 0 B of WAL behind" in status.stdout
        listen = d.config.read_text().split('listen = "')[1].split('"')[0]
        wait_for(lambda: "triggerd_source_lag_bytes{" in _metrics(listen), 60, "lag metrics")
        text = _metrics(listen)
        assert 'triggerd_source_lag_seconds{partition="triggerd_orders",trigger="orders"}' in text
        assert 'triggerd_source_retained_bytes{partition="triggerd_orders"' in text
        with urllib.request.urlopen(f"http://{listen}/statusz", timeout=2) as resp:
            (slot,) = json.loads(resp.read())["triggers"]["orders"]["partitions"]
        assert slot["partition"] == "triggerd_orders" and slot["lag_records"] is None
        assert slot["retained_bytes"] > 0 and slot["committed_offset"] > 0
        assert d.terminate() == 0
    finally:
        d.stop()
        out = cli("postgres", "drop-slot", "orders", "-c", str(d.config), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "dropped slot triggerd_orders and publication triggerd_orders" in out.stdout


def _metrics(listen: str) -> str:
    try:
        with urllib.request.urlopen(f"http://{listen}/metrics", timeout=2) as resp:
            return str(resp.read().decode())
    except OSError:
        return ""


#: The daemon's RSS while a 100,000-row transaction goes through may grow at most this much
#: above its RSS when idle: the rows are read in pages and at most `read_ahead` (2,000)
#: changes are held, so the bound does not depend on the transaction's size.
RSS_GROWTH_BOUND_MB = 60
ROWS = 100_000


@pytest.mark.timeout(180)
def test_a_huge_transaction_keeps_the_daemon_rss_bounded(
    tmp_path: Path, daemon_factory: Any, pg_cluster: Any, table: str
) -> None:
    d: Daemon = daemon_factory(config(tmp_path, pg_cluster.dsn, table, batch=500))
    try:
        d.start()
        assert d.proc is not None
        proc = psutil.Process(d.proc.pid)
        time.sleep(1.0)
        idle = proc.memory_info().rss
        pg_cluster.psql(
            f"INSERT INTO {table} SELECT g, repeat('v', 40) FROM generate_series(1, {ROWS}) g"
        )
        peak = idle
        t0 = time.monotonic()
        while len(delivered(tmp_path)) < ROWS:
            assert time.monotonic() - t0 < 150, f"only {len(delivered(tmp_path))} rows"
            peak = max(peak, proc.memory_info().rss)
            time.sleep(0.05)
        elapsed = time.monotonic() - t0
        assert sorted(delivered(tmp_path)) == list(range(1, ROWS + 1))
        growth_mb = (peak - idle) / 1024 / 1024
        print(
            f"{ROWS} rows in {elapsed:.1f}s; RSS idle {idle / 2**20:.0f} MB, peak "
            f"{peak / 2**20:.0f} MB (+{growth_mb:.0f} MB)"
        )
        assert growth_mb < RSS_GROWTH_BOUND_MB
        assert d.terminate() == 0
    finally:
        d.stop()
        cli("postgres", "drop-slot", "orders", "-c", str(d.config), cwd=tmp_path)


def test_wal_level_and_missing_replication_are_one_line_errors(
    tmp_path: Path, pg_cluster: Any, table: str
) -> None:
    cfg = tmp_path / "triggerd.toml"
    # The machine's own PostgreSQL runs with wal_level = replica.
    cfg.write_text(config(tmp_path, "postgresql://postgres@127.0.0.1:5432/postgres", table))
    out = cli("run", str(cfg), cwd=tmp_path)
    assert out.returncode == 2
    assert "wal_level is 'replica', logical decoding needs wal_level = logical" in out.stderr
    role = unique("norepl")
    pg_cluster.psql(f"CREATE ROLE {role} LOGIN")
    cfg.write_text(config(tmp_path, pg_cluster.dsn.replace("postgres@", f"{role}@"), table))
    out = cli("run", str(cfg), cwd=tmp_path)
    assert out.returncode == 2
    assert f"role '{role}' lacks the REPLICATION attribute" in out.stderr
    assert len([line for line in out.stderr.splitlines() if "REPLICATION" in line]) == 1
    out = cli("validate", "--connect", str(cfg), cwd=tmp_path)
    assert out.returncode == 2 and "lacks the REPLICATION attribute" in out.stderr
