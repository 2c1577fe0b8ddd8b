"""The batch buffer: size, window, 6 MB cap, per-key eligibility."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fakes import make_record
from triggerd.delivery.batching import ENVELOPE_OVERHEAD, BatchBuffer
from triggerd.delivery.retry import Backoff, RetryPolicy
from triggerd.types import Record


def sized(n: int, size: int, key: str | None = None) -> list[Record]:
    out = []
    for i in range(n):
        rec = make_record(i, key=key)
        rec.size = size
        out.append(rec)
    return out


@pytest.mark.parametrize(
    ("count", "batch_size", "window", "elapsed", "expected"),
    [
        (10, 10, 5.0, 0.0, 10),  # full batch: no waiting for the window
        (25, 10, 5.0, 0.0, 10),  # never more than batch_size
        (3, 10, 5.0, 0.0, None),  # partial batch waits for the window
        (3, 10, 5.0, 4.99, None),
        (3, 10, 5.0, 5.0, 3),  # window elapsed
        (1, 10, 0.0, 0.0, 1),  # window 0: invoke as soon as records are there
        (0, 10, 0.0, 9.0, None),  # nothing to send
    ],
)
def test_size_and_window(
    count: int, batch_size: int, window: float, elapsed: float, expected: int | None
) -> None:
    buf = BatchBuffer(batch_size=batch_size, window_s=window, capacity=100)
    buf.add(sized(count, 10), now=100.0)
    batch = buf.next_batch(100.0 + elapsed, set())
    assert (None if batch is None else len(batch)) == expected


def test_flush_sends_a_partial_batch_early() -> None:
    buf = BatchBuffer(batch_size=10, window_s=60, capacity=100)
    buf.add(sized(2, 10), now=0.0)
    assert buf.next_batch(0.0, set(), flush=True) is not None


@pytest.mark.parametrize(
    ("record_size", "max_bytes", "expected"),
    [
        (1000, 10_000, 8),  # (10000 - overhead) // 1001 records fit
        (5000, 10_000, 1),
        (20_000, 10_000, 1),  # a single record over the cap still goes alone
    ],
)
def test_payload_cap_cuts_the_batch(record_size: int, max_bytes: int, expected: int) -> None:
    buf = BatchBuffer(batch_size=100, window_s=60, capacity=200, max_bytes=max_bytes)
    buf.add(sized(20, record_size), now=0.0)
    batch = buf.next_batch(0.0, set())
    assert batch is not None and len(batch) == expected
    if expected > 1:
        assert ENVELOPE_OVERHEAD + sum(r.size + 1 for r in batch) <= max_bytes


def test_busy_key_records_wait_and_keep_their_order() -> None:
    buf = BatchBuffer(batch_size=10, window_s=0, capacity=100)
    a = sized(3, 10, key="A")
    b = sized(2, 10, key="B")
    buf.add([a[0], b[0], a[1], b[1], a[2]], now=0.0)
    first = buf.next_batch(0.0, {"A"})
    assert first == [b[0], b[1]]
    assert buf.next_batch(0.0, {"A"}) is None
    assert buf.deadline({"A"}) is None
    assert buf.next_batch(0.0, set()) == a


def test_take_key_removes_only_that_key() -> None:
    buf = BatchBuffer(batch_size=10, window_s=60, capacity=100)
    a, b = sized(2, 10, key="A"), sized(1, 10, key="B")
    buf.add([a[0], b[0], a[1]], now=0.0)
    assert buf.take_key("A") == a
    assert buf.take_all() == b
    assert len(buf) == 0


def test_room_is_bounded_by_capacity() -> None:
    buf = BatchBuffer(batch_size=5, window_s=60, capacity=12)
    buf.add(sized(10, 1), now=0.0)
    assert buf.room() == 2


@pytest.mark.parametrize(
    ("attempt", "low", "high"),
    [(1, 0.8, 1.0), (2, 1.6, 2.0), (3, 3.2, 4.0), (10, 24.0, 30.0), (1025, 24.0, 30.0)],
)
def test_backoff_doubles_with_jitter_and_caps(attempt: int, low: float, high: float) -> None:
    backoff = Backoff(base_s=1.0, max_s=30.0, jitter=0.2)
    delays = [backoff.delay(attempt) for _ in range(200)]
    assert all(low <= d <= high for d in delays)
    assert len(set(delays)) > 1, "jitter spreads retries"


@pytest.mark.parametrize(
    ("limit", "attempts", "exhausted"),
    [(-1, 10_000, False), (0, 1, True), (2, 2, False), (2, 3, True)],
)
def test_retry_attempt_limits(limit: int, attempts: int, exhausted: bool) -> None:
    rec = make_record(1)
    rec.attempts = attempts
    assert RetryPolicy(maximum_retry_attempts=limit).exhausted(rec) is exhausted


@pytest.mark.parametrize(
    ("age_limit", "age", "old"), [(-1, 1e9, False), (60, 59, False), (60, 61, True)]
)
def test_record_age_limit(age_limit: float, age: float, old: bool) -> None:
    rec = make_record(1, created_at=1000.0)
    assert RetryPolicy(maximum_record_age_s=age_limit).too_old(rec, 1000.0 + age) is old


def test_per_key_batches_hold_one_key_each_in_order() -> None:
    buf = BatchBuffer(batch_size=10, window_s=0, capacity=100, per_key=True)
    recs = [make_record(i, key="a" if i % 2 else "b") for i in range(8)]
    buf.add(recs, now=0.0)
    first = buf.next_batch(0.0, set())
    assert first is not None and {r.key for r in first} == {"b"}
    assert [r.payload["body"] for r in first] == ["0", "2", "4", "6"]
    second = buf.next_batch(0.0, {"b"})
    assert second is not None and [r.payload["body"] for r in second] == ["1", "3", "5", "7"]


def test_per_key_a_full_key_goes_before_a_waiting_one() -> None:
    buf = BatchBuffer(batch_size=3, window_s=60, capacity=100, per_key=True)
    buf.add([make_record(0, key="slow")], now=0.0)
    buf.add([make_record(i, key="full") for i in range(3)], now=1.0)
    batch = buf.next_batch(1.0, set())
    assert batch is not None and {r.key for r in batch} == {"full"}
    assert buf.next_batch(1.0, set()) is None  # "slow" waits for its window
    assert buf.deadline(set()) == 60.0
    assert buf.next_batch(60.0, set()) is not None


def test_per_key_skips_busy_keys_and_respects_the_byte_cap() -> None:
    buf = BatchBuffer(batch_size=100, window_s=0, capacity=100, max_bytes=10_000, per_key=True)
    buf.add(sized(5, 4000, key="big") + sized(2, 10, key="small"), now=0.0)
    batch = buf.next_batch(0.0, set())
    assert batch is not None and len(batch) == 2 and batch[0].key == "big"
    batch = buf.next_batch(0.0, {"big"})
    assert batch is not None and [r.key for r in batch] == ["small", "small"]


class _Unshortcut(BatchBuffer):
    """The buffer without its every-key-busy shortcut: a pass over the records each time."""

    def _all_busy(self, busy: set[str]) -> bool:
        return False


_KEYS = st.sampled_from([None, "a", "b", "c"])
_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.lists(_KEYS, max_size=6)),
        st.tuples(st.just("next"), st.sets(st.sampled_from(["a", "b", "c"]))),
        st.tuples(st.just("take_key"), st.sampled_from(["a", "b", "c"])),
        st.tuples(st.just("deadline"), st.sets(st.sampled_from(["a", "b", "c"]))),
    ),
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(ops=_OPS, per_key=st.booleans())
def test_the_all_keys_busy_shortcut_never_changes_what_is_eligible(
    ops: list[tuple[str, Any]], per_key: bool
) -> None:
    kw: dict[str, Any] = {"batch_size": 3, "window_s": 0.0, "capacity": 50, "per_key": per_key}
    fast, slow = BatchBuffer(**kw), _Unshortcut(**kw)
    n = 0
    for op, arg in ops:
        if op == "add":
            records = []
            for key in arg:
                records.append(make_record(n, key=key))
                n += 1
            fast.add(records, 1.0)
            slow.add(records, 1.0)
        elif op == "next":
            assert fast.next_batch(2.0, arg) == slow.next_batch(2.0, arg)
        elif op == "take_key":
            assert fast.take_key(arg) == slow.take_key(arg)
        else:
            assert fast.deadline(arg) == slow.deadline(arg)
            assert fast.next_batch_possible(arg) == slow.next_batch_possible(arg)
    assert fast.take_all() == slow.take_all()
