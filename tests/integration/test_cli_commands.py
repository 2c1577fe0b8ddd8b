"""`triggerd` commands as an operator runs them (subprocesses, real state stores, a pseudo
terminal where a terminal matters): how the config is named, status without a daemon, dlq
list / replay / purge, invoke on a terminal, and their exit statuses."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port
from tests.triggerd_cli import triggerd_cli as cli
from triggerd.state.base import NewEvent
from triggerd.state.sqlite import SQLiteStateStore
from triggerd.types import ExitCode

RECORDER = Path(__file__).parents[1] / "system" / "functions" / "recorder"


def config_text(tmp: Path, port: int | None = None) -> str:
    return f"""
[daemon]
state = "sqlite:///state/state.db"
listen = "127.0.0.1:{port or free_port()}"
control_listen = ""
control_on_public = true

[functions.recorder]
handler = "app.handler"
code = "{RECORDER}"
environment = {{ RECORD_FILE = "{tmp / "calls.jsonl"}" }}

[[triggers]]
name = "inbox"
function = "recorder"
source = {{ type = "directory", path = "inbox" }}
on_failure = {{ type = "file", path = "dlq.jsonl" }}

[[triggers]]
name = "other"
function = "recorder"
source = {{ type = "directory", path = "inbox" }}
"""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "inbox").mkdir()
    (tmp_path / "triggerd.toml").write_text(config_text(tmp_path))
    return tmp_path


def on_terminal(cwd: Path, *args: str, answer: bytes = b"") -> tuple[int, str]:
    """Run `triggerd ARGS` with a pseudo terminal as stdin, stdout and stderr."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: becomes triggerd
        os.chdir(cwd)
        os.execv(sys.executable, [sys.executable, "-m", "triggerd", *args])
    if answer:
        os.write(fd, answer)
    out = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")


def async_record(key: str) -> dict[str, Any]:
    return {
        "version": "1.0",
        "requestContext": {"condition": "RetriesExhausted", "approximateInvokeCount": 3},
        "requestPayload": {"Records": [{"s3": {"object": {"key": key}}}]},
        "responsePayload": {"errorType": "ValueError"},
    }


BATCH_RECORD = {"requestContext": {"condition": "RetryAttemptsExhausted"}, "SQSBatchInfo": {}}


async def seed(
    db: Path, dlq: list[tuple[str, float, dict[str, Any]]], queued: dict[str, int] | None = None
) -> list[int]:
    store = SQLiteStateStore(str(db))
    await store.open()
    try:
        ids = [
            await store.dlq_add(
                trigger=trigger,
                function="recorder",
                destination="file",
                condition=record["requestContext"]["condition"],
                created_at=created_at,
                record=json.dumps(record).encode(),
            )
            for trigger, created_at, record in dlq
        ]
        now = time.time()
        for trigger, count in (queued or {}).items():
            await store.enqueue(
                [
                    NewEvent(trigger, "recorder", b"{}", str(uuid.uuid4()), now, now)
                    for _ in range(count)
                ]
            )
        return ids
    finally:
        await store.close()


async def depth(db: Path, trigger: str) -> int:
    store = SQLiteStateStore(str(db))
    await store.open()
    try:
        return await store.queue_depth(trigger)
    finally:
        await store.close()


def db_path(workdir: Path) -> Path:
    (workdir / "state").mkdir(exist_ok=True)
    return workdir / "state" / "state.db"


# ---- naming the config -------------------------------------------------------------------


def test_the_config_is_named_by_argument_option_or_variable(workdir: Path) -> None:
    cfg = str(workdir / "triggerd.toml")
    elsewhere = workdir / "inbox"  # no triggerd.toml in this directory
    assert cli(elsewhere, "validate", cfg).returncode == 0
    assert cli(elsewhere, "validate", "-c", cfg).returncode == 0
    assert cli(elsewhere, "validate", env={"TRIGGERD_CONFIG": cfg}).returncode == 0
    functions = cli(elsewhere, "functions", "--config", cfg, "-o", "json")
    assert [f["function"] for f in json.loads(functions.stdout)] == ["recorder"]
    assert cli(workdir, "validate").returncode == 0, "./triggerd.toml when none is named"


