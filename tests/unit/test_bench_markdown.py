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
    assert lines[3] == "| kafka | through triggerd / bare loop | 0.76 | - |  | >= 0.70 | met |"
    assert lines[4] == (
        "| logs | share of the daemon's CPU, % | 12.0 | - |  | <= 5.0 | **not met** |"
    )
    # A `|` inside a cell would split it.
    assert lines[5] == "| logs | odd \\| metric | 3.00 | 2.00 | 1.50x |  |  |"
    assert lines[-2:] == ["- kafka: bare loop", "- logs: a \\| b"]


def test_separate_runs_merge_into_one_result_file_in_the_order_given(tmp_path: Path) -> None:
    a = result_file(tmp_path / "a.json", "kafka", ROWS_A, 1)
    b = result_file(tmp_path / "b.json", "logs", ROWS_B, 2)
    merged = merge([json.loads(a.read_text()), json.loads(b.read_text())])
    assert [r["benchmark"] for r in merged["rows"]] == ["kafka", "kafka", "logs", "logs"]
    assert merged["seconds"] == {"kafka": 1, "logs": 2}
    assert merged["created_at"] == "2026-12-07T13:00:02Z"
    assert merged["scale"] == "full"
    assert merged["rows"][1]["ok"] is True and merged["rows"][2]["ok"] is False


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


def test_an_unreadable_or_malformed_file_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rows": [{"benchmark": "x"}]}))
    assert main([str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a row without metric, value" in err
