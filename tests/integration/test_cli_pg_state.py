"""The commands on a PostgreSQL state store, run as an operator runs them (subprocesses, the
machine's PostgreSQL, a fresh database per test): `state migrate` from SQLite, `status` and
`dlq` reading it, and `validate` accepting every singleton source on a shared store (each
is coordinated)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import free_port
from tests.integration.test_cli_commands import RECORDER
from tests.pg_state import fresh_database
from tests.triggerd_cli import triggerd_cli as cli
from triggerd.state.base import NewEvent
from triggerd.state.guard import StoreGuard
from triggerd.state.postgres import PostgresStateStore
from triggerd.state.sqlite import SQLiteStateStore
from triggerd.types import ExitCode

pytestmark = pytest.mark.integration


def config(tmp: Path, state: str, schedule: bool = False) -> str:
    text = f"""
[daemon]
state = "{state}"
listen = ""
control_listen = ""

[functions.recorder]
handler = "app.handler"
code = "{RECORDER}"
environment = {{ RECORD_FILE = "{tmp / "calls.jsonl"}" }}

[[triggers]]
name = "inbox"
function = "recorder"
source = {{ type = "directory", path = "inbox" }}
"""
    if schedule:
        text += """
[[triggers]]
name = "nightly"
function = "recorder"
source = { type = "schedule", expression = "rate(1 minute)" }

[[triggers]]
name = "clicks"
function = "recorder"
source = { type = "kinesis", stream = "clicks" }

[[triggers]]
name = "photos"
function = "recorder"
source = { type = "s3", mode = "poll", bucket = "photos-bucket" }