def test_no_config_or_two_configs_is_one_line_and_exit_8(workdir: Path) -> None:
    none = cli(workdir / "inbox", "status", env={"TRIGGERD_CONFIG": ""})
    assert none.returncode == ExitCode.CONFIG_UNREADABLE
    assert none.stderr == (
        "triggerd: no config file: name it (CONFIG or -c/--config) or set TRIGGERD_CONFIG "
        "(there is no ./triggerd.toml here)\n"
    )
    two = cli(workdir, "validate", "a.toml", "-c", "b.toml")
    assert two.returncode == ExitCode.CONFIG_UNREADABLE
    assert two.stderr == "triggerd: two configs named (a.toml and b.toml): give one\n"
    missing = cli(workdir, "dlq", "list", "-c", "nope.toml")
    assert missing.returncode == ExitCode.CONFIG_UNREADABLE
    assert "cannot read the config file nope.toml: No such file or directory" in missing.stderr
    binary = workdir / "bin.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    out = cli(workdir, "run", str(binary))
    assert out.returncode == ExitCode.CONFIG_UNREADABLE and "is not UTF-8 text" in out.stderr
    assert "Traceback" not in none.stderr + two.stderr + missing.stderr + out.stderr


def test_the_variable_is_only_a_default_below_the_named_config(workdir: Path) -> None:
    elsewhere = workdir / "inbox"
    cfg = str(workdir / "triggerd.toml")
    broken = {"TRIGGERD_CONFIG": str(workdir / "missing.toml")}
    for args in (["validate", cfg], ["validate", "-c", cfg], ["functions", "-c", cfg]):
        out = cli(elsewhere, *args, env=broken)
        assert out.returncode == 0, (args, out.stderr)
    same = cli(workdir, "validate", "triggerd.toml", "-c", cfg)
    assert same.returncode == 0, "two spellings of one file are one config"


# ---- status without a daemon --------------------------------------------------------------


def test_status_on_a_missing_store_creates_nothing_and_still_asks_the_daemon(
    workdir: Path,
) -> None:
    before = sorted(p.relative_to(workdir) for p in workdir.rglob("*"))
    out = cli(workdir, "status", "-o", "json")
    assert out.returncode == ExitCode.DAEMON_UNREACHABLE, "the daemon's state comes first"
    assert out.stderr == (
        f"triggerd: the state store {workdir}/state/state.db does not exist (the daemon has "
        "not run with this config, or daemon.state names another file) (queued and dlq "
        "unknown)\n"
    )
    doc = json.loads(out.stdout)
    assert doc["daemon"]["status"] == "not reachable"
    assert doc["state_store_error"] is not None
    assert {(r["queued"], r["dlq"]) for r in doc["triggers"]} == {(None, None)}
    assert sorted(p.relative_to(workdir) for p in workdir.rglob("*")) == before
    for command in (["dlq", "list"], ["dlq", "replay", "--all"], ["dlq", "purge", "--all"]):
        assert cli(workdir, *command).returncode == ExitCode.STATE_MISSING, command
    assert sorted(p.relative_to(workdir) for p in workdir.rglob("*")) == before


def test_a_source_command_for_a_trigger_the_config_lacks_creates_no_store(
    workdir: Path,
) -> None:
    # `triggerd postgres drop-slot` names a trigger the config does not have (or one of
    # another source type): exit 2 with one line, before the state store is opened, which
    # created an empty SQLite store for nothing.
    before = sorted(p.relative_to(workdir) for p in workdir.rglob("*"))
    out = cli(workdir, "postgres", "drop-slot", "nosuch")
    assert out.returncode == 2
    assert out.stderr == "triggerd: no trigger 'nosuch' (triggers: inbox, other)\n"
    out = cli(workdir, "postgres", "drop-slot", "inbox")
    assert out.returncode == 2
    assert out.stderr == "triggerd: trigger 'inbox' has a directory source\n"
    assert sorted(p.relative_to(workdir) for p in workdir.rglob("*")) == before


