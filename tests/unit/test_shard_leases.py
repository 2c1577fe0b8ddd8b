"""Stream shard leases balanced across daemons (triggerd.delivery.shardleases), against an
in-memory lease table shared by several members: the share arithmetic, the steal policy,
convergence to an even spread, a dead member's leases taken once expired, and a reader
that loses a shard's lease (its checkpoint refused, its keys given back, reading stopped)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.fakes import StillClock
from tests.lease_fakes import FakeLeaseMember as Member
from tests.lease_fakes import FakeLeaseTable as Table
from tests.unit.test_shard_reader import FakeApi, shape
from triggerd.cli.readstate import StoreSnapshot
from triggerd.cli.status import print_cluster
from triggerd.delivery.shardleases import Plan, ShardLeases, coordinated, plan, share
from triggerd.delivery.shards import ShardReader
from triggerd.state.base import NewEvent
from triggerd.state.leases import Fence, LeaseInfo, LeaseTable
from triggerd.state.sqlite import SQLiteStateStore, StateStoreUnavailableError
from triggerd.types import Record, SystemClock


def reader_for(
    api: Any,
    store: object,
    clock: SystemClock,
    lease_timeout_s: float,
    shape_of: Any = shape,
    **options: Any,
) -> ShardReader:
    """A reader of trigger "t", polling every 50 ms, on `store`'s leases and checkpoints."""
    return ShardReader(
        api,
        shape_of,
        store,  # type: ignore[arg-type]  # the checkpoint calls the reader makes
        clock,
        logging.getLogger("test"),
        "t",
        poll_interval_s=0.05,
        lease_timeout_s=lease_timeout_s,
        **options,
    )


def holders(table: Table) -> dict[str, int]:
    now = table.clock.time()
    counts: dict[str, int] = {}
    for row in table.rows.values():
        if row.holder is not None and row.expires_at > now:
            counts[row.holder] = counts.get(row.holder, 0) + 1
    return counts


def lease_table(held: Mapping[str, Collection[str]], members: Sequence[str], me: str) -> LeaseTable:
    rows = tuple(
        LeaseInfo(name, holder, 1, 2000.0, 1000.0)
        for holder, names in held.items()
        for name in names
    )
    return LeaseTable(me, tuple(members), rows, 1000.0)


SHARDS = [f"s{i}" for i in range(4)]


# ---- the arithmetic and the policy ----


@pytest.mark.parametrize(
    ("shards", "members", "expected"), [(4, 2, 2), (4, 3, 2), (5, 2, 3), (3, 4, 1), (0, 2, 0)]
)
def test_share_is_the_ceiling_of_shards_over_live_members(
    shards: int, members: int, expected: int
) -> None:
    assert share(shards, members) == expected


def test_free_leases_first_up_to_the_share() -> None:
    moves = plan(SHARDS, lease_table({"b": ["s0"]}, ["a", "b"], "a"))
    assert moves.steal is None
    assert len(moves.take) == 2 and set(moves.take) <= {"s1", "s2", "s3"}


def test_one_free_lease_more_when_the_share_is_held() -> None:
    """A dead member still counted as live: its expired shard is taken all the same."""
    moves = plan(SHARDS, lease_table({"a": ["s0", "s1"], "b": ["s2"]}, ["a", "b"], "a"))
    assert moves == Plan(take=("s3",))


def test_steals_one_lease_from_the_most_loaded_holder() -> None:
    table = lease_table({"a": ["s0", "s1", "s2"], "b": ["s3"]}, ["a", "b", "c"], "c")
    moves = plan(SHARDS, table)
    assert moves.take == ()
    assert moves.steal is not None and moves.steal.holder == "a"


def test_no_steal_when_the_spread_is_as_even_as_it_gets() -> None:
    """4 shards over 3 members (share 2): 2/1/1 is stable, nobody takes back and forth."""
    held = {"a": ["s0"], "b": ["s1", "s2"], "c": ["s3"]}
    for me in ("a", "b", "c"):
        assert plan(SHARDS, lease_table(held, ["a", "b", "c"], me)) == Plan()


