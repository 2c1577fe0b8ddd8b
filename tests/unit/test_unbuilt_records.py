"""Records a source could not build (`Record.build_error`, e.g. a PostgreSQL row its mapping
cannot convert) in the poll pipeline: never invoked, each given up alone at once with its
error, whatever the filters; its neighbours invoked in order; without a destination, one log
line that never carries the error's message (it may quote the record's values)."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest

from tests.fakes import FakeBackend, FakeSource, MemDestination, make_record, run_until
from tests.unit.test_pipeline import bodies, build
from triggerd.delivery.unsettled import Unsettled
from triggerd.state.sqlite import SQLiteStateStore
from triggerd.types import BuildError, Record

SECRET = "hunter2-card-4111"


def unbuilt(body: Any, item_id: str) -> Record:
    rec = make_record(body, item_id=item_id)
    rec.build_error = BuildError("ValueError", f"cannot parse {SECRET!r}", "fake table t")
    return rec


async def test_an_unbuilt_record_goes_to_the_destination_alone_its_neighbours_invoked_in_order(
    store: SQLiteStateStore,
) -> None:
    recs = [make_record(i, item_id=f"m{i}") for i in range(5)]
    recs[2] = unbuilt("unbuilt", "m2")
    src, be, dest = FakeSource(recs), FakeBackend(), MemDestination()
    t = build(store, src, be, dest, batch_size=10, batching_window_s=0.2)
    await run_until(t, lambda: len(src.acked) == 5)
    assert [bodies(c) for c in be.calls] == [[0, 1, 3, 4]], "never invoked, the rest in order"
    assert src.nacked == []
    [record] = dest.records
    assert record["requestContext"]["condition"] == "RecordBuildFailed"
    assert record["requestContext"]["approximateInvokeCount"] == 0
    assert record["responseContext"] is None
    assert record["FakeBatchInfo"] == {"batchSize": 1}
    assert record["buildError"] == {
        "errorType": "ValueError",
        "errorMessage": f"cannot parse {SECRET!r}",
        "subject": "fake table t",
    }
    assert record["payload"] == {"Records": [recs[2].payload]}
    [entry] = await store.dlq_list("t")
    assert entry.condition == "RecordBuildFailed"


async def test_an_unbuilt_record_is_given_up_even_where_filters_would_drop_it(
    store: SQLiteStateStore,
) -> None:
    recs = [make_record({"kind": "image"}), unbuilt({"kind": "text"}, "bad")]
    src, be, dest = FakeSource(recs), FakeBackend(), MemDestination()
    t = build(store, src, be, dest, filters=[{"body": {"kind": ["image"]}}])
    await run_until(t, lambda: len(src.acked) == 2)
    assert [bodies(c) for c in be.calls] == [[{"kind": "image"}]]
    [record] = dest.records
    assert record["requestContext"]["condition"] == "RecordBuildFailed"


async def test_without_a_destination_an_unbuilt_record_is_one_log_line_without_its_message(
    store: SQLiteStateStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    recs = [make_record(0), unbuilt("unbuilt", "m1"), make_record(2)]
    src, be = FakeSource(recs), FakeBackend()
    t = build(store, src, be, None, batch_size=10, batching_window_s=0.2)
    await run_until(t, lambda: len(src.acked) == 3)
    assert [bodies(c) for c in be.calls] == [[0, 2]]
    [line] = [r for r in caplog.records if r.msg == "record.discarded"]
    assert line.levelno == logging.WARNING
    fields = line.__dict__
    assert fields["condition"] == "RecordBuildFailed"
    assert (fields["item_id"], fields["error_type"], fields["subject"]) == (
        "m1",
        "ValueError",
        "fake table t",
    )
    everything = orjson.dumps([r.__dict__ for r in caplog.records], default=str).decode()
    assert SECRET not in everything, "the error's message may quote values: never logged"
    labels = {"trigger": "t", "reason": "RecordBuildFailed"}
    value = t.rt.metrics.registry.get_sample_value("triggerd_records_dropped_total", labels)
    assert value == 1


async def test_a_queue_message_its_source_could_not_build_goes_back_without_a_destination(
    store: SQLiteStateStore, caplog: pytest.LogCaptureFixture
) -> None:
    # SQS/RabbitMQ-style (the queue ends retries) with no on-failure destination: an unbuilt
    # message is given back failed, for the queue's redrive or dead-letter limit, not acked
    # (deleted from the queue, kept nowhere); the later messages of its group go back after
    # it, unfailed; the earlier ones and the other groups are invoked.
    recs = [make_record(0, "a0", key="A"), unbuilt("unbuilt", "a1"), make_record(2, "a2", key="A")]
    recs[1].key = "A"
    recs.append(make_record(3, "b0", key="B"))
    src, be = FakeSource(recs), FakeBackend()
    t = build(store, src, be, None, "fakequeue", batch_size=10, batching_window_s=0.2)
    await run_until(t, lambda: len(src.acked) + len(src.nacked) == 4)
    assert [bodies(c) for c in be.calls] == [[0, 3]]
    assert [r.item_id for r in src.acked] == ["a0", "b0"]
    assert [(r.item_id, r.failed) for r in src.nacked] == [("a1", True), ("a2", False)]
    [line] = [r for r in caplog.records if r.getMessage() == "record.unbuilt_given_back"]
    assert (line.__dict__["item_id"], line.__dict__["subject"]) == ("a1", "fake table t")
    everything = orjson.dumps([r.__dict__ for r in caplog.records], default=str).decode()
    assert SECRET not in everything


async def test_an_unbuilt_record_of_a_batch_given_back_goes_back_with_it(
    store: SQLiteStateStore,
) -> None:
    # A batch that runs once its trigger stops or its keys were released (a lease term that
    # ended, a rebalance) gives its records back, and the unbuilt one goes back with them, in
    # order: given up there, it would be written to the destination a second time by
    # whichever reader (this daemon restarted, the lease's next holder) reads it again.
    from triggerd.delivery.pipeline import BatchRun

    recs = [make_record(0, item_id="m0"), unbuilt("u", "m1"), make_record(2, item_id="m2")]
    src, be, dest = FakeSource(), FakeBackend(), MemDestination()
    t = build(store, src, be, dest)
    t.stop()
    await BatchRun(t, Unsettled(list(recs))).process(list(recs))
    assert dest.records == [] and be.calls == [] and src.acked == []
    assert src.nacked == recs


async def test_a_stop_while_an_unbuilt_record_is_given_up_gives_the_rest_back(
    store: SQLiteStateStore,
) -> None:
    # The trigger stops while the first unbuilt record of the batch is written: that one is
    # settled (it is at its destination), the second one goes back with the others.
    from triggerd.delivery.pipeline import BatchRun

    class Stopping(MemDestination):
        async def send(self, record: Any) -> None:
            await super().send(record)
            t.stop()

    recs = [unbuilt("u1", "m0"), make_record(1, item_id="m1"), unbuilt("u2", "m2")]
    src, be, dest = FakeSource(), FakeBackend(), Stopping()
    t = build(store, src, be, dest)
    await BatchRun(t, Unsettled(list(recs))).process(list(recs))
    assert [r["payload"] for r in dest.records] == [{"Records": [recs[0].payload]}]
    assert src.acked == [recs[0]] and src.nacked == recs[1:] and be.calls == []


def test_a_build_errors_message_is_cut_after_its_first_2000_characters() -> None:
    error = BuildError.of(ValueError("x" * 2500), "fake table t")
    assert (error.error_type, error.subject) == ("ValueError", "fake table t")
    assert error.message == "x" * BuildError.MAX_MESSAGE + "..."
    assert BuildError.of(KeyError("k"), "s").message == "'k'"


async def test_a_failure_after_an_unbuildable_event_does_not_log_its_message(
    store: SQLiteStateStore, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The error of a batch whose event cannot be built may quote the record's values: it goes
    # to the destination only. Giving the record up can fail (here the state store's index
    # write after the destination has it): the batch crashes and is given back, logged with
    # its traceback (`batch.crashed`), which must not chain that error ("during handling of
    # the above exception").
    from triggerd.state.sqlite import StateStoreError

    class Refusing(FakeSource):
        def envelope(self, records: Any) -> Any:
            if any(r.payload["body"] == "bad" for r in records):
                raise ValueError(f"cannot serialise {SECRET!r}")
            return super().envelope(records)

    async def down(**_: Any) -> None:
        raise StateStoreError("the state store is down")

    monkeypatch.setattr(store, "dlq_add", down)
    caplog.set_level(logging.DEBUG)
    src, be, dest = Refusing([make_record("bad", item_id="m0")]), FakeBackend(), MemDestination()
    t = build(store, src, be, dest)
    await run_until(t, lambda: bool(src.nacked))
    assert dest.records and dest.records[0]["buildError"]["errorMessage"].endswith(f"{SECRET!r}")
    assert [r for r in caplog.records if r.getMessage() == "batch.crashed"]
    assert SECRET not in caplog.text


@pytest.mark.parametrize("how", ["report_batch_item_failures", "bisect"])
async def test_an_unbuilt_record_beside_a_failing_one_is_given_up_once_the_rest_retried_in_order(
    store: SQLiteStateStore, how: str
) -> None:
    # A stream batch with an unbuilt record and a record the function fails once: the unbuilt
    # one is given up alone, once; the function never sees it, and the records it fails are
    # retried (from the first failed one, or in halves) in order until they succeed.
    failed: set[str] = set()

    def respond(event: dict[str, Any]) -> Any:
        ids = [r["messageId"] for r in event["Records"]]
        if "m3" in ids and "m3" not in failed:
            failed.add("m3")
            if how == "bisect":
                raise ValueError("m3 fails once")
            return {"batchItemFailures": [{"itemIdentifier": "m3"}]}
        return None

    recs = [make_record(i, item_id=f"m{i}", key="k") for i in range(5)]
    recs[1] = unbuilt("u", "m1")
    recs[1].key = "k"
    src, be, dest = FakeSource(recs), FakeBackend(respond), MemDestination()
    options: dict[str, Any] = {how + ("_batch_on_function_error" if how == "bisect" else ""): True}
    t = build(store, src, be, dest, "fakestream", batch_size=10, batching_window_s=0.2, **options)
    await run_until(t, lambda: len(src.acked) == 5)
    invoked = [[r["messageId"] for r in c["Records"]] for c in be.calls]
    assert invoked[0] == ["m0", "m2", "m3", "m4"] and all("m1" not in ids for ids in invoked)
    retried = (
        [["m3", "m4"]] if how == "report_batch_item_failures" else [["m0", "m2"], ["m3", "m4"]]
    )
    assert invoked[1:] == retried
    [record] = dest.records
    assert record["requestContext"]["condition"] == "RecordBuildFailed"
    assert src.nacked == [] and sorted(r.item_id for r in src.acked) == [f"m{i}" for i in range(5)]
