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


#: A `json` value PostgreSQL keeps as written whose record cannot be built (an escaped lone
#: surrogate: no JSON writer can write the string it parses to), as SQL.
UNWRITABLE_JSON_SQL = '\'{"note": "\\ud800"}\''


def dead_letters(tmp: Path) -> list[dict[str, Any]]:
    path = tmp / "dlq.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


@pytest.mark.timeout(150)
def test_a_row_that_cannot_be_shaped_reaches_the_destination_once_across_kill9_and_restart(
    tmp_path: Path, daemon_factory: Any, pg_cluster: Any
) -> None:
    # Row 30's record cannot be built: it goes to the on-failure file alone, every other row
    # reaches the function, the slot goes on. Killed (-9) as soon as its failure record is
    # written, the daemon may write it once more after the restart (at least once: the slot
    # may not have moved past it yet), with the same sequence number; never after that.
    table = unique("orders")
    pg_cluster.psql(f"CREATE TABLE {table} (id int PRIMARY KEY, v text, doc json)")
    text = config(tmp_path, pg_cluster.dsn, table, sleep_s=0.2)
    text += 'on_failure = { type = "file", path = "dlq.jsonl" }\n'
    d: Daemon = daemon_factory(text)

    def insert(first: int, last: int) -> None:
        pg_cluster.psql(
            f"INSERT INTO {table} SELECT g, CASE WHEN g = 30 THEN 'secret-v' ELSE 'x' END, "
            f"CASE WHEN g = 30 THEN {UNWRITABLE_JSON_SQL} ELSE '{{}}' END::json "
            f"FROM generate_series({first}, {last}) g"
        )

    def given_up() -> list[dict[str, Any]]:
        return [e for e in d.events() if e.get("event") == "record.dead_lettered"]

    try:
        d.start()
        insert(1, 80)
        wait_for(lambda: bool(dead_letters(tmp_path) and given_up()), 60, "the give-up")
        d.kill9()
        assert len(set(delivered(tmp_path))) < 79, "killed while rows were pending"
        (line,) = given_up()
        d.start()
        wait_for(lambda: set(delivered(tmp_path)) >= set(range(1, 81)) - {30}, 60, "the rest")
        assert d.terminate() == 0
        written = len(dead_letters(tmp_path))
        d.start()  # a clean restart: the slot is past it
        insert(81, 81)
        wait_for(lambda: 81 in delivered(tmp_path), 60, "a row after the restart")
        assert d.terminate() == 0
        again = given_up()
    finally:
        d.stop()
        cli("postgres", "drop-slot", "orders", "-c", str(d.config), cwd=tmp_path)
    assert 30 not in delivered(tmp_path), "never invoked"
    assert set(delivered(tmp_path)) == set(range(1, 82)) - {30}
    records = dead_letters(tmp_path)
    assert len(records) == written <= 2, "at least once across the kill, never again after"
    (sequence_number,) = {r["DDBStreamBatchInfo"]["startSequenceNumber"] for r in records}
    assert records[0]["payload"]["Records"][0]["dynamodb"]["SequenceNumber"] == sequence_number
    assert {r["requestContext"]["condition"] for r in records} == {"RecordBuildFailed"}
    assert records[0]["payload"]["Records"][0]["dynamodb"]["Keys"] == {"id": {"N": "30"}}
    assert again == [], "nothing given up in the last run"
    assert line["condition"] == "RecordBuildFailed" and line["error_type"] == "TypeError"
    assert (line["item_id"], line["subject"]) == (sequence_number, f"postgres table public.{table}")
    logs = "".join(p.read_text(errors="replace") for p in tmp_path.glob("std*.log"))
    assert "secret-v" not in logs, "row values are never logged"


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
