"""The benchmark harness runs: each benchmark, with tiny counts, produces finite numbers for
triggerd and its baseline. No timing is asserted (benchmarks are never timed tests)."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bench import (
    BenchError,
    Row,
    async_queue,
    cluster,
    cold_start,
    directory,
    eventbridge,
    format_table,
    http_backend,
    idle_rss,
    invoke_event,
    kafka,
    kinesis,
    logs,
    pg_state,
    postgres,
    rabbitmq,
    s3_poll,
    sns,
    sqs,
    startup,
    warm_invoke,
    webhook_wrk,
    worker_memory,
)
from bench import scale as scale_bench
from bench import sigv4 as sigv4_bench
from bench import webhook as webhook_bench
from bench.__main__ import BENCHMARKS, main


def assert_numbers(rows: list[Row], benchmark: str) -> None:
    assert rows, f"{benchmark} produced no rows"
    for row in rows:
        assert row.benchmark == benchmark
        assert math.isfinite(row.value), row
        assert row.baseline is None or (math.isfinite(row.baseline) and row.baseline > 0), row


def test_warm_invoke_reports_latencies_overheads_and_rates() -> None:
    rows = warm_invoke.run(warm_invoke.SMOKE)
    assert_numbers(rows, "warm_invoke")
    by_metric = {r.metric: r for r in rows}
    assert by_metric["invoke latency p50 (ms)"].value > 0
    assert by_metric["invocations/s, 1 worker"].value > 0
    assert by_metric["invocations/s, 4 workers"].value > 0
    assert by_metric["overhead p50 (ms)"].target is not None


def test_cold_start_reports_first_invoke_and_bare_interpreter() -> None:
    rows = cold_start.run(cold_start.SMOKE)
    assert_numbers(rows, "cold_start")
    assert rows[0].value > 0 and rows[0].ratio is not None
    # #15's targets are on the ratio to the bare interpreter: judged by their own rows.
    share = rows[1]
    assert share.metric.startswith("first invoke, fresh worker / `python")
    assert share.value == pytest.approx(rows[0].ratio) and (share.target, share.op) == (1.7, "<=")
    if shutil.which("node") is not None:
        node = {r.metric: r for r in rows}["first invoke, nodejs20.x / `node -e 0`"]
        assert node.target == 1.2


def test_directory_reports_source_and_end_to_end_rates() -> None:
    rows = directory.run(directory.SMOKE)
    assert_numbers(rows, "directory")
    assert {r.metric for r in rows} >= {
        "events/s out of the source",
        "events/s committed to SQLite",
    }
    assert all(r.value > 0 for r in rows if r.metric.startswith("events/s"))
    # #21's target is on the ratio, judged by its own row.
    by_metric = {r.metric: r for r in rows}
    for what in ("out of the source", "committed to SQLite"):
        share = by_metric[f"{what} / bare loop"]
        rate = by_metric[f"events/s {what}"]
        assert share.value == pytest.approx(rate.value / rate.baseline)  # type: ignore[operator]
        assert (share.target, share.op) == (0.5, ">=")


def test_idle_rss_reports_daemon_and_bare_rss() -> None:
    rows = idle_rss.run(idle_rss.SMOKE)
    assert_numbers(rows, "idle_rss")
    assert rows[0].value > rows[0].baseline  # type: ignore[operator]


def test_s3_poll_reports_first_scan_and_rescan_rates() -> None:
    rows = s3_poll.run(s3_poll.SMOKE)
    assert_numbers(rows, "s3_poll")
    assert [r.metric for r in rows] == [
        "objects/s, first scan (events committed)",
        "objects/s, rescan with no changes",
    ]
    assert all(r.value > 0 for r in rows)


def test_sqs_reports_rates_against_the_raw_loop_on_moto_and_the_fast_endpoint() -> None:
    rows = sqs.run(sqs.SMOKE)
    assert_numbers(rows, "sqs")
    by_metric = {r.metric: r for r in rows}
    for server in ("moto", "fast endpoint"):
        rate = by_metric[f"messages/s, batch 10, 2 pollers ({server})"]
        assert rate.value > 0 and rate.baseline is not None and rate.baseline > 0
        share = by_metric[f"share of the raw loop (%) ({server})"]
        assert share.target == 80 and share.value > 0


def test_rabbitmq_reports_messages_per_second_against_the_bare_consumer() -> None:
    rows = rabbitmq.run(rabbitmq.SMOKE)
    assert_numbers(rows, "rabbitmq")
    assert rows[0].value > 0 and rows[0].baseline is not None and rows[0].baseline > 0


def test_kafka_reports_records_per_second_and_latency_against_the_bare_loop() -> None:
    rows = kafka.run(kafka.SMOKE)
    assert_numbers(rows, "kafka")
    by_metric = {r.metric.split(" (")[0].split(" at ")[0]: r for r in rows}
    assert by_metric["through triggerd / bare loop"].target == 0.7
    rate = rows[0]
    assert rate.value > 0 and rate.baseline is not None and rate.baseline > 0
    assert by_metric["produce-to-invoke p50"].value > 0
    cpu = by_metric["CPU us per record of the daemon's process"]
    assert cpu.value > 0 and cpu.baseline is not None and cpu.baseline > 0


def test_kinesis_reports_rates_against_the_raw_loop_on_moto_and_the_fast_endpoint() -> None:
    rows = kinesis.run(kinesis.SMOKE)
    assert_numbers(rows, "kinesis")
    by_metric = {r.metric: r for r in rows}
    for server in ("moto", "fast endpoint"):
        rate = by_metric[f"records/s, 2 shards, batch 10 ({server})"]
        assert rate.value > 0 and rate.baseline is not None and rate.baseline > 0
    strict = by_metric[
        "records/s, 2 shards, batch 10 (fast endpoint, raw loop parsing as triggerd does)"
    ]
    assert strict.baseline is not None and strict.baseline > 0
    assert "RSS growth over 1 fast rounds (MB)" in by_metric


def test_postgres_reports_rows_per_second_and_latency_against_the_bare_loop() -> None:
    rows = postgres.run(postgres.SMOKE)
    assert_numbers(rows, "postgres")
    by_metric = {r.metric: r for r in rows}
    rate = by_metric["rows/s through triggerd (no-op function, batch 100)"]
    assert rate.value > 0 and rate.baseline is not None and rate.target == 20_000
    assert by_metric["through triggerd / bare loop"].target == 0.7
    assert by_metric["commit-to-invoke p99 (ms) at 100 rows/s"].value > 0


# triggerd/http/server.py stores the route match under a str request key (aiohttp >= 3.12 warns).
def test_webhook_reports_latency_and_requests_per_second_against_a_bare_server() -> None:
    rows = webhook_bench.run(webhook_bench.SMOKE)
    assert_numbers(rows, "webhook")
    by_metric = {r.metric: r for r in rows}
    assert by_metric["latency p50 (ms)"].value > 0
    assert by_metric["requests/s as a share of the bare server's"].target == 0.4


WRK_OUTPUT = """Running 1s test @ http://127.0.0.1:9/hello
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     7.43ms    3.01ms  30.66ms   80.00%
  Latency Distribution
     50%    7.43ms
     75%    9.01ms
     90%   12.00ms
     99%  930.66us
  2479 requests in 1.00s, 475.31KB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:   2479.59