def test_a_member_that_needs_two_steals_from_a_holder_at_the_share() -> None:
    held = {"a": ["s0", "s1"], "b": ["s2", "s3"]}
    moves = plan(SHARDS, lease_table(held, ["a", "b", "c"], "c"))
    assert moves.steal is not None and moves.steal.name == "s0"


# ---- several members over one table ----


async def _round(leases: ShardLeases, wanted: Sequence[str]) -> None:
    await leases.renew()
    await leases.balance(wanted)


async def test_members_converge_to_an_even_spread_one_steal_at_a_time() -> None:
    clock = StillClock()
    table = Table(clock)
    wanted = [f"s{i}" for i in range(8)]
    first = ShardLeases(Member(table, "a"), "t", timeout_s=3, clock=clock)
    await _round(first, wanted)
    assert holders(table) == {"a": 8}  # alone: every free shard, nobody to share with
    members = [first] + [
        ShardLeases(Member(table, m), "t", timeout_s=3, clock=clock) for m in "bcd"
    ]
    steals = 0
    for _ in range(12):
        for m in members:
            before = set(m.held_shards())
            await _round(m, wanted)
            steals += len(m.held_shards() - before)
        clock.now += 1
    assert holders(table) == {"a": 2, "b": 2, "c": 2, "d": 2}
    assert steals == 6  # each of b, c, d took exactly its 2, one per round; none went back


async def test_a_dead_members_leases_are_taken_after_they_expire() -> None:
    clock = StillClock()
    table = Table(clock)
    a = ShardLeases(Member(table, "a"), "t", timeout_s=3, clock=clock)
    b = ShardLeases(Member(table, "b"), "t", timeout_s=3, clock=clock)
    for _ in range(4):
        await _round(a, SHARDS)
        await _round(b, SHARDS)
        clock.now += 1
    assert holders(table) == {"a": 2, "b": 2}
    # a dies (no more rounds): b keeps its rounds, one a second.
    expiry = max(r.expires_at for r in table.rows.values() if r.holder == "a")
    for _ in range(7):
        await _round(b, SHARDS)
        if clock.now < expiry:
            assert holders(table) == {"a": 2, "b": 2}  # nothing taken before they expire
        clock.now += 1
    # a still counts as live (its heartbeat is recent): one free lease a round, all taken.
    assert holders(table) == {"b": 4}
    assert b.held_shards() == set(SHARDS)


async def test_only_a_shared_store_is_coordinated() -> None:
    assert coordinated(Member(Table(StillClock()), "a"))
    sqlite = SQLiteStateStore(":memory:")
    assert not coordinated(sqlite)  # one daemon: every lease granted, no balancing
    await sqlite.open()
    try:
        table = await sqlite.lease_table("shard:t/")
        assert (table.members, table.leases) == (("local",), ())
        assert await sqlite.steal_lease("shard:t/s0", 1, 10) == 1
    finally:
        await sqlite.close()


# ---- a reader losing a shard ----


@dataclass
class Control:
    released: list[list[str]] = field(default_factory=list)

    async def release_keys(self, keys: Collection[str], timeout_s: float) -> None:
        self.released.append(sorted(keys))


async def _until(cond: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):  # did not hang
        while not cond():
            await asyncio.sleep(0.02)