def test_status_lists_triggers_and_invoke_queues_read_only_and_exits_9_without_daemon(
    workdir: Path,
) -> None:
    db = db_path(workdir)
    asyncio.run(
        seed(
            db,
            [("inbox", time.time(), async_record("a"))],
            {"inbox": 2, "invoke-api:recorder": 3},
        )
    )
    files = {p.name: p.read_bytes() for p in db.parent.iterdir()}
    out = cli(workdir, "status", "-o", "json")
    assert out.returncode == ExitCode.DAEMON_UNREACHABLE, out.stderr
    doc = json.loads(out.stdout)
    rows = {r["trigger"]: r for r in doc["triggers"]}
    assert (rows["inbox"]["queued"], rows["inbox"]["dlq"]) == (2, 1)
    assert (rows["other"]["queued"], rows["other"]["dlq"]) == (0, 0)
    assert rows["invoke-api:recorder"]["queued"] == 3
    assert rows["invoke-api:recorder"]["source"] == "invoke (Event)"
    assert doc["daemon"]["status"] == "not reachable" and doc["exit_code"] == 9
    table = cli(workdir, "status")
    assert table.returncode == ExitCode.DAEMON_UNREACHABLE
    lines = table.stdout.splitlines()
    assert lines[0].split() == [
        "trigger",
        "source",
        "function",
        "state",
        "queued",
        "dlq",
        "reasons",
    ]
    assert any(line.split()[:1] == ["invoke-api:recorder"] for line in lines)
    assert "daemon at http://127.0.0.1:" in table.stdout and "not reachable" in table.stdout
    assert {p.name: p.read_bytes() for p in db.parent.iterdir()} == files, "nothing written"


def test_status_without_a_control_listener_says_so(workdir: Path) -> None:
    cfg = workdir / "triggerd.toml"
    cfg.write_text(cfg.read_text().replace("control_on_public = true", ""))
    asyncio.run(seed(db_path(workdir), []))
    out = cli(workdir, "status")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == (
        "daemon: no control listener configured (control_listen is empty): not asked"
    )


# ---- dlq ---------------------------------------------------------------------------------


def test_dlq_refuses_an_empty_store_file_and_leaves_it_empty(workdir: Path) -> None:
    db = db_path(workdir)
    db.touch()
    for command in (["dlq", "list"], ["dlq", "replay", "--all"], ["dlq", "purge", "--all"]):
        out = cli(workdir, *command)
        assert out.returncode == ExitCode.STATE_MISSING, (command, out.stderr)
        assert out.stderr == (
            f"triggerd: the state store {db} holds no triggerd state (empty, or another database)\n"
        ), command
    assert db.stat().st_size == 0, "no schema created"


def test_dlq_list_says_when_it_is_empty(workdir: Path) -> None:
    asyncio.run(seed(db_path(workdir), []))
    out = cli(workdir, "dlq", "list")
    assert (out.returncode, out.stdout) == (0, "no dead-letter records\n")
    out = cli(workdir, "dlq", "list", "-o", "json")
    assert (out.returncode, json.loads(out.stdout)) == (0, [])


