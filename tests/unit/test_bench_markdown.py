"""`python -m bench.markdown`: result files of separate benchmark runs become the README's
Markdown table and, with `--merge`, one result file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import Row
from bench.markdown import main, markdown_table, merge


def result_file(path: Path, name: str, rows: list[Row], seconds: float) -> Path:
    path.write_text(
        json.dumps(
            {
                "created_at": f"2026-12-07T13:00:0{int(seconds)}Z",
                "scale": "full",
                "python": "3.11.7",
                "machine": "Linux x86_64, 2 CPUs",
                "seconds": {name: seconds},
                "rows": [r.as_json() for r in rows],
                "failed": {},
            }
        )
    )
    return path


ROWS_A = [
    Row("kafka", "records/s", 87_817.0, 106_375.0, baseline_desc="bare loop", digits=0),
    Row("kafka", "through triggerd / bare loop", 0.76, target=0.7, op=">="),
]
ROWS_B = [
    Row("logs", "share of the daemon's CPU, %", 12.0, target=5, op="<=", digits=1),
    Row("logs", "odd | metric", 3.0, 2.0, baseline_desc="a | b"),
]


def test_the_table_has_the_figures_the_ratio_and_whether_each_target_is_met() -> None:
    lines = markdown_table([*ROWS_A, *ROWS_B]).splitlines()
    assert lines[0] == "| benchmark | metric | triggerd | baseline | ratio | target | met? |"
    assert lines[2] == "| kafka | records/s | 87,817 | 106,375 | 0.83x |  |  |"
    assert lines[3] == "| kafka | through triggerd / bare loop | 0.76 | - |  | >= 0.7 | met |"
    assert lines[4] == (
        "| logs | share of the daemon's CPU, % | 12.0 | - |  | <= 5 | **not met** |"
    )
    # A `|` inside a cell would split it.
    assert lines[5] == "| logs | odd \\| metric | 3.00 | 2.00 | 1.50x |  |  |"
    assert lines[-2:] == ["- kafka: bare loop", "- logs: a \\| b"]


def test_separate_runs_merge_into_one_result_file_in_the_order_given(tmp_path: Path) -> None:
    a = json.loads(result_file(tmp_path / "a.json", "kafka", ROWS_A, 1).read_text())
    b = json.loads(result_file(tmp_path / "b.json", "logs", ROWS_B, 2).read_text())
    b["python"] = "3.12.0"
    merged = merge([b, a])  # the order given, not sorted
    assert [r["benchmark"] for r in merged["rows"]] == ["logs", "logs", "kafka", "kafka"]
    assert merged["seconds"] == {"kafka": 1, "logs": 2}
    assert merged["created_at"] == "2026-12-07T13:00:02Z"  # the latest, not the last file's
    assert merged["python"] == "3.12.0"  # the first file's
    assert merged["scale"] == "full"
    assert merged["rows"][0]["ok"] is False and merged["rows"][3]["ok"] is True


def test_a_later_run_of_a_benchmark_replaces_its_failure_and_rows(tmp_path: Path) -> None:
    failed = json.loads(result_file(tmp_path / "f.json", "kafka", [], 3).read_text())
    failed["failed"] = {"kafka": "BenchError: the broker did not start"}
    older = [Row("kafka", "records/s", 1.0, 2.0)]
    first = json.loads(result_file(tmp_path / "o.json", "kafka", older, 1).read_text())
    logs = json.loads(result_file(tmp_path / "l.json", "logs", ROWS_B, 2).read_text())
    rerun = json.loads(result_file(tmp_path / "a.json", "kafka", ROWS_A, 4).read_text())
    merged = merge([first, logs, failed, rerun])
    assert merged["failed"] == {}
    assert [(r["benchmark"], r["value"]) for r in merged["rows"]] == [
        ("logs", 12.0),
        ("logs", 3.0),
        ("kafka", 87_817.0),
        ("kafka", 0.76),
    ]
    # A failure that no later file re-ran stays, and the command says so with exit status 1.
    assert merge([first, failed])["failed"] == {"kafka": "BenchError: the broker did not start"}


def test_targets_read_as_the_issues_state_them() -> None:
    rows = [
        Row("a", "rows/s", 25_000.0, target=20_000, op=">=", digits=0),
        Row("a", "latency (ms)", 0.8, target=136.2094, op="<=", digits=2),
        Row("a", "startup (ms)", 140.0, target=150, op="<=", digits=1),
        Row("a", "share", 0.5, target=0.8, op=">=", digits=2),
        Row("a", "two\nlines", 1.0),
    ]
    table = markdown_table(rows).splitlines()
    assert [line.split(" | ")[5] for line in table[2:6]] == [
        ">= 20,000",
        "<= 136.21",
        "<= 150",
        ">= 0.8",
    ]
    assert table[6].startswith("| a | two lines |")  # a line break would end the row


def test_the_command_prints_the_table_and_writes_the_merged_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = result_file(tmp_path / "a.json", "kafka", ROWS_A, 1)
    b = result_file(tmp_path / "b.json", "logs", ROWS_B, 2)
    out = tmp_path / "results.json"
    assert main([str(a), str(b), "--merge", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| kafka | records/s | 87,817 |" in printed
    assert len(json.loads(out.read_text())["rows"]) == 4
    data = json.loads(b.read_text())
    data["failed"] = {"sns": "BenchError: no answer"}
    b.write_text(json.dumps(data))
    assert main([str(a), str(b)]) == 1
    assert "FAILED sns: BenchError: no answer" in capsys.readouterr().out


def test_an_unreadable_or_malformed_file_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    for content, problem in [
        ({"rows": [{"benchmark": "x"}]}, "a row without metric, value"),
        ([], "not a result file"),
        ({"rows": [{"benchmark": "x", "metric": "m", "value": "fast"}]}, "value is not a number"),
        ({"rows": [{"benchmark": "x", "metric": "m", "value": None}]}, "a row without value"),
        ({"rows": {}}, "its rows are not a list"),
    ]:
        bad.write_text(json.dumps(content))
        assert main([str(bad)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and problem in err, err