async def test_a_reader_whose_checkpoint_is_fenced_stops_the_shard_and_gives_its_keys_back() -> (
    None
):
    clock = SystemClock()
    table = Table(clock)
    store = Member(table, "a")
    api = FakeApi({"s0": [1, 2, 3], "s1": [1, 2, 3]})
    control = Control()
    # Renewed at the start only, within the test: the write notices.
    reader = reader_for(api, store, clock, lease_timeout_s=30)
    reader.control = control
    await reader.start()
    try:
        await _until(lambda: reader.shard_state() == {"s0": "reading", "s1": "reading"})
        out: list[Record] = []
        await _until(lambda: bool(out.extend(reader.take(10))) or len(out) == 6)
        # Another daemon (alive, its lease far from expiry) takes s1 over before the acks.
        Member(table, "b")
        row = table.rows["shard:t/s1"]
        table.rows[row.name] = LeaseInfo(row.name, "b", row.epoch + 1, clock.time() + 3600, 0)
        await reader.ack(out)
        await _until(lambda: reader.shard_state().get("s1") == "leased elsewhere")
        await _until(lambda: control.released == [["s1"]])
        await _until(lambda: table.checkpoints.get("shard:s0") == "3")
        # Refused by the fence (the epoch a held), never checkpointed past the new holder.
        assert table.refused == [Fence("shard:t/s1", 1)]
        assert "shard:s1" not in table.checkpoints
        assert reader.take(10) == []
        assert table.rows["shard:t/s1"].holder == "b"
    finally:
        await reader.stop()
    assert table.rows["shard:t/s0"].holder is None  # released at stop