def test_dlq_list_table_and_json(workdir: Path) -> None:
    ids = asyncio.run(
        seed(
            db_path(workdir),
            [("inbox", 1_700_000_000.0, async_record("a")), ("other", time.time(), BATCH_RECORD)],
        )
    )
    out = cli(workdir, "dlq", "list", "-o", "json")
    entries = json.loads(out.stdout)
    assert [e["id"] for e in entries] == ids[::-1], "newest first"
    assert entries[1]["created"] == "2023-11-14T22:13:20Z"
    assert entries[1]["record"]["requestPayload"]["Records"][0]["s3"]["object"]["key"] == "a"
    assert entries[1]["replayed"] is None
    table = cli(workdir, "dlq", "list", "--trigger", "inbox").stdout.splitlines()
    assert table[0].split() == [
        "id", "created", "trigger", "function", "condition", "destination", "replayed"
    ]  # fmt: skip
    assert table[1].split() == [
        str(ids[0]), "2023-11-14T22:13:20Z", "inbox", "recorder", "RetriesExhausted", "file", "-"
    ]  # fmt: skip
    assert len(table) == 2
    newest = cli(workdir, "dlq", "list", "-n", "1", "-o", "json")
    assert [e["id"] for e in json.loads(newest.stdout)] == [ids[1]]
    assert newest.stderr == "triggerd: showing the newest 1 of 2 entries (-n to see more)\n"
    for bad in ("0", "-1"):
        out = cli(workdir, "dlq", "list", "-n", bad)
        assert out.returncode == 2 and "Invalid value for '--limit' / '-n'" in out.stderr, bad


