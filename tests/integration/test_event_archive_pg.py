"""An event bus's archive and replay on the PostgreSQL state store: PutEvents archives and
queues through `EventsApi` against the machine's PostgreSQL server (a fresh database), and
StartReplay re-queues the archived events with their `replay-name`."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import orjson
import pytest

from tests.pg_state import fresh_database
from triggerd.config.buses import EventBusConfig
from triggerd.fanout.events.buses import EventsApi
from triggerd.state.postgres import PostgresStateStore

pytestmark = pytest.mark.integration

ACCOUNT = "123456789012"
QUEUE = "invoke-api:f"


class Queue:
    name = QUEUE

    def __init__(self) -> None:
        self.woken = 0

    def wake(self) -> None:
        self.woken += 1


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


async def test_put_events_archive_and_a_replay_on_postgresql(pg_url: str) -> None:
    bus = EventBusConfig.model_validate(
        {
            "name": "shop",
            "archive": {"event_pattern": {"detail-type": ["Order"]}},
            "rules": [
                {"name": "r", "event_pattern": {"source": ["x"]}, "targets": [{"function": "f"}]}
            ],
        }
    )
    store = PostgresStateStore(pg_url)
    await store.open()
    try:
        queue = Queue()
        api = EventsApi(
            lambda: [bus],
            region="us-east-1",
            account_id=ACCOUNT,
            state=lambda: store,
            queues={"f": queue},
        )
        since = time.time() - 1

        def entry(detail_type: str, n: int) -> dict[str, str]:
            detail = json.dumps({"n": n})
            return {
                "Source": "x",
                "DetailType": detail_type,
                "Detail": detail,
                "EventBusName": "shop",
            }

        put = await api.call(
            "PutEvents",
            {"Entries": [entry("Order", 1), entry("Other", 2), entry("Order", 3)]},
            lambda action, arn: None,
        )
        assert put["FailedEntryCount"] == 0
        assert await store.queue_depth(QUEUE) == 3
        archived = await store.archived_events("shop", since=since, until=time.time() + 1)
        assert [orjson.loads(a.event)["detail"]["n"] for a in archived] == [1, 3]

        answer = await api.call(
            "StartReplay",
            {
                "ReplayName": "again",
                "EventSourceArn": f"arn:aws:events:us-east-1:{ACCOUNT}:archive/shop-archive",
                "EventStartTime": since,
                "EventEndTime": time.time() + 1,
                "Destination": {"Arn": f"arn:aws:events:us-east-1:{ACCOUNT}:event-bus/shop"},
            },
            lambda action, arn: None,
        )
        assert answer["StateReason"] == "2 events replayed, 2 invocations queued"
        claimed = await store.claim(QUEUE, 10, 60.0, time.time())
        events = [orjson.loads(c.payload) for c in claimed]
        replayed = [e for e in events if "replay-name" in e]
        assert sorted(e["detail"]["n"] for e in replayed) == [1, 3]
        assert {e["replay-name"] for e in replayed} == {"again"}
        assert {e["id"] for e in replayed} == {
            put["Entries"][0]["EventId"],
            put["Entries"][2]["EventId"],
        }
        assert len(events) == 5 and queue.woken == 2
        assert len(await store.archived_events("shop", since=since, until=time.time() + 1)) == 2
    finally:
        await store.close()
