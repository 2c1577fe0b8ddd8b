"""The CLI's formatting and checks without subprocesses: tables and JSON, `--since`, the
paths `validate` checks, field and reference errors in one run, and where status looks for
the daemon."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest

from tests.fakes import fake_registry
from triggerd.cli.dlq import parse_since
from triggerd.cli.output import emit
from triggerd.cli.paths import path_problems
from triggerd.cli.status import daemon_url
from triggerd.config.load import load_config
from triggerd.config.plugins import Registry
from triggerd.types import ConfigError


def test_a_piped_table_is_plain_text_and_keeps_long_cells_whole(
    capsys: pytest.CaptureFixture[str],
) -> None:
    long = "arn:aws:sqs:us-east-1:123456789012:" + "q" * 300
    emit("table", columns=["id", "destination"], rows=[[1, long], [2, None]], empty="none")
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["id", "destination"]
    assert lines[1].split() == ["1", long], "one line, the cell not cut or wrapped"
    assert lines[2].split() == ["2", "-"]
    assert not any(ch in out for ch in "│┃━─"), "no box characters in a pipe"


def test_an_empty_table_says_so_and_empty_json_is_a_list(
    capsys: pytest.CaptureFixture[str],
) -> None:
    emit("table", columns=["id"], rows=[], empty="no dead-letter records")
    assert capsys.readouterr().out == "no dead-letter records\n"
    emit("json", columns=["id"], rows=[], empty="no dead-letter records")
    assert json.loads(capsys.readouterr().out) == []


def test_json_output_is_one_object_per_row(capsys: pytest.CaptureFixture[str]) -> None:
    emit("json", columns=["a", "b"], rows=[[1, "x"], [2, None]], empty="")
    assert json.loads(capsys.readouterr().out) == [{"a": 1, "b": "x"}, {"a": 2, "b": None}]


@pytest.mark.parametrize(
    ("text", "seconds_ago"),
    [("90s", 90), ("15m", 900), ("1h", 3600), ("2d", 172800), ("1h30m", 5400), ("1w", 604800)],
)
def test_since_takes_a_duration_back_from_now(text: str, seconds_ago: int) -> None:
    assert parse_since(text, now=1_000_000.0) == 1_000_000.0 - seconds_ago


def test_since_takes_an_iso_time_in_utc_unless_it_has_an_offset() -> None:
    assert parse_since("2026-12-06T10:00:00Z", 0) == 1796551200.0
    assert parse_since("2026-12-06T10:00:00", 0) == 1796551200.0
    assert parse_since("2026-12-06T11:00:00+01:00", 0) == 1796551200.0


@pytest.mark.parametrize("bad", ["yesterday", "1x", "", "h1"])
def test_since_refuses_anything_else(bad: str) -> None:
    with pytest.raises(click.BadParameter, match="neither an ISO time"):
        parse_since(bad, 0)


CONFIG = """
[daemon]
state = "sqlite:///state/state.db"
listen = ""
control_listen = "{listen}"
{tls}

[functions.f]
backend = "local"
handler = "app.handler"
code = "{code}"
layers = ["{layer}"]

[[triggers]]
name = "t"
function = "f"
source = {{ type = "directory", path = "{watched}" }}
on_failure = {{ type = "file", path = "{dlq}" }}
"""


def write_config(tmp_path: Path, **values: str) -> Path:
    defaults = {
        "listen": "127.0.0.1:9070",
        "tls": "",
        "code": "fn",
        "layer": "layer.zip",
        "watched": "inbox",
        "dlq": "dlq/t.jsonl",
    }
    path = tmp_path / "triggerd.toml"
    path.write_text(CONFIG.format(**{**defaults, **values}))
    return path


def test_validate_paths_name_each_missing_or_wrong_path(tmp_path: Path) -> None:
    (tmp_path / "inbox").write_text("a file where a directory belongs")
    (tmp_path / "blocker").write_text("")
    cfg = load_config(
        write_config(
            tmp_path,
            tls='tls_cert_file = "nocert.pem"',
            dlq="blocker/sub/t.jsonl",
        ),
        Registry.discover(),
    )
    problems = path_problems(cfg)
    assert problems == [
        f"daemon.tls_cert_file: {tmp_path}/nocert.pem does not exist",
        f"functions.f.code: {tmp_path}/fn is not a directory or a .zip file",
        f"functions.f.layers.0: {tmp_path}/layer.zip does not exist",
        f"triggers.0.source.path: {tmp_path}/inbox is not a directory",
        f"triggers.0.on_failure.path: {tmp_path}/blocker is not a directory, so "
        f"{tmp_path}/blocker/sub/t.jsonl cannot be created",
    ]


def test_validate_paths_accept_what_exists_and_directories_to_be_created(
    tmp_path: Path,
) -> None:
    (tmp_path / "fn").mkdir()
    (tmp_path / "layer.zip").write_bytes(b"PK")
    (tmp_path / "inbox").mkdir()
    cfg = load_config(write_config(tmp_path), Registry.discover())
    assert path_problems(cfg) == []  # dlq/ and state/ do not exist yet: the daemon makes them


def test_field_errors_and_reference_errors_come_together(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text(
        """
[functions.f]
backend = "fake"

[[triggers]]
name = "a"
function = "nope"
source = { type = "fake" }
batch_size = 0

[[triggers]]
name = "a"
function = "f"
source = { type = "fake" }
"""
    )
    with pytest.raises(ConfigError) as err:
        load_config(path, fake_registry())
    problems = err.value.problems
    assert any(p.startswith("triggers.0.batch_size: ") for p in problems), problems
    assert "triggers.0.function: no function 'nope'" in problems
    assert "triggers.1.name: duplicate trigger name 'a'" in problems


@pytest.mark.parametrize(
    ("listen", "tls", "url"),
    [
        ("127.0.0.1:9070", "", "http://127.0.0.1:9070"),
        ("0.0.0.0:9071", "allow_unauthenticated = true", "http://127.0.0.1:9071"),
        ("[::]:9072", "allow_unauthenticated = true", "http://[::1]:9072"),
        ("localhost:9073", 'tls_cert_file = "c.pem"', "https://localhost:9073"),
        ("", "", None),
    ],
)
def test_status_finds_the_daemon_where_it_listens(
    tmp_path: Path, listen: str, tls: str, url: str | None
) -> None:
    cfg = load_config(write_config(tmp_path, listen=listen, tls=tls), Registry.discover())
    assert daemon_url(cfg) == url
