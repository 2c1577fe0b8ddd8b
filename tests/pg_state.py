"""A fresh database on the machine's PostgreSQL (127.0.0.1:5432, trust auth, user postgres)
for tests of the PostgreSQL state store: created for a test module, dropped afterwards."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import time
import uuid
from collections.abc import Iterator

import asyncpg
import pytest

HOST = os.environ.get("TRIGGERD_TEST_PG_HOST", "127.0.0.1")
PORT = int(os.environ.get("TRIGGERD_TEST_PG_PORT", "5432"))
ADMIN_DSN = f"postgresql://postgres@{HOST}:{PORT}/postgres"

#: The tables a test empties between tests that share a database.
TABLES = ("queue", "checkpoints", "dlq", "paused_triggers", "leases")


def _wait_for_server() -> None:
    from tests.conftest import port_open

    deadline = time.monotonic() + 20
    while not port_open(HOST, PORT):
        if time.monotonic() > deadline:
            pytest.fail(
                f"PostgreSQL is not listening on {HOST}:{PORT}; start it with "
                "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`"
            )
        time.sleep(0.5)


async def _admin_async(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _admin(sql: str) -> None:
    """Run `sql` as the superuser, on a thread of its own (callers may be inside a loop)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _admin_async(sql)).result()


@contextlib.contextmanager
def fresh_database(prefix: str = "triggerd_test") -> Iterator[str]:
    """The URL of a new, empty database; dropped (its sessions ended) on exit."""
    _wait_for_server()
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    _admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@{HOST}:{PORT}/{name}"
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def empty_store(url: str) -> None:
    """Empty the store's tables (if they exist) between tests sharing a database."""
    conn = await asyncpg.connect(url)
    try:
        exists = await conn.fetchval("SELECT to_regclass('triggerd.queue') IS NOT NULL")
        if exists:
            tables = ", ".join(f"triggerd.{t}" for t in TABLES)
            await conn.execute(f"TRUNCATE {tables} RESTART IDENTITY")
    finally:
        await conn.close()