def test_status_lists_shard_leases_and_their_spread_per_trigger(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def lease(name: str, holder: str | None) -> dict[str, Any]:
        expires = None if holder is None else 1.5
        return {
            "lease": name,
            "holder": holder,
            "epoch": 4,
            "expires_in_s": expires,
            "renewed_s_ago": 0.5,
        }

    leases = (
        lease("schedule:nightly", "a:1:x"),
        lease("shard:clicks/shardId-0", "a:1:x"),
        lease("shard:clicks/shardId-1", "b:2:y"),
        lease("shard:clicks/shardId-2", "a:1:x"),
        lease("shard:clicks/shardId-3", None),
        lease("shard:orders/shardId-0", "b:2:y"),
    )
    print_cluster(StoreSnapshot("postgresql://db/triggerd", {}, {}, leases=leases))
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == (
        "lease shard:clicks/shardId-0: held by a:1:x at epoch 4, expires in 1.5 s unless renewed"
    )
    assert lines[4] == "lease shard:clicks/shardId-3: free (epoch 4)"
    assert lines[-2:] == [
        "shards of clicks: 2 read by a:1:x, 1 read by b:2:y, 1 free",
        "shards of orders: 1 read by b:2:y",
    ]


async def test_a_child_shard_starts_once_another_daemon_wrote_its_parents_end() -> None:
    clock = SystemClock()
    table = Table(clock)
    Member(table, "x")  # another daemon, reading the parent
    table.rows["shard:t/p"] = LeaseInfo("shard:t/p", "x", 1, clock.time() + 3600, 0)
    api = FakeApi({"p": [1, 2], "c": [3, 4]}, parents={"c": ("p",)}, closed={"p"})
    reader = reader_for(api, Member(table, "a"), clock, lease_timeout_s=0.3)
    await reader.start()
    try:
        await asyncio.sleep(0.5)  # a few balancing rounds
        assert reader.shard_state() == {"p": "leased elsewhere", "c": "waiting for parents"}
        assert reader.take(10) == []
        # x reads p to its end and releases it.
        table.checkpoints["shard:p"] = "SHARD_END"
        table.rows["shard:t/p"] = LeaseInfo("shard:t/p", None, 1, clock.time(), 0)
        out: list[Record] = []
        await _until(lambda: bool(out.extend(reader.take(10))) or len(out) == 2)
        assert [(r.handle, r.item_id) for r in out] == [("c", "3"), ("c", "4")]
        assert table.rows["shard:t/c"].holder == "a"
        assert "shard:t/p" not in {n for n in table.rows if table.rows[n].holder == "a"}
    finally:
        await reader.stop()


async def test_a_shard_id_finished_before_and_listed_open_again_is_leased_and_read() -> None:
    """The stream was deleted and created again (same ARN, the same shard ids): the old
    shard's SHARD_END in the shared store is not taken as the new shard's end, neither by
    the balancer's look at the stored checkpoints nor by the take-over's read of them."""
    clock = SystemClock()
    table = Table(clock)
    table.checkpoints["shard:s0"] = "SHARD_END"  # the old stream's s0, read to its end
    api = FakeApi({"s0": [7, 8]})  # the new stream's s0, open
    reader = reader_for(api, Member(table, "a"), clock, lease_timeout_s=0.3, reused_shard_ids=True)
    await reader.start()
    try:
        out: list[Record] = []

        async def acked() -> bool:
            batch = reader.take(10)
            out.extend(batch)
            await reader.ack(batch)
            return len(out) >= 2

        async with asyncio.timeout(10):
            while not await acked():
                await asyncio.sleep(0.02)
        assert [int(r.item_id) for r in out] == [7, 8]
        await _until(lambda: table.checkpoints.get("shard:s0") == "8")
    finally:
        await reader.stop()


async def test_a_reopened_shard_another_daemon_read_to_its_end_is_not_read_again() -> None:
    """Daemon b took s0 (listed open, SHARD_END stored) as a recreated stream's shard while
    daemon a held it. a read it to its end once the new stream closed it (its own SHARD_END
    stored) and let the lease go before b listed the shards again: b's take-over must not
    take that SHARD_END for the old stream's and deliver the whole shard once more."""
    clock = SystemClock()
    table = Table(clock)
    table.checkpoints["shard:s0"] = "SHARD_END"  # the old stream's s0
    Member(table, "a")
    table.take("shard:t/s0", "a")  # a reads the new stream's s0
    api = FakeApi({"s0": [7, 8]})
    b = reader_for(api, Member(table, "b"), clock, lease_timeout_s=0.3, reused_shard_ids=True)
    await b.start()
    out: list[Record] = []
    try:
        assert b.shard_state() == {"s0": "leased elsewhere"}
        # a read 7 and 8, the new stream closed s0, a stored its end and let it go.
        api.closed.add("s0")
        table.checkpoints["shard:s0"] = "SHARD_END"
        table.give_up("shard:t/s0")
        async with asyncio.timeout(10):
            while "s0" in b.shards:
                table.heartbeats["a"] = clock.time()
                batch = b.take(10)
                out.extend(batch)
                await b.ack(batch)
                await asyncio.sleep(0.02)
    finally:
        await b.stop()
    assert out == []
    assert table.checkpoints["shard:s0"] == "SHARD_END"


async def test_a_shard_taken_over_at_its_end_is_done_and_its_lease_given_back() -> None:
    """Another daemon wrote s0's SHARD_END after this one's balancing round looked at the
    store and before it took the lease (here: that look never sees it): the take-over reads
    SHARD_END. The shard was kept, finished, with its lease held and renewed for good: never
    seen finished here (its children never started on this daemon) and never handed back."""
    clock = SystemClock()
    table = Table(clock)
    Member(table, "a")
    table.take("shard:t/s0", "a")
    api = FakeApi({"s0": [1], "s1": [2]}, parents={"s1": ("s0",)}, closed={"s0"})
    b = reader_for(api, Member(table, "b"), clock, lease_timeout_s=0.3)

    async def blind(leases: Any) -> None:
        return None

    b._see_finished = blind  # type: ignore[method-assign]
    await b.start()
    out: list[Record] = []
    try:
        table.checkpoints["shard:s0"] = "SHARD_END"  # a read s0 to its end
        table.give_up("shard:t/s0")
        async with asyncio.timeout(10):
            while not out:
                table.heartbeats["a"] = clock.time()
                batch = b.take(10)
                out.extend(batch)
                await b.ack(batch)
                await asyncio.sleep(0.02)
        assert "s0" not in b.shards
        assert table.holder("shard:t/s0") is None
    finally:
        await b.stop()
    assert [int(r.item_id) for r in out] == [2]  # s1, once s0 was seen finished


async def test_a_reader_cut_off_from_the_store_stops_handing_out_by_the_local_deadline() -> None:
    clock = SystemClock()
    table = Table(clock)
    store = Member(table, "a")
    # Stops 0.3 s after the last renewal sent.
    reader = reader_for(FakeApi({"s0": [1, 2, 3]}), store, clock, lease_timeout_s=0.4)
    await reader.start()
    try:
        await _until(lambda: reader.shard_state() == {"s0": "reading"})
        await _until(lambda: reader.shards["s0"].log.ready == 3)
        store.down = True
        await asyncio.sleep(0.45)
        assert reader.take(10) == []  # read, never handed out: another daemon may read it
        assert reader.shard_state() == {"s0": "leased elsewhere"}
    finally:
        await reader.stop()


# ---- LATEST: the starting point is pinned before the first read ----


@dataclass
class TimedApi(FakeApi):
    """FakeApi whose records carry arrival times (epoch seconds); AT_TIMESTAMP as Kinesis
    gives it, or, with `no_timestamp`, from TRIM_HORIZON as the DynamoDB Streams client
    does."""

    arrivals: dict[int, float] = field(default_factory=dict)
    no_timestamp: bool = False

    def put(self, shard_id: str, seq: int, at: float) -> None:
        self.records[shard_id].append(seq)
        self.arrivals[seq] = at

    async def iterator(
        self, shard_id: str, kind: str, *, sequence: str | None, timestamp: float | None
    ) -> str:
        if kind != "AT_TIMESTAMP":
            return await super().iterator(shard_id, kind, sequence=sequence, timestamp=timestamp)
        self.calls.append(f"iterator {shard_id} {kind} {timestamp}")
        assert timestamp is not None
        recs = self.records[shard_id]
        if self.no_timestamp:
            return f"{shard_id}:0"
        return f"{shard_id}:{sum(1 for r in recs if self.arrivals[r] < timestamp)}"

    def shape(self, raw: Any, shard_id: str) -> Record:
        return Record(payload={"n": raw}, item_id=str(raw), size=10, created_at=self.arrivals[raw])


def _latest_reader(api: TimedApi, store: object, clock: SystemClock) -> ShardReader:
    return reader_for(
        api, store, clock, lease_timeout_s=30, shape_of=api.shape, starting_position="LATEST"
    )


async def _take(reader: ShardReader, count: int) -> list[int]:
    out: list[Record] = []
    await _until(lambda: bool(out.extend(reader.take(10))) or len(out) >= count)
    return [int(r.item_id) for r in out]


@pytest.mark.parametrize("no_timestamp", [False, True], ids=["kinesis", "dynamodb"])
async def test_latest_shard_changing_hands_before_its_first_checkpoint_loses_nothing(
    no_timestamp: bool,
) -> None:
    clock = SystemClock()
    table = Table(clock)
    api = TimedApi({"s0": []}, no_timestamp=no_timestamp)
    now = clock.time()
    api.put("s0", 1, now - 60)  # before the start: LATEST leaves them out
    api.put("s0", 2, now - 30)
    a = _latest_reader(api, Member(table, "a"), clock)
    await a.start()
    try:
        await _until(lambda: a.shard_state() == {"s0": "reading"})
        await _until(lambda: "shard:s0" in table.checkpoints)
        pin = table.checkpoints["shard:s0"]
        assert pin.startswith("AT_TIMESTAMP:") and now - 3 <= float(pin.split(":")[1]) <= now
        api.put("s0", 3, clock.time())
        api.put("s0", 4, clock.time())
        assert await _take(a, 2) == [3, 4]  # handed out, never acknowledged
    finally:
        await a.stop()  # a's lease goes to b before any checkpoint of a's
    assert table.checkpoints["shard:s0"] == pin
    api.put("s0", 5, clock.time())
    b = _latest_reader(api, Member(table, "b"), clock)
    await b.start()
    try:
        assert await _take(b, 3) == [3, 4, 5]  # from a's pin: 3 and 4 again, 5 not skipped
        await asyncio.sleep(0.2)
        assert b.take(10) == []  # 1 and 2 stay left out
        assert table.rows["shard:t/s0"].holder == "b"
    finally:
        await b.stop()


async def test_latest_restart_of_a_lone_daemon_before_its_first_checkpoint_loses_nothing(
    tmp_path: Any,
) -> None:
    clock = SystemClock()
    store = SQLiteStateStore(str(tmp_path / "state.db"))
    await store.open()
    try:
        api = TimedApi({"s0": []})
        api.put("s0", 1, clock.time() - 60)
        first = _latest_reader(api, store, clock)
        await first.start()
        try:
            api.put("s0", 2, clock.time())
            assert await _take(first, 1) == [2]
        finally:
            await first.stop()
        api.put("s0", 3, clock.time())  # while the daemon is down
        again = _latest_reader(api, store, clock)
        await again.start()
        try:
            assert await _take(again, 2) == [2, 3]
        finally:
            await again.stop()
    finally:
        await store.close()


async def test_a_pin_refused_by_the_fence_leaves_the_shard_unread() -> None:
    clock = SystemClock()
    table = Table(clock)
    api = TimedApi({"s0": []})
    store = Member(table, "a")
    real = store.enqueue_fenced

    async def taken_over_first(
        fence: Fence,
        events: Sequence[NewEvent],
        checkpoints: Mapping[str, Mapping[str, str | None]] | None = None,
    ) -> None:
        # Another daemon steals the lease between a's acquisition and a's pin.
        row = table.rows[fence.lease]
        table.rows[row.name] = LeaseInfo(row.name, "b", row.epoch + 1, clock.time() + 3600, 0)
        await real(fence, events, checkpoints)

    store.enqueue_fenced = taken_over_first  # type: ignore[method-assign]
    reader = _latest_reader(api, store, clock)
    await reader.start()
    try:
        await _until(lambda: table.refused == [Fence("shard:t/s0", 1)])
        await _until(lambda: reader.shard_state() == {"s0": "leased elsewhere"})
        assert "shard:s0" not in table.checkpoints
        assert not [c for c in api.calls if "LATEST" in c]  # never read past the fence
    finally:
        await reader.stop()


class SlowCheckpoints(Member):
    """A member whose reads of one shard's checkpoint wait for `gate`, or fail while
    `failing` holds that key."""

    def __init__(self, table: Table, member: str, key: str) -> None:
        super().__init__(table, member)
        self.key = key
        self.gate = asyncio.Event()
        self.failing = False
        self.listings = 0

    async def list_checkpoints(self, scope: str, prefix: str = "") -> dict[str, str]:
        """The first listing (the reader's start) predates every stored checkpoint: they
        were written by another daemon since."""
        self.listings += 1
        return {} if self.listings == 1 else await super().list_checkpoints(scope, prefix)

    async def get_checkpoint(self, scope: str, key: str) -> str | None:
        if key == self.key:
            if self.failing:
                raise StateStoreUnavailableError("the state store is unavailable")
            await self.gate.wait()
        return await super().get_checkpoint(scope, key)


def _taking_reader(api: FakeApi, store: Member, clock: SystemClock) -> ShardReader:
    return reader_for(api, store, clock, lease_timeout_s=0.6)


async def test_a_leased_shard_is_read_only_once_its_stored_checkpoint_was_read() -> None:
    clock = SystemClock()
    table = Table(clock)
    table.checkpoints["shard:s1"] = "2"  # left by the previous holder
    store = SlowCheckpoints(table, "a", "shard:s1")
    api = FakeApi({"s0": [1, 2], "s1": [1, 2, 3, 4]})
    reader = _taking_reader(api, store, clock)
    await reader.start()
    try:
        await _until(lambda: table.rows.get("shard:t/s1", None) is not None)
        await asyncio.sleep(0.1)
        reader._start_ready()  # e.g. a shard listing meanwhile: s1 must still wait
        await asyncio.sleep(0.1)
        assert reader.shard_state()["s1"] == "leased elsewhere"
        assert not [c for c in api.calls if c.startswith("iterator s1")]
        store.gate.set()
        assert sorted(await _take(reader, 4)) == [1, 2, 3, 4]  # s0 from its start, s1 after 2
        assert "iterator s1 AFTER_SEQUENCE_NUMBER 2" in api.calls
        assert not [c for c in api.calls if c.startswith("iterator s1 TRIM_HORIZON")]
    finally:
        await reader.stop()


async def test_a_shard_whose_checkpoint_cannot_be_read_goes_back_and_the_others_are_read() -> None:
    clock = SystemClock()
    table = Table(clock)
    table.checkpoints["shard:s1"] = "2"
    table.checkpoints["shard:s2"] = "5"
    store = SlowCheckpoints(table, "a", "shard:s1")
    store.gate.set()
    store.failing = True
    api = FakeApi({"s0": [1, 2], "s1": [1, 2, 3, 4], "s2": [5, 6]})
    reader = _taking_reader(api, store, clock)
    await reader.start()
    try:
        got = await _take(reader, 3)
        # s0 and s2 (after its stored checkpoint), taken in the same round as s1 (the
        # shards are taken in the order s0, s1, s2 by member "a").
        assert sorted(got) == [1, 2, 6]
        assert "iterator s2 AFTER_SEQUENCE_NUMBER 5" in api.calls, api.calls
        assert reader.shard_state()["s1"] == "leased elsewhere"
        assert table.rows["shard:t/s1"].holder is None  # given back
        assert not [c for c in api.calls if c.startswith("iterator s1")]
        store.failing = False  # a later round takes it, from its checkpoint
        assert await _take(reader, 2) == [3, 4]
        assert "iterator s1 AFTER_SEQUENCE_NUMBER 2" in api.calls
    finally:
        await reader.stop()


async def test_latest_closed_shards_stay_finished_at_the_next_start(tmp_path: Any) -> None:
    clock = SystemClock()
    store = SQLiteStateStore(str(tmp_path / "state.db"))
    await store.open()
    try:
        api = TimedApi({"old": [], "new": []}, parents={"new": ("old",)}, closed={"old"})
        api.put("old", 1, clock.time() - 60)
        api.put("new", 2, clock.time() - 60)
        first = _latest_reader(api, store, clock)
        await first.start()
        await first.stop()
        assert await store.get_checkpoint("t", "shard:old") == "SHARD_END"
        api.put("new", 3, clock.time())
        again = _latest_reader(api, store, clock)
        await again.start()
        try:
            assert await _take(again, 1) == [3]  # from the pinned start
            await asyncio.sleep(0.2)
            assert again.take(10) == []
        finally:
            await again.stop()
        assert not [c for c in api.calls if c.startswith("iterator old")]
    finally:
        await store.close()


class CountedRenewals(SlowCheckpoints):
    """SlowCheckpoints that notes each lease renewed (name), as the store granted it."""

    def __init__(self, table: Table, member: str, key: str) -> None:
        super().__init__(table, member, key)
        self.renewed: list[str] = []

    async def renew_lease(self, name: str, epoch: int, timeout_s: float) -> bool:
        ok = await super().renew_lease(name, epoch, timeout_s)
        if ok:
            self.renewed.append(name)
        return ok


async def test_held_leases_are_renewed_while_a_take_over_read_hangs() -> None:
    clock = SystemClock()
    table = Table(clock)
    table.checkpoints["shard:s1"] = "1"
    store = CountedRenewals(table, "a", "shard:s1")  # reading s1's checkpoint never ends
    api = FakeApi({"s0": [1, 2], "s1": [1, 2, 3]})
    reader = reader_for(api, store, clock, lease_timeout_s=0.6)  # renewed every 0.2 s
    await reader.start()
    try:
        assert sorted(await _take(reader, 2)) == [1, 2]  # s0, taken in the same round as s1
        await _until(lambda: store.renewed.count("shard:t/s0") >= 8)
        row = table.rows["shard:t/s0"]
        # Renewed in time all along: never expired and taken again (a new epoch).
        assert (row.holder, row.epoch) == ("a", 1)
        assert row.expires_at > clock.time()
        assert reader.shard_state()["s0"] == "reading"
        assert reader.shard_state()["s1"] == "leased elsewhere"
        assert not [c for c in api.calls if c.startswith("iterator s1")]
    finally:
        await reader.stop()
