"""What is particular to the PostgreSQL state store: several daemons (stores with their own
member ids) sharing one queue, migrations by daemons starting at once, a lost or cut
connection, and the password kept out of errors and logs. Against the machine's PostgreSQL,
one fresh database for the module (emptied between tests)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from tests.conftest import free_port
from tests.integration.relay import Relay
from tests.pg_state import PORT, empty_store, fresh_database
from triggerd.state import postgres as postgres_module
from triggerd.state.base import NewEvent
from triggerd.state.pgschema import SCHEMA_VERSION
from triggerd.state.postgres import PostgresStateStore, StateStoreUnavailableError
from triggerd.state.sqlite import StateStoreOpenError
from triggerd.types import ExitCode

pytestmark = pytest.mark.integration


def event(request_id: str, at: float = 100.0) -> NewEvent:
    return NewEvent("t1", "f1", request_id.encode(), request_id, at, at)


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


@pytest.fixture
async def stores(pg_url: str) -> AsyncIterator[list[PostgresStateStore]]:
    """Two stores on the same database: two daemons."""
    await empty_store(pg_url)
    pair = [PostgresStateStore(pg_url, member_id=name) for name in ("daemon-a", "daemon-b")]
    for s in pair:
        await s.open()
    yield pair
    for s in pair:
        await s.close()


async def test_two_daemons_claiming_at_once_never_take_the_same_event(
    stores: list[PostgresStateStore],
) -> None:
    a, b = stores
    await a.enqueue([event(f"r{i}") for i in range(300)])

    async def drain(store: PostgresStateStore) -> list[str]:
        got: list[str] = []
        while batch := await store.claim("t1", 7, 60, now=200):
            got += [e.request_id for e in batch]
            await asyncio.gather(*(store.complete(e.id) for e in batch))
        return got

    got_a, got_b = await asyncio.gather(drain(a), drain(b))
    assert not set(got_a) & set(got_b)
    assert sorted(got_a + got_b) == sorted(f"r{i}" for i in range(300))
    assert got_a and got_b
    assert await a.queue_depth() == 0


async def test_a_dead_daemon_s_claims_come_back_after_the_lease_and_only_the_holder_settles(
    stores: list[PostgresStateStore],
) -> None:
    a, b = stores
    await a.enqueue([event("r1"), event("r2")])
    claimed = await a.claim("t1", 10, 30, now=200)
    assert len(claimed) == 2
    assert await b.claim("t1", 10, 30, now=229) == []
    # Not the holder: completing, releasing or extending changes nothing.
    await b.complete(claimed[0].id)
    await b.release(claimed[1].id, available_at=0, attempts=5)
    await b.extend_lease([claimed[0].id], 3600, now=200)
    assert await b.recover_leases() == 0
    assert await a.queue_depth() == 2
    taken = await b.claim("t1", 10, 30, now=230)
    assert sorted(e.request_id for e in taken) == ["r1", "r2"]
    assert all(e.attempts == 0 for e in taken)
    # The old holder's late completion does not delete what b now holds.
    await a.complete(claimed[0].id)
    assert await a.queue_depth() == 2
    await asyncio.gather(*(b.complete(e.id) for e in taken))
    assert await a.queue_depth() == 0


async def test_daemons_starting_at_once_migrate_the_schema_once(pg_url: str) -> None:
    with fresh_database("triggerd_migrate") as url:
        many = [PostgresStateStore(url) for _ in range(4)]
        try:
            await asyncio.gather(*(s.open() for s in many))
            assert len({s.store_id for s in many}) == 1
            conn = await asyncpg.connect(url)
            try:
                versions = await conn.fetch("SELECT version FROM triggerd.schema_version")
            finally:
                await conn.close()
            assert [r[0] for r in versions] == list(range(1, SCHEMA_VERSION + 1))
        finally:
            for s in many:
                await s.close()


async def test_a_newer_schema_is_refused_with_one_line(pg_url: str) -> None:
    with fresh_database("triggerd_newer") as url:
        s = PostgresStateStore(url)
        await s.open()
        await s.close()
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("INSERT INTO triggerd.schema_version (version) VALUES (99)")
        finally:
            await conn.close()
        with pytest.raises(StateStoreOpenError) as info:
            await PostgresStateStore(url).open()
        message = str(info.value)
        assert "schema version 99, newer than this triggerd supports" in message
        assert "\n" not in message


async def test_an_unreachable_server_is_one_line_without_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    port = free_port()
    s = PostgresStateStore(f"postgresql://triggerd:s3cr3t-pw@127.0.0.1:{port}/db")
    with pytest.raises(StateStoreOpenError) as info:
        await s.open()
    message = str(info.value)
    assert f"triggerd@127.0.0.1:{port}/db cannot be reached" in message
    assert "s3cr3t-pw" not in message and "\n" not in message
    assert info.value.exit_code == ExitCode.FAILURE
    assert "s3cr3t-pw" not in caplog.text


async def test_a_missing_database_is_refused_as_an_operator_error() -> None:
    s = PostgresStateStore(f"postgresql://postgres:s3cr3t-pw@127.0.0.1:{PORT}/no_such_db_x")
    with pytest.raises(StateStoreOpenError) as info:
        await s.open()
    assert info.value.exit_code == ExitCode.STATE_UNWRITABLE
    assert "no_such_db_x" in str(info.value) and "s3cr3t-pw" not in str(info.value)


async def test_terminated_connections_are_retried_and_nothing_acknowledged_is_lost(
    stores: list[PostgresStateStore], pg_url: str
) -> None:
    a, _ = stores
    admin = await asyncpg.connect(pg_url)
    stop = asyncio.Event()

    async def killer() -> int:
        kills = 0
        for _ in range(5):  # every connection of the store, every 0.1 s, for a while
            if stop.is_set():
                break
            await asyncio.sleep(0.1)
            kills += await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name LIKE 'triggerd %' AND datname = current_database() "
                "AND pid <> pg_backend_pid()"
            )
        return kills

    acknowledged: list[str] = []

    async def writer(i: int) -> None:
        for j in range(40):
            rid = f"w{i}-{j}"
            await a.enqueue([event(rid)])
            acknowledged.append(rid)
            await asyncio.sleep(0.02)

    try:
        kill_task = asyncio.create_task(killer())
        await asyncio.gather(*(writer(i) for i in range(10)))
        stop.set()
        kills = await kill_task
    finally:
        await admin.close()
    assert kills > 0
    assert len(acknowledged) == 400
    claimed = await a.claim("t1", 1000, 60, now=200)
    assert {e.request_id for e in claimed} == set(acknowledged)
    assert a.write_error is None


async def test_a_cut_off_store_refuses_writes_reports_why_and_recovers(pg_url: str) -> None:
    await empty_store(pg_url)
    proxy = Relay(free_port(), f"127.0.0.1:{PORT}")
    await proxy.start()
    url = pg_url.replace(f":{PORT}/", f":{proxy.port}/").replace("postgres@", "postgres:pw9@")
    s = PostgresStateStore(url, write_retry_s=1.0)
    await s.open()
    try:
        await s.enqueue([event("before")])
        await proxy.stop()
        with pytest.raises(StateStoreUnavailableError, match="is unavailable") as info:
            await s.enqueue([event("during")])
        assert "pw9" not in str(info.value)
        assert s.write_error is not None and "pw9" not in s.write_error
        await proxy.start()
        # A write while the server comes back waits for it instead of failing.
        await s.enqueue([event("after")])
        assert s.write_error is None
        claimed = await s.claim("t1", 10, 60, now=200)
        assert sorted(e.request_id for e in claimed) == ["after", "before"]
    finally:
        await s.close()
        if proxy.server is not None:
            await proxy.stop()


async def test_a_daemon_cut_off_from_postgresql_answers_503_reports_it_and_recovers(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.integration.invoke_daemon import running_daemon

    monkeypatch.setattr(postgres_module, "WRITE_RETRY_S", 1.0)
    await empty_store(pg_url)
    proxy = Relay(free_port(), f"127.0.0.1:{PORT}")
    await proxy.start()
    url = pg_url.replace(f":{PORT}/", f":{proxy.port}/").replace("postgres@", "postgres:pw9@")
    invoke = "/2015-03-31/functions/echo/invocations"
    echo = {"backend": "http", "url": f"http://127.0.0.1:{free_port()}/", "timeout_s": 5}
    headers = {"X-Amz-Invocation-Type": "Event"}
    try:
        async with (
            # An http function (nothing listens there): no worker to start, and the events
            # only have to be queued.
            running_daemon(tmp_path, {"echo": echo}, listen="", state=url) as daemon,
            aiohttp.ClientSession(f"http://{daemon.control_address}") as http,
        ):
            async with http.post(invoke, json={"n": 1}, headers=headers) as resp:
                assert resp.status == 202
            await proxy.stop()
            async with http.post(invoke, json={"n": 2}, headers=headers) as resp:
                assert resp.status == 503
                assert (await resp.json())["Type"] == "Service"
            ready = daemon.readiness()
            assert ready["status"] == "degraded"
            await proxy.start()
            async with http.post(invoke, json={"n": 3}, headers=headers) as resp:
                assert resp.status == 202
            assert daemon.readiness()["status"] != "degraded"
    finally:
        if proxy.server is not None:
            await proxy.stop()
    assert "pw9" not in caplog.text


async def test_a_repeated_check_and_mark_with_its_own_value_passes_again(
    stores: list[PostgresStateStore],
) -> None:
    """What a group committed again after its COMMIT's answer was lost sees: its own mark."""
    a, b = stores
    assert await a.enqueue_unless_checkpoint([event("r1")], "replayed", "7", "mark-1")
    assert await a.enqueue_unless_checkpoint([event("r1")], "replayed", "7", "mark-1")
    assert not await b.enqueue_unless_checkpoint([event("r2")], "replayed", "7", "mark-2")
    assert await a.queue_depth() == 1


async def test_enqueues_wake_every_daemon_and_the_listener_comes_back_after_a_cut(
    stores: list[PostgresStateStore], pg_url: str
) -> None:
    a, b = stores
    woken: list[str] = []
    b.on_enqueued(woken.append)

    async def woken_with(trigger: str) -> None:
        async with asyncio.timeout(5):
            while trigger not in woken:
                await asyncio.sleep(0.01)

    await a.enqueue([event("r1"), NewEvent("t2", "f1", b"{}", "r2", 1.0, 1.0)])
    await woken_with("t1")
    await woken_with("t2")
    admin = await asyncpg.connect(pg_url)
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name LIKE 'triggerd %' AND datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )
    finally:
        await admin.close()
    woken.clear()
    await b.set_checkpoints("s", {"k": "v"})  # b's first write after the cut: it listens again
    async with asyncio.timeout(5):
        while b._listener is None:
            await asyncio.sleep(0.01)
    await a.enqueue([NewEvent("t3", "f1", b"{}", "r3", 1.0, 1.0)])
    await woken_with("t3")