Transfer/sec:    475.31KB
"""


def test_wrk_output_gives_rate_p99_in_ms_and_every_error() -> None:
    result = webhook_wrk.parse_wrk(WRK_OUTPUT)
    assert (result.rps, result.p99_ms, result.errors) == (2479.59, 0.93066, 7)


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_webhook_wrk_reports_the_daemon_against_a_bare_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(webhook_wrk.SLS_ENV, raising=False)  # serverless-offline: skipped
    rows = webhook_wrk.run(webhook_wrk.SMOKE)
    assert_numbers(rows, "webhook_wrk")
    share = next(r for r in rows if r.metric.startswith("requests/s as a share"))
    assert share.target == 0.3 and share.value > 0


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_logs_reports_the_daemon_at_info_against_the_same_daemon_at_warning() -> None:
    rows = logs.run(logs.SMOKE)
    assert_numbers(rows, "logs")
    per_request, extra = rows
    assert per_request.value > 0 and per_request.baseline is not None
    assert extra.target == 5 and "1 - WARNING/INFO" in extra.metric


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_logs_refuses_a_round_whose_requests_were_answered_with_errors(tmp_path: Path) -> None:
    """wrk counts an error response as a request: a daemon answering 503 (a refused or failed
    invocation) costs less CPU than one that ran the function, so the round cannot count it."""
    import http.server
    import threading

    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    script = tmp_path / "post.lua"
    script.write_text(webhook_wrk._LUA)
    url = f"http://127.0.0.1:{server.server_address[1]}/hello"
    try:
        with pytest.raises(BenchError, match=r"answered \d+ request"):
            logs._wrk_requests(url, logs.Settings(seconds=1), script, 2)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _record_signals(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[list[int], list[subprocess.Popen[bytes]]]:
    """The signals the benchmark sends its children (to a PID or a process group), and the
    children it starts."""
    sent: list[int] = []
    started: list[subprocess.Popen[bytes]] = []
    real_killpg = os.killpg

    class Recorded(subprocess.Popen[bytes]):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            started.append(self)

        def send_signal(self, sig: int) -> None:
            sent.append(sig)
            super().send_signal(sig)

    def killpg(pgid: int, sig: int) -> None:
        sent.append(sig)
        real_killpg(pgid, sig)

    monkeypatch.setattr(subprocess, "Popen", Recorded)
    monkeypatch.setattr(os, "killpg", killpg)
    return sent, started


def test_logs_stops_each_daemon_with_one_sigterm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second SIGTERM forces the daemon's exit (status 1, README "Exit codes"): no drain.
    The daemon's workers have their own sessions, so a signal to its process group never
    reached them; one SIGTERM to its PID stops it and them."""
    sent, started = _record_signals(monkeypatch)
    with logs._daemon(tmp_path, "WARNING") as (_url, pid):
        assert [p.pid for p in started] == [pid]
    assert sent == [signal.SIGTERM]
    assert started[0].returncode == 0, (tmp_path / "warning" / "triggerd.log").read_text()