[[triggers]]
name = "orders"
function = "recorder"
source = { type = "postgres", dsn = "postgresql://postgres@db.example/shop", tables = ["orders"] }
"""
    return text


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_database("triggerd_cli") as url:
        yield url


def with_password(url: str) -> str:
    return url.replace("postgres@", "postgres:s3cr3t-pw@")


async def seed_sqlite(db: Path) -> list[int]:
    store = SQLiteStateStore(str(db))
    await store.open()
    try:
        now = time.time()
        await store.enqueue(
            [NewEvent("inbox", "recorder", f"{i}".encode(), f"r{i}", now, now) for i in range(5)],
            {"inbox": {"seen/a.txt": "etag1"}},
        )
        await store.enqueue([NewEvent("invoke-api:recorder", "recorder", b"{}", "x", now, now)])
        claimed = await store.claim("inbox", 2, 3600, now)
        await store.release(
            claimed[0].id, available_at=now, attempts=2, last_result=b"{}\nerror\xff"
        )
        ids = [
            await store.dlq_add(
                trigger="inbox",
                function="recorder",
                destination="file",
                condition="RetriesExhausted",
                created_at=now,
                record=b'{"k": %d}' % i,
            )
            for i in range(3)
        ]
        await store.dlq_delete(ids[0])
        await store.set_paused("inbox", True)
        return ids[1:]
    finally:
        await store.close()


async def pg_contents(url: str) -> dict[str, object]:
    conn = await asyncpg.connect(url)
    try:
        return {
            "queue": await conn.fetchval("SELECT count(*) FROM triggerd.queue"),
            "claimed": await conn.fetchval(
                "SELECT count(*) FROM triggerd.queue WHERE claimed_by IS NOT NULL"
            ),
            "attempts": sorted(
                r[0] for r in await conn.fetch("SELECT attempts FROM triggerd.queue")
            ),
            "last_results": [
                r[0]
                for r in await conn.fetch(
                    "SELECT last_result FROM triggerd.queue WHERE last_result IS NOT NULL"
                )
            ],
            "dlq": [r[0] for r in await conn.fetch("SELECT id FROM triggerd.dlq ORDER BY id")],
            "checkpoints": await conn.fetchval("SELECT count(*) FROM triggerd.checkpoints"),
            "paused": [
                r[0] for r in await conn.fetch("SELECT trigger FROM triggerd.paused_triggers")
            ],
        }
    finally:
        await conn.close()


def test_state_migrate_copies_everything_once_and_refuses_a_store_with_state(
    tmp_path: Path, pg_url: str
) -> None:
    (tmp_path / "state").mkdir()
    dlq_ids = asyncio.run(seed_sqlite(tmp_path / "state" / "state.db"))
    (tmp_path / "triggerd.toml").write_text(config(tmp_path, "sqlite:///state/state.db"))
    target = with_password(pg_url)

    out = cli(tmp_path, "state", "migrate", "--to", target)
    assert out.returncode == 0, out.stderr
    assert "copied 1 checkpoints, 6 queued events, 2 DLQ entries, 1 paused triggers, " in (
        out.stdout
    )
    assert "s3cr3t-pw" not in out.stdout + out.stderr
    got = asyncio.run(pg_contents(pg_url))
    assert got == {
        "queue": 6,
        "claimed": 0,
        "attempts": [0, 0, 0, 0, 0, 2],
        "last_results": [b"{}\nerror\xff"],
        "dlq": dlq_ids,
        "checkpoints": 1,
        "paused": ["inbox"],
    }

    async def new_dlq_id() -> int:
        store = PostgresStateStore(pg_url)
        await store.open()
        try:
            return await store.dlq_add(
                trigger="t", function="f", destination="d", condition="c", created_at=1, record=b""
            )
        finally:
            await store.close()

    assert asyncio.run(new_dlq_id()) > max(dlq_ids)

    again = cli(tmp_path, "state", "migrate", "--to", target)
    assert again.returncode == ExitCode.STATE_NOT_EMPTY
    assert "already holds state" in again.stderr and "--force" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1 and "s3cr3t-pw" not in again.stderr
    forced = cli(tmp_path, "state", "migrate", "--to", target, "--force")
    assert forced.returncode == 0, forced.stderr
    assert asyncio.run(pg_contents(pg_url))["queue"] == 6


def test_state_migrate_refuses_a_running_daemon_a_missing_store_and_a_bad_url(
    tmp_path: Path, pg_url: str
) -> None:
    (tmp_path / "triggerd.toml").write_text(config(tmp_path, "sqlite:///state/state.db"))
    out = cli(tmp_path, "state", "migrate", "--to", pg_url)
    assert out.returncode == ExitCode.STATE_MISSING and "does not exist" in out.stderr
    (tmp_path / "state").mkdir()
    asyncio.run(seed_sqlite(tmp_path / "state" / "state.db"))
    guard = StoreGuard(str(tmp_path / "state" / "state.db"), tmp_path / "state" / "run")
    guard.acquire()
    try:
        out = cli(tmp_path, "state", "migrate", "--to", pg_url)
        assert (
            out.returncode == ExitCode.STATE_LOCKED and "in use by another triggerd" in out.stderr
        )
    finally:
        guard.release()
    out = cli(tmp_path, "state", "migrate", "--to", "mysql://root:s3cr3t-pw@h/db")
    assert out.returncode == ExitCode.CONFIG_INVALID and "s3cr3t-pw" not in out.stderr


def test_status_and_dlq_read_a_postgresql_store_and_never_create_one(
    tmp_path: Path, pg_url: str
) -> None:
    (tmp_path / "inbox").mkdir()
    (tmp_path / "triggerd.toml").write_text(config(tmp_path, with_password(pg_url)))
    empty = cli(tmp_path, "dlq", "list")
    assert empty.returncode == ExitCode.STATE_MISSING, empty.stderr
    assert "holds no triggerd state" in empty.stderr and "s3cr3t-pw" not in empty.stderr

    async def seed() -> None:
        store = PostgresStateStore(pg_url)
        await store.open()
        try:
            now = time.time()
            await store.enqueue(
                [NewEvent("inbox", "recorder", b"{}", f"r{i}", now, now) for i in range(3)]
            )
            await store.dlq_add(
                trigger="inbox",
                function="recorder",
                destination="file",
                condition="RetriesExhausted",
                created_at=now,
                record=b'{"requestContext": {"condition": "RetriesExhausted"}}',
            )
        finally:
            await store.close()

    asyncio.run(seed())
    status = cli(tmp_path, "status", "-o", "json")
    assert status.returncode == 0, status.stderr  # no control listener: nothing to ask
    rows = {r["trigger"]: r for r in json.loads(status.stdout)["triggers"]}
    assert (rows["inbox"]["queued"], rows["inbox"]["dlq"]) == (3, 1)
    listed = cli(tmp_path, "dlq", "list", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == 1
    assert "s3cr3t-pw" not in status.stdout + status.stderr + listed.stdout + listed.stderr

    down = f"postgresql://postgres:s3cr3t-pw@127.0.0.1:{free_port()}/x"
    (tmp_path / "triggerd.toml").write_text(config(tmp_path, down))
    unreachable = cli(tmp_path, "status")
    assert unreachable.returncode == ExitCode.STATE_UNWRITABLE
    assert "cannot be reached" in unreachable.stderr and "s3cr3t-pw" not in unreachable.stderr


def test_validate_accepts_singleton_sources_and_reload_needs_a_control_listener(
    tmp_path: Path,
) -> None:
    (tmp_path / "inbox").mkdir()
    (tmp_path / "triggerd.toml").write_text(
        config(tmp_path, "postgresql://triggerd:s3cr3t-pw@db.example/triggerd", schedule=True)
    )
    out = cli(tmp_path, "validate")
    assert out.returncode == 0, out.stderr
    warnings = [line for line in out.stderr.splitlines() if "warning:" in line]
    # Schedules, S3 polls and CDC slots are coordinated (one daemon holds each one's lease),
    # Kinesis shards too (leases balanced across daemons); a directory is host-local.
    assert warnings == []
    assert "s3cr3t-pw" not in out.stdout + out.stderr
    # Without a control listener, no daemon can be found through a shared store.
    for args in (("reload",), ("pause", "inbox")):
        found = cli(tmp_path, *args)
        assert found.returncode == ExitCode.DAEMON_UNREACHABLE, found.stderr
        assert "PostgreSQL database, which has no lock file" in found.stderr
        assert len(found.stderr.strip().splitlines()) == 1
    (tmp_path / "triggerd.toml").write_text(
        config(tmp_path, "sqlite:///state/state.db", schedule=True)
    )
    assert "warning:" not in cli(tmp_path, "validate").stderr