def test_dlq_replay_puts_each_entry_back_once_unless_asked_again(workdir: Path) -> None:
    db = db_path(workdir)
    now = time.time()
    old, new, batch = asyncio.run(
        seed(
            db,
            [
                ("inbox", now - 2 * 86400, async_record("old")),
                ("inbox", now - 60, async_record("new")),
                ("other", now - 60, BATCH_RECORD),
            ],
        )
    )
    dry = cli(workdir, "dlq", "replay", "--since", "1h", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would replay DLQ entry {new} onto inbox" in dry.stdout
    assert f"DLQ entry {old} " not in dry.stdout
    assert f"skipped DLQ entry {batch}: not an asynchronous invocation record" in dry.stderr
    assert asyncio.run(depth(db, "inbox")) == 0, "a dry run changes nothing"

    first = cli(workdir, "dlq", "replay", "--trigger", "inbox")
    assert first.returncode == 0, first.stderr
    assert "replayed 2 DLQ entries, skipped 0" in first.stdout
    assert asyncio.run(depth(db, "inbox")) == 2
    second = cli(workdir, "dlq", "replay", "--trigger", "inbox")
    assert second.returncode == 0, second.stderr
    assert "replayed 0 DLQ entries, skipped 2" in second.stdout
    assert f"skipped DLQ entry {old}: already replayed" in second.stderr
    assert asyncio.run(depth(db, "inbox")) == 2, "not queued twice"
    again = cli(workdir, "dlq", "replay", str(old), "--again")
    assert again.returncode == 0 and "replayed 1 DLQ entries" in again.stdout
    assert asyncio.run(depth(db, "inbox")) == 3

    listed = json.loads(cli(workdir, "dlq", "list", "-o", "json").stdout)
    assert {e["id"]: e["replayed"] is not None for e in listed} == {
        old: True,
        new: True,
        batch: False,
    }
    mixed = cli(workdir, "dlq", "replay", "--all")
    assert mixed.returncode == 1, "an entry that cannot be replayed is a failure"
    nothing = cli(workdir, "dlq", "replay")
    assert nothing.returncode == 2 and "name the entries to replay" in nothing.stderr
    both = cli(workdir, "dlq", "replay", str(old), "--all")
    assert both.returncode == 2 and "give entry IDs or --all, not both" in both.stderr


def test_dlq_purge_asks_on_a_terminal_and_needs_yes_elsewhere(workdir: Path) -> None:
    db = db_path(workdir)
    ids = asyncio.run(seed(db, [("inbox", time.time(), async_record(str(i))) for i in range(3)]))

    def count() -> int:
        return len(json.loads(cli(workdir, "dlq", "list", "-o", "json").stdout))

    piped = cli(workdir, "dlq", "purge", "--all")
    assert piped.returncode == 2
    assert "refusing to delete 3 DLQ entries without --yes" in piped.stderr
    assert count() == 3
    code, out = on_terminal(workdir, "dlq", "purge", "--all", answer=b"n\n")
    assert code == 1 and "Delete 3 DLQ entries" in out and "nothing deleted" in out
    assert count() == 3
    code, out = on_terminal(workdir, "dlq", "purge", str(ids[0]), answer=b"y\n")
    assert code == 0 and "deleted 1 DLQ entries" in out
    assert count() == 2
    unknown = cli(workdir, "dlq", "purge", "999", "--yes")
    assert unknown.returncode == 1, "as replay of an entry that does not exist"
    assert unknown.stderr == "triggerd: skipped DLQ entry 999: no such entry\n"
    assert count() == 2
    yes = cli(workdir, "dlq", "purge", "--trigger", "inbox", "--yes")
    assert yes.returncode == 0 and "deleted 2 DLQ entries" in yes.stdout
    assert cli(workdir, "dlq", "list").stdout == "no dead-letter records\n"


# ---- invoke --------------------------------------------------------------------------------


def test_invoke_on_a_terminal_uses_an_empty_event_and_says_so(workdir: Path) -> None:
    code, out = on_terminal(workdir, "invoke", "recorder")
    assert code == 0, out
    assert "no --event given: invoking with an empty event {}" in out
    assert '{"ok":[]}' in out.replace(" ", "")
    [call] = [json.loads(line) for line in (workdir / "calls.jsonl").read_text().splitlines()]
    assert call["event"] == {}
    piped = subprocess.run(
        [sys.executable, "-m", "triggerd", "invoke", "recorder"],
        cwd=workdir,
        input='{"from": "pipe"}',
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert piped.returncode == 0 and "empty event" not in piped.stderr, piped.stderr
    assert json.loads((workdir / "calls.jsonl").read_text().splitlines()[1])["event"] == {
        "from": "pipe"
    }
    assert not (workdir / ".triggerd-invoke").exists(), "nothing left in the current directory"
    missing = cli(workdir, "invoke", "recorder", "--event", "nope.json")
    assert missing.returncode == 2
    assert (
        missing.stderr
        == "triggerd: cannot read the event file nope.json: No such file or directory\n"
    )


def test_a_read_only_store_is_one_line_for_dlq_and_no_obstacle_for_status(workdir: Path) -> None:
    from tests.system.test_operator_errors import read_only_mount

    asyncio.run(seed(db_path(workdir), [("inbox", time.time(), async_record("a"))]))
    prefix = read_only_mount(workdir / "state")

    def under_mount(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*prefix, sys.executable, "-m", "triggerd", *args],
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )

    replay = under_mount("dlq", "replay", "--all")
    assert replay.returncode == ExitCode.STATE_UNWRITABLE
    [line] = replay.stderr.splitlines()
    assert line.startswith("triggerd: the state store ") and "cannot be written" in line
    status = under_mount("status", "-o", "json")
    assert status.returncode == ExitCode.DAEMON_UNREACHABLE, status.stderr
    [row] = [r for r in json.loads(status.stdout)["triggers"] if r["trigger"] == "inbox"]
    assert row["dlq"] == 1


def test_dlq_replay_shows_a_progress_bar_on_a_terminal(workdir: Path) -> None:
    asyncio.run(seed(db_path(workdir), [("inbox", time.time(), async_record("a"))]))
    code, out = on_terminal(workdir, "dlq", "replay", "--all")
    assert code == 0, out
    assert "replaying" in out and "1/1" in out


def test_two_concurrent_replays_queue_each_entry_once(workdir: Path) -> None:
    """Both replays plan before either writes (the window two `dlq replay --all` started
    together share): the marker is checked again where the event is queued, so the second
    one queues nothing."""
    from triggerd.cli.dlq import Selection, carry_out, plan_replay
    from triggerd.config.load import load_config
    from triggerd.config.plugins import Registry

    db = db_path(workdir)
    asyncio.run(seed(db, [("inbox", time.time(), async_record(str(i))) for i in range(5)]))
    cfg = load_config(workdir / "triggerd.toml", Registry.discover())
    everything = Selection((), True, None, None)

    async def both() -> tuple[int, int]:
        first, second = SQLiteStateStore(str(db)), SQLiteStateStore(str(db))
        await first.open()
        await second.open()
        try:
            plans = [await plan_replay(cfg, s, everything, again=False) for s in (first, second)]
            assert [len(p.todo) for p in plans] == [5, 5], "neither saw a marker when planning"
            codes = await asyncio.gather(
                carry_out(first, plans[0], again=False), carry_out(second, plans[1], again=False)
            )
            assert sum(len(p.skipped) for p in plans) == 5, "each entry skipped by one"
            return codes[0], codes[1]
        finally:
            await first.close()
            await second.close()

    assert asyncio.run(both()) == (0, 0), "already replayed is not a failure"
    assert asyncio.run(depth(db, "inbox")) == 5, "each entry queued once"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the CLI as another user")
def test_an_unreadable_config_is_one_line_and_exit_8() -> None:
    import shutil
    import tempfile

    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    # Under /tmp itself: pytest's tmp_path is in a directory only root may enter.
    here = Path(tempfile.mkdtemp(prefix="triggerd-unreadable-"))
    try:
        here.chmod(0o755)
        cfg = here / "triggerd.toml"
        cfg.write_text('[daemon]\nlisten = ""\n')
        cfg.chmod(0o600)
        as_nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
        for args in (["validate", str(cfg)], ["status", "-c", str(cfg)], ["run", str(cfg)]):
            out = subprocess.run(
                [*as_nobody, sys.executable, "-m", "triggerd", *args],
                cwd=here,
                capture_output=True,
                text=True,
                timeout=60,
                stdin=subprocess.DEVNULL,
            )
            assert out.returncode == ExitCode.CONFIG_UNREADABLE, (args, out.stderr)
            assert out.stderr == (
                f"triggerd: cannot read the config file {cfg}: Permission denied\n"
            ), args
    finally:
        shutil.rmtree(here)


def test_dlq_show_prints_the_record_and_names_a_missing_entry(workdir: Path) -> None:
    ids = asyncio.run(seed(db_path(workdir), [("inbox", 1_700_000_000.0, async_record("a"))]))
    out = cli(workdir, "dlq", "show", str(ids[0]))
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert shown["requestPayload"]["Records"][0]["s3"]["object"]["key"] == "a"
    missing = cli(workdir, "dlq", "show", str(ids[0] + 1000))
    assert missing.returncode == 1 and missing.stdout == ""
    assert len(missing.stderr.splitlines()) == 1 and str(ids[0] + 1000) in missing.stderr


def test_dlq_on_a_store_another_process_holds_is_one_line_and_exit_6(workdir: Path) -> None:
    import sqlite3

    asyncio.run(seed(db_path(workdir), [("inbox", 1_700_000_000.0, async_record("a"))]))
    holder = sqlite3.connect(db_path(workdir), isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        out = cli(workdir, "dlq", "list")
    finally:
        holder.close()
    assert out.returncode == ExitCode.STATE_LOCKED, out.stderr
    assert out.stdout == "" and "Traceback" not in out.stderr
    assert len(out.stderr.splitlines()) == 1 and "locked" in out.stderr


def test_schema_prints_the_config_files_json_schema(workdir: Path) -> None:
    out = cli(workdir, "schema")
    assert out.returncode == 0, out.stderr
    schema = json.loads(out.stdout)
    assert {"daemon", "functions", "triggers"} <= set(schema["properties"])