def test_webhook_wrk_stops_the_daemon_with_one_sigterm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same for the daemon of webhook_wrk (and the startup and scale benchmarks, which
    stop theirs the same way): its process group gets one SIGTERM, and it exits 0."""
    sent, started = _record_signals(monkeypatch)
    with webhook_wrk.triggerd_server(tmp_path):
        assert len(started) == 1
    assert sent == [signal.SIGTERM]
    assert started[0].returncode == 0, (tmp_path / "triggerd.log").read_text()


def test_startup_reports_the_daemon_ready_time_against_a_bare_interpreter() -> None:
    rows = startup.run(startup.SMOKE)
    assert_numbers(rows, "startup")
    for ready in rows[-2:]:  # wall, then CPU time
        assert "spawn to ready" in ready.metric and ready.value > ready.baseline > 0  # type: ignore[operator]
    assert "wall" in rows[-2].metric and "CPU" in rows[-1].metric
    if shutil.which("hyperfine") is not None:
        assert {r.metric.split(" on ")[0] for r in rows[:-2]} == {
            "triggerd validate",
            "triggerd status",
            "triggerd generate-event",
        }


def test_http_backend_reports_latency_and_rate_against_a_bare_client() -> None:
    rows = http_backend.run(http_backend.SMOKE)
    assert_numbers(rows, "http_backend")
    assert all(r.value > 0 and r.baseline is not None for r in rows)


def test_async_queue_reports_enqueue_drain_and_file_size_against_bare_sqlite() -> None:
    rows = async_queue.run(async_queue.SMOKE)
    assert_numbers(rows, "async_queue")
    metrics = [r.metric for r in rows]
    assert sum(m.startswith("enqueue events/s") for m in metrics) == len(async_queue.SMOKE.batches)
    shares = [r for r in rows if r.metric.endswith("concurrent callers / bare loop")]
    assert len(shares) == len(async_queue.SMOKE.batches)
    rates = [r for r in rows if r.metric.startswith("enqueue events/s")]
    for share, rate in zip(shares, rates, strict=True):
        assert share.value == pytest.approx(rate.value / rate.baseline)  # type: ignore[operator]
        assert (share.target, share.op) == (0.8, ">=")
    assert any(m.startswith("drain events/s") for m in metrics)
    assert any("size after" in m for m in metrics)


def test_eventbridge_reports_rates_and_latencies_against_invoke_event() -> None:
    rows = eventbridge.run(eventbridge.SMOKE)
    assert_numbers(rows, "eventbridge")
    assert len(rows) == 5 and all(r.baseline for r in rows[:4])


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_invoke_event_reports_end_to_end_rate_against_a_bare_server() -> None:
    rows = invoke_event.run(invoke_event.SMOKE)
    assert_numbers(rows, "invoke_event")
    assert rows[0].value > 0 and rows[0].target == 5000


def test_worker_memory_reports_rss_after_the_warm_up_and_the_run() -> None:
    rows = worker_memory.run(worker_memory.SMOKE)
    assert_numbers(rows, "worker_memory")
    assert rows[0].value > 0 and "bundled" in rows[0].metric


def test_sigv4_reports_signed_invokes_and_the_verifier_against_unsigned_ones() -> None:
    rows = sigv4_bench.run(sigv4_bench.SMOKE)
    assert_numbers(rows, "sigv4")
    assert [r.metric for r in rows] == [
        "signed invoke p50 (ms)",
        "signed invoke p99 (ms)",
        "verification of a 1 KB request (us)",
    ]
    assert all(r.value > 0 and r.baseline is not None for r in rows)


def test_table_has_a_line_per_row_and_the_header() -> None:
    rows = [
        Row("b", "m1", 1.5, 0.5, target=2.0),
        Row("b", "m2", 3000.0, None, target=2000, op=">=", baseline_desc="raw"),
    ]
    text = format_table(rows)
    lines = text.splitlines()
    assert lines[0].split() == [
        "benchmark",
        "metric",
        "triggerd",
        "baseline",
        "ratio",
        "target",
        "ok?",
    ]
    assert "3.00x" in lines[2] and lines[2].endswith("yes")
    assert "b: raw" in text


def test_main_runs_only_the_named_benchmark_and_writes_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[str] = []

    def fake(scale: str) -> list[Row]:
        calls.append(scale)
        return [Row("fake", "thing/s", 10.0, 5.0, target=1.0, op=">=")]

    monkeypatch.setitem(BENCHMARKS, "cold_start", fake)
    out = tmp_path / "results.json"
    assert main(["--only", "cold_start", "--quick", "--json", str(out)]) == 0
    assert calls == ["quick"]
    data = json.loads(out.read_text())
    assert data["rows"][0]["ratio"] == 2.0 and data["rows"][0]["ok"] is True
    assert "thing/s" in capsys.readouterr().out


def test_pg_state_reports_enqueue_and_drain_against_bare_asyncpg_and_sqlite() -> None:
    rows = pg_state.run(pg_state.SMOKE)
    assert_numbers(rows, "pg_state")
    metrics = [r.metric for r in rows]
    assert sum(m.startswith("enqueue events/s") for m in metrics) == 2 * len(pg_state.SMOKE.batches)
    assert sum(m.startswith("drain events/s") for m in metrics) == 2
    assert all(r.value > 0 for r in rows if "events/s" in r.metric)


def test_scale_reports_the_directory_backlog_and_idle_figures() -> None:
    rows = scale_bench.run(scale_bench.SMOKE)
    assert_numbers(rows, "scale")
    parts = {r.metric.split(",")[0].split(":")[0] for r in rows}
    assert {"directory", "async backlog", "idle"} <= parts
    schedules = next(r for r in rows if "rate(1 day)` schedules: CPU" in r.metric)
    assert schedules.target == 0.5 and schedules.value >= 0


def test_sns_reports_publish_against_event_mode() -> None:
    rows = sns.run(sns.SMOKE)
    assert_numbers(rows, "sns")
    assert len(rows) == 4


def test_cluster_reports_drains_on_both_stores_rss_and_a_failover_against_the_lease() -> None:
    rows = cluster.run(cluster.SMOKE)
    assert_numbers(rows, "cluster")
    drains = [r for r in rows if r.metric.startswith("drain events/s")]
    assert ["SQLite" in drains[0].metric, *("PostgreSQL" in r.metric for r in drains[1:])] == [
        True
    ] * (1 + len(cluster.SMOKE.daemons))
    assert all(r.value > 0 for r in drains)
    assert drains[1].baseline == drains[0].value  # the ratio is to the SQLite daemon
    assert sum("RSS after the drain" in r.metric for r in rows) == 1 + len(cluster.SMOKE.daemons)
    cpu = [r for r in rows if r.metric.startswith("daemon CPU per event")]
    assert len(cpu) == len(cluster.SMOKE.daemons) and all(r.value > 0 for r in cpu)
    [failover] = [r for r in rows if r.metric.startswith("failover")]
    assert failover.baseline == 2.0 and failover.value > 0
