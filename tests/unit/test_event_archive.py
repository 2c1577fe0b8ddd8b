"""Event bus archives in the SQLite state store (schema version 4) and StartReplay's checks."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from triggerd.config.buses import EventBusConfig
from triggerd.fanout.events.buses import EventsApi
from triggerd.fanout.events.errors import EventsError
from triggerd.state.base import ArchivedEvent, EventArchive
from triggerd.state.sqlite import _MIGRATIONS, SQLiteStateStore


async def open_store(path: Path) -> SQLiteStateStore:
    store = SQLiteStateStore(str(path))
    await store.open()
    return store


async def test_archive_keeps_events_by_bus_and_time_and_prunes_old_ones(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "s.db")
    try:
        assert isinstance(store, EventArchive)
        await store.archive_events(
            "shop", [ArchivedEvent(f"e{i}", 100.0 + i, b"{}") for i in range(5)]
        )
        await store.archive_events("other", [ArchivedEvent("x", 101.0, b"{}")])
        got = await store.archived_events("shop", since=101, until=104)
        assert [e.event_id for e in got] == ["e1", "e2", "e3"]
        page = await store.archived_events("shop", since=0, until=1e9, after_id=got[0].id, limit=2)
        assert [e.event_id for e in page] == ["e2", "e3"]
        assert await store.prune_archive("shop", before=102) == 2
        left = await store.archived_events("shop", since=0, until=1e9)
        assert [e.event_id for e in left] == ["e2", "e3", "e4"]
    finally:
        await store.close()


async def test_a_version_3_store_gains_the_archive_and_keeps_its_state(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute("INSERT INTO meta VALUES ('schema_version', '3')")
        for statements in _MIGRATIONS[:3]:
            for statement in statements:
                conn.execute(statement)
        conn.execute("INSERT INTO paused_triggers VALUES ('t', 1.0)")
    conn.close()
    store = await open_store(path)
    try:
        assert await store.paused_triggers() == {"t"}
        await store.archive_events("b", [ArchivedEvent("e", 1.0, b"{}")])
        assert len(await store.archived_events("b", since=0, until=2)) == 1
    finally:
        await store.close()


def api() -> EventsApi:
    bus = EventBusConfig.model_validate(
        {
            "name": "shop",
            "archive": {},
            "rules": [
                {"name": "r", "event_pattern": {"source": ["x"]}, "targets": [{"function": "f"}]}
            ],
        }
    )
    return EventsApi(
        lambda: [bus], region="us-east-1", account_id="123456789012", state=lambda: None, queues={}
    )


ARCHIVE = "arn:aws:events:us-east-1:123456789012:archive/shop-archive"
BUS = {"Arn": "arn:aws:events:us-east-1:123456789012:event-bus/shop"}
GOOD: dict[str, Any] = {
    "ReplayName": "r1",
    "EventSourceArn": ARCHIVE,
    "EventStartTime": 1.0,
    "EventEndTime": 2.0,
    "Destination": BUS,
}


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"ReplayName": "a b"}, "ValidationException"),
        ({"EventSourceArn": ARCHIVE + "x"}, "ResourceNotFoundException"),
        ({"EventSourceArn": "shop"}, "ValidationException"),
        ({"EventEndTime": 0.5}, "ValidationException"),
        ({"EventStartTime": None}, "ValidationException"),
        ({"Destination": {"Arn": BUS["Arn"] + "x"}}, "ValidationException"),
        ({"Destination": {**BUS, "FilterArns": ["arn:nope"]}}, "ResourceNotFoundException"),
        ({"Extra": 1}, "SerializationException"),
        ({}, "InternalException"),  # valid, but this API has no open store
    ],
)
async def test_start_replay_checks_its_request(change: dict[str, Any], code: str) -> None:
    params = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    with pytest.raises(EventsError) as err:
        await api().call("StartReplay", params, lambda action, arn: None)
    assert err.value.code == code


async def test_a_replay_skips_events_it_cannot_route_and_says_so(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "s.db")
    try:
        event = b'{"source": "x", "detail-type": "t", "detail": {}}'
        await store.archive_events("shop", [ArchivedEvent("e1", 1.5, event)])
        bus = EventBusConfig.model_validate(
            {
                "name": "shop",
                "archive": {},
                "rules": [
                    {
                        "name": "r",
                        "event_pattern": {"source": ["x"]},
                        "targets": [{"function": "f"}],
                    }
                ],
            }
        )
        no_queue = EventsApi(
            lambda: [bus],
            region="us-east-1",
            account_id="123456789012",
            state=lambda: store,
            queues={},  # the target's queue is not running
        )
        out = await no_queue.call("StartReplay", GOOD, lambda action, arn: None)
        assert out["State"] == "FAILED"
        assert out["StateReason"] == (
            "0 events replayed, 0 invocations queued; 1 events not delivered "
            "(The target's queue is not running.)"
        )
    finally:
        await store.close()
