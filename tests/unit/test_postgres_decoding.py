"""pgoutput decoding (v1 and v2 streaming layouts, built byte by byte), the type mapping, the
record shape and the config model of the postgres source."""

from __future__ import annotations

import contextlib
import decimal
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from triggerd_postgres.config import PostgresSourceConfig, default_name
from triggerd_postgres.pgoutput import (
    UNCHANGED,
    Begin,
    Column,
    Commit,
    Decoder,
    Delete,
    Insert,
    ProtocolError,
    Relation,
    StreamAbort,
    StreamCommit,
    StreamStart,
    StreamStop,
    Truncate,
    TypeMessage,
    Update,
)
from triggerd_postgres.pgtypes import Kind, PgType, builtin_type, catalog_type, to_attribute
from triggerd_postgres.shape import (
    Shaper,
    Table,
    parse_sequence_number,
    sample_event,
    sequence_number,
)

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
PG_EPOCH = 946_684_800


def cstr(s: str) -> bytes:
    return s.encode() + b"\0"


def tup(*values: Any) -> bytes:
    out = struct.pack("!h", len(values))
    for v in values:
        if v is None:
            out += b"n"
        elif v is UNCHANGED:
            out += b"u"
        else:
            raw = v.encode()
            out += b"t" + struct.pack("!i", len(raw)) + raw
    return out


def xid(stream: int | None) -> bytes:
    return struct.pack("!I", stream) if stream is not None else b""


def relation_msg(stream: int | None = None) -> bytes:
    cols = (
        b"\x01"
        + cstr("id")
        + struct.pack("!Ii", 23, -1)
        + b"\x00"
        + cstr("v")
        + struct.pack("!Ii", 25, -1)
    )
    return (
        b"R"
        + xid(stream)
        + struct.pack("!I", 16385)
        + cstr("public")
        + cstr("orders")
        + b"d"
        + struct.pack("!h", 2)
        + cols
    )


def test_v1_messages() -> None:
    d = Decoder()
    begin = d.decode(b"B" + struct.pack("!QqI", 1000, 1_000_000, 7))
    assert begin == Begin(1000, PG_EPOCH + 1.0, 7)
    rel = d.decode(relation_msg())
    assert rel == Relation(
        16385, "public", "orders", "d", (Column(True, "id", 23, -1), Column(False, "v", 25, -1))
    )
    assert d.decode(b"I" + struct.pack("!I", 16385) + b"N" + tup("1", "a")) == Insert(
        16385, ("1", "a")
    )
    assert d.decode(b"U" + struct.pack("!I", 16385) + b"N" + tup("1", UNCHANGED)) == Update(
        16385, None, None, ("1", UNCHANGED)
    )
    assert d.decode(
        b"U" + struct.pack("!I", 16385) + b"O" + tup("1", "a") + b"N" + tup("1", "b")
    ) == Update(16385, ("1", "a"), "O", ("1", "b"))
    assert d.decode(b"D" + struct.pack("!I", 16385) + b"K" + tup("1", None)) == Delete(
        16385, ("1", None), "K"
    )
    assert d.decode(b"T" + struct.pack("!IbII", 2, 3, 16385, 16386)) == Truncate(
        (16385, 16386), True, True
    )
    assert d.decode(b"Y" + struct.pack("!I", 16400) + cstr("public") + cstr("mood")) == TypeMessage(
        16400, "public", "mood"
    )
    assert d.decode(b"O" + struct.pack("!Q", 5) + cstr("origin")) is None
    commit = d.decode(b"C" + struct.pack("!bQQq", 0, 1000, 1048, 2_000_000))
    assert commit == Commit(0, 1000, 1048, PG_EPOCH + 2.0)


def test_v2_stream_messages_carry_the_transaction_id_inside_a_chunk() -> None:
    d = Decoder()
    assert d.decode(b"S" + struct.pack("!Ib", 9, 1)) == StreamStart(9, True)
    assert d.decode(relation_msg(stream=9)).xid == 9  # type: ignore[union-attr]
    assert d.decode(b"I" + struct.pack("!II", 10, 16385) + b"N" + tup("1", "a")) == Insert(
        16385, ("1", "a"), 10
    )
    assert d.decode(b"E") == StreamStop()
    # outside a chunk, the layout is v1 again
    assert d.decode(b"I" + struct.pack("!I", 16385) + b"N" + tup("2", "b")).xid is None  # type: ignore[union-attr]
    assert d.decode(b"A" + struct.pack("!II", 9, 10)) == StreamAbort(9, 10)
    assert d.decode(b"c" + struct.pack("!IbQQq", 9, 0, 2000, 2048, 0)) == StreamCommit(
        9, 0, 2000, 2048, float(PG_EPOCH)
    )


@pytest.mark.parametrize(
    "data",
    [b"", b"Z", b"I" + struct.pack("!I", 1) + b"X", b"I" + struct.pack("!I", 1) + b"N\x00\x01q"],
)
def test_malformed_messages_raise_protocol_errors(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        Decoder().decode(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_never_crash_the_decoder_otherwise(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        Decoder().decode(data)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=48).map(lambda b: b"I" + b),
        st.lists(st.one_of(st.none(), st.just(UNCHANGED), st.text(max_size=6)), max_size=5).map(
            lambda values: b"I" + struct.pack("!I", 7) + b"N" + tup(*values)
        ),
    )
)
def test_the_insert_short_way_decodes_as_the_decoder_does(data: bytes) -> None:
    """Inserts outside a stream skip the message object (`Decoder.insert`): the same relid
    and row as `decode`, and a ProtocolError exactly when `decode` raises one."""
    try:
        expected = Decoder().decode(data)
    except ProtocolError:
        with pytest.raises(ProtocolError):
            Decoder().insert(data)
        return
    assert isinstance(expected, Insert)
    assert Decoder().insert(data) == (expected.relid, expected.new)


# ---- types ----


@pytest.mark.parametrize(
    ("text", "oid", "expected"),
    [
        ("42", 23, {"N": "42"}),
        ("1e+100", 701, {"N": "1e+100"}),
        ("1e+200", 701, {"S": "1e+200"}),
        ("0.000", 1700, {"N": "0.000"}),
        ("-Infinity", 700, {"S": "-Infinity"}),
        ("f", 16, {"BOOL": False}),
        ("\\x", 17, {"B": ""}),
        ("2024-01-01 00:00:00+00", 1184, {"S": "2024-01-01T00:00:00Z"}),
        ("infinity", 1184, {"S": "infinity"}),
        ("0044-03-15 12:00:00 BC", 1114, {"S": "0044-03-15 12:00:00 BC"}),
        ("{}", 1007, {"L": []}),
        ('{"{\\"a\\": 1}"}', 3807, {"L": [{"M": {"a": {"N": "1"}}}]}),
        ("[0:1]={7,8}", 1007, {"L": [{"N": "7"}, {"N": "8"}]}),
        ('{"\\\\x01"}', 1001, {"L": [{"B": "AQ=="}]}),
        ("not json", 3802, {"S": "not json"}),
        (None, 25, {"NULL": True}),
    ],
)
def test_values(text: str | None, oid: int, expected: dict[str, Any]) -> None:
    t = builtin_type(oid)
    assert t is not None
    assert to_attribute(text, t) == expected


@given(st.from_regex(r"-?[0-9]{1,45}(\.[0-9]{1,45})?", fullmatch=True))
def test_plain_numbers_are_n_exactly_when_dynamodb_can_hold_them(text: str) -> None:
    value = decimal.Decimal(text)
    digits = value.normalize(decimal.Context(prec=100)).as_tuple().digits
    holdable = value.is_zero() or (len(digits) <= 38 and -130 <= value.adjusted() <= 125)
    expected = {"N": text} if holdable else {"S": text}
    assert to_attribute(text, PgType(Kind.NUMBER)) == expected


def test_user_types_are_resolved_from_the_catalog() -> None:
    assert builtin_type(16500) is None
    assert catalog_type(
        typtype="e", category="E", element=None, base=None, delimiter=","
    ) == PgType(Kind.TEXT)
    integer = PgType(Kind.INTEGER)
    assert (
        catalog_type(typtype="d", category="N", element=None, base=integer, delimiter=",")
        is integer
    )
    box = catalog_type(
        typtype="b", category="A", element=PgType(Kind.TEXT), base=None, delimiter=";"
    )
    assert to_attribute("{(1,1),(0,0);(2,2),(1,1)}", box) == {
        "L": [{"S": "(1,1),(0,0)"}, {"S": "(2,2),(1,1)"}]
    }


# ---- shape ----


def table() -> Table:
    rel = Relation(
        1, "public", "orders", "f", (Column(True, "id", 23, -1), Column(False, "v", 25, -1))
    )
    arn = "arn:aws:dynamodb:us-east-1:123456789012:table/db.public.orders/stream/slot"
    return Table(rel, (PgType(Kind.INTEGER), PgType(Kind.TEXT)), (0,), arn)


def shaper(view: Any = "NEW_AND_OLD_IMAGES", pf: int = 1) -> Shaper:
    return Shaper("us-east-1", "123456789012", "db", "slot", view, "<toast>", pf)


def change(s: Shaper, **kw: Any) -> Any:
    args: dict[str, Any] = {
        "event_name": "MODIFY",
        "table": table(),
        "new": ("1", "b"),
        "old": ("1", "a"),
        "old_full": True,
        "commit_lsn": 5,
        "ordinal": 3,
        "commit_time": 1_700_000_000.9,
        "size_bytes": 10,
        **kw,
    }
    return s.change(**args)


def test_sequence_numbers_are_fixed_width_and_ordered_as_strings() -> None:
    assert sequence_number(5, 3) == "00000000000000000005" + "0000000003"
    assert parse_sequence_number(sequence_number(2**40, 17)) == (2**40, 17)
    pairs = [(1, 9), (2, 0), (2, 10), (10, 1), (2**63, 0)]
    assert sorted(sequence_number(*p) for p in pairs) == [sequence_number(*p) for p in pairs]


@pytest.mark.parametrize(
    ("view", "keys"),
    [
        ("KEYS_ONLY", set()),
        ("NEW_IMAGE", {"NewImage"}),
        ("OLD_IMAGE", {"OldImage"}),
        ("NEW_AND_OLD_IMAGES", {"NewImage", "OldImage"}),
    ],
)
def test_view_types_choose_the_images(view: Any, keys: set[str]) -> None:
    ddb = change(shaper(view)).payload["dynamodb"]
    assert {k for k in ddb if k.endswith("Image")} == keys
    assert ddb["Keys"] == {"id": {"N": "1"}} and ddb["StreamViewType"] == view


def test_record_fields_and_deterministic_event_id() -> None:
    a, b = change(shaper()), change(shaper())
    assert a.payload["eventID"] == b.payload["eventID"] and len(a.payload["eventID"]) == 32
    assert a.item_id == a.payload["dynamodb"]["SequenceNumber"]
    assert a.payload["dynamodb"]["ApproximateCreationDateTime"] == 1_700_000_000
    assert a.created_at == 1_700_000_000.9
    assert a.key == "public.orders"
    assert a.size == len(json.dumps(a.payload, separators=(",", ":")))


def test_parallelization_spreads_rows_over_lanes_by_key() -> None:
    s = shaper(pf=4)
    keys = {change(s, new=(str(i), "x"), old=None).key for i in range(50)}
    assert keys == {f"public.orders#{n}" for n in range(4)}
    assert change(s, new=("7", "x")).key == change(s, new=("7", "y")).key


def test_unchanged_toast_from_the_old_row_else_the_placeholder() -> None:
    full = change(shaper(), new=("1", UNCHANGED), old=("1", "kept")).payload["dynamodb"]
    assert full["NewImage"]["v"] == {"S": "kept"}
    bare = change(shaper(), new=("1", UNCHANGED), old=None, old_full=False).payload["dynamodb"]
    assert bare["NewImage"]["v"] == {"S": "<toast>"}


def test_null_keys_and_unchanged_values_take_the_long_way_to_the_same_images() -> None:
    s = shaper()
    ddb = change(s, new=(None, None), old=None, old_full=False).payload["dynamodb"]
    assert ddb["Keys"] == {"id": {"NULL": True}}
    assert ddb["NewImage"] == {"id": {"NULL": True}, "v": {"NULL": True}}
    # the key itself unchanged (TOASTed) in the new row: Keys from the old row
    ddb = change(s, new=(UNCHANGED, "b"), old=("7", "a")).payload["dynamodb"]
    assert ddb["Keys"] == {"id": {"N": "7"}} and ddb["NewImage"]["id"] == {"N": "7"}
    # a REPLICA IDENTITY DEFAULT delete: the old row has its key columns only
    removed = change(s, event_name="REMOVE", new=None, old=("3", None), old_full=False)
    assert removed.payload["dynamodb"]["OldImage"] == {"id": {"N": "3"}}


def test_the_batch_event_is_the_envelope_serialised() -> None:
    import logging

    import orjson

    from triggerd.types import EncodesEvents, SourceContext, SystemClock
    from triggerd_postgres.source import PostgresSource

    cfg = PostgresSourceConfig(type="postgres", tables=["orders"])
    ctx = SourceContext(trigger="t", state=None, clock=SystemClock(), log=logging.getLogger("t"))  # type: ignore[arg-type]
    source = PostgresSource(cfg, ctx)
    assert isinstance(source, EncodesEvents)
    s = shaper()
    records = [change(s, ordinal=i, new=(str(i), f'caf\u00e9 "{i}"\n')) for i in range(3)]
    assert source.encode_event(records) == orjson.dumps(source.envelope(records))
    assert [len(orjson.dumps(r.payload)) for r in records] == [r.size for r in records]
    assert source.encode_event([]) == orjson.dumps({"Records": []})


def test_sample_event_matches_the_golden_file() -> None:
    text = json.dumps(sample_event({}), indent=2) + "\n"
    path = GOLDEN / "postgres_dynamodb_stream_event.json"
    import os

    if os.environ.get("TRIGGERD_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.read_text() == text
    with pytest.raises(ValueError, match="event must be"):
        sample_event({"event": "UPSERT"})


# ---- config ----


def test_config_defaults_and_names() -> None:
    cfg = PostgresSourceConfig(type="postgres", tables=["orders", "sales.items"])
    assert cfg.table_names == [("public", "orders"), ("sales", "items")]
    assert cfg.slot_name("My-Trigger") == "triggerd_my_trigger" == default_name("My-Trigger")
    assert cfg.stream_view_type == "NEW_IMAGE" and not cfg.needs_old_image


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, r"set tables \(or schemas\)"),
        ({"tables": ["a.b.c"]}, "is not `table` or `schema.table`"),
        ({"tables": ["t"], "slot": "Bad-Name"}, "must be 1-63 characters"),
        ({"tables": ["t"], "dsn": "mysql://x"}, "dsn must start with postgresql://"),
        ({"tables": ["t"], "dsn": "postgresql://h/db", "host": "x"}, "set either dsn or host"),
        ({"tables": ["t"], "poll_interval_s": 2, "max_poll_interval_s": 1}, "max_poll_interval_s"),
        ({"tables": ["t"], "stream_view_type": "ALL"}, "stream_view_type"),
        ({"tables": ["t"], "parallelization_factor": 11}, "parallelization_factor"),
    ],
)
def test_bad_config(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        PostgresSourceConfig.model_validate({"type": "postgres", **data})


def test_display_never_shows_the_password() -> None:
    cfg = PostgresSourceConfig(type="postgres", tables=["t"], dsn="postgresql://u:s3cret@h:5/db")  # type: ignore[arg-type]
    assert cfg.display() == "postgresql://u@h:5/db" and cfg.database_name == "db"


# ---- streamed transactions ----


def streamed_insert(subxid: int, ident: str) -> bytes:
    return b"I" + struct.pack("!II", subxid, 16385) + b"N" + tup(ident, "x")


def test_streamed_changes_are_read_back_without_aborted_subtransactions() -> None:
    from triggerd_postgres.streamed import StreamedTransactions

    streams = StreamedTransactions()
    streams.start(9)
    streams.add(streamed_insert(9, "1"))
    streams.add(streamed_insert(10, "2"))  # a subtransaction, aborted below
    streams.stop()
    streams.start(20)
    streams.add(streamed_insert(20, "other"))  # another transaction, aborted as a whole
    streams.stop()
    streams.start(9)
    streams.add(streamed_insert(11, "3"))
    streams.stop()
    streams.abort(9, 10)
    streams.abort(20, 20)
    assert streams.commit(20) is None
    spill = streams.commit(9)
    assert spill is not None and len(streams) == 0
    decoder = Decoder(in_stream=True)
    got = [decoder.decode(data) for data in spill.replay()]
    assert [m.new[0] for m in got] == ["1", "3"]  # type: ignore[union-attr]
    spill.close()
    with pytest.raises(RuntimeError, match="outside Stream Start"):
        streams.add(streamed_insert(9, "4"))
    streams.close()


# ---- reading ----


async def test_decoding_a_page_lets_other_tasks_run_every_few_rows() -> None:
    import asyncio
    import logging

    from triggerd.delivery.streams import ShardLog
    from triggerd.types import SystemClock
    from triggerd_postgres.changes import YIELD_EVERY, ChangeReader, Session

    async def no_catalog(rel: Relation) -> Table:
        raise AssertionError("no Relation message in this page")

    shard = ShardLog(SystemClock(), max_entries=10_000)
    reader = ChangeReader(
        shard=shard,
        shaper=shaper(),
        table=no_catalog,
        on_marker=lambda: None,
        page_rows=500,
        truncate="deliver",
        log=logging.getLogger("t"),
        trigger="t",
    )
    reader.tables[1] = table()
    count = 3 * YIELD_EVERY
    begin = b"B" + struct.pack("!QqI", 5000, 0, 7)
    inserts = [b"I" + struct.pack("!I", 1) + b"N" + tup(str(i), "x") for i in range(count)]
    rows = [{"data": data} for data in [begin, *inserts]]
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    try:
        await asyncio.sleep(0)  # the ticker starts
        before = ticks
        assert await reader.process(Session(), rows) == count
        assert ticks - before >= 3, "the loop turned while the page was decoded"
    finally:
        task.cancel()
    taken = shard.take(count)
    assert [r.payload["dynamodb"]["Keys"]["id"]["N"] for r in taken] == [
        str(i) for i in range(count)
    ]


async def test_slot_advances_are_spaced_by_ten_times_the_last_ones_duration() -> None:
    import asyncio
    import logging

    from triggerd.types import SourceContext
    from triggerd_postgres import source as src
    from triggerd_postgres.changes import SlotPosition

    slept: list[float] = []

    class Clock:
        def time(self) -> float:
            return 0.0

        def monotonic(self) -> float:
            return 0.0

        async def sleep(self, seconds: float) -> None:
            slept.append(seconds)
            await asyncio.sleep(0)

    cfg = PostgresSourceConfig(type="postgres", tables=["orders"])
    ctx = SourceContext(trigger="t", state=None, clock=Clock(), log=logging.getLogger("t"))  # type: ignore[arg-type]
    source = src.PostgresSource(cfg, ctx)
    durations = iter([0.001, 0.05, 1.0])

    async def commit() -> float:
        took = next(durations)
        source._dirty.set()  # more acks came meanwhile
        return took

    source._commit = commit  # type: ignore[method-assign]
    source._to_advance = SlotPosition(1)
    source._dirty.set()
    loop = asyncio.create_task(source._checkpoint_loop())
    try:
        async with asyncio.timeout(5):
            while len(slept) < 3:
                await asyncio.sleep(0)
    finally:
        loop.cancel()
    assert slept[:3] == [
        src.CHECKPOINT_INTERVAL_S,  # a quick advance: the shortest interval
        pytest.approx(0.5),  # ten times 50 ms
        src.MAX_CHECKPOINT_INTERVAL_S,  # ten times 1 s, capped
    ]


async def test_an_unchanged_relation_of_a_default_identity_table_is_not_looked_up_again() -> None:
    import contextlib
    import logging
    from collections.abc import AsyncIterator

    from triggerd_postgres.catalog import Catalog

    lookups: list[int] = []

    class Conn:
        async def fetch(self, sql: str, relid: int) -> list[dict[str, str]]:
            lookups.append(relid)
            return [{"attname": "id"}]

    @contextlib.asynccontextmanager
    async def query() -> AsyncIterator[Any]:
        yield Conn()

    catalog = Catalog(
        query=query,
        region="us-east-1",
        account_id="123456789012",
        database="db",
        slot="slot",
        needs_old_image=False,
        view_type="NEW_IMAGE",
        log=logging.getLogger("t"),
        trigger="t",
    )
    columns = (Column(True, "id", 23, -1), Column(False, "v", 25, -1))
    default = Relation(16385, "public", "orders", "d", columns)
    first = await catalog.table(default)
    # the next peek's Relation message, the same: the same Table, no query
    assert await catalog.table(Relation(16385, "public", "orders", "d", columns)) is first
    assert lookups == [16385]
    # a column added: looked up again
    wider = Relation(16385, "public", "orders", "d", (*columns, Column(False, "w", 25, -1)))
    assert (await catalog.table(wider)).names == ("id", "v", "w")
    assert lookups == [16385, 16385]
    # REPLICA IDENTITY FULL flags every column: the primary key is looked up each time
    full = Relation(
        16386, "public", "items", "f", tuple(Column(True, c.name, 23, -1) for c in columns)
    )
    await catalog.table(full)
    await catalog.table(full)
    assert lookups == [16385, 16385, 16386, 16386]


def _json_reader() -> tuple[Any, Any]:
    import logging

    from triggerd.delivery.streams import ShardLog
    from triggerd.types import SystemClock
    from triggerd_postgres.changes import ChangeReader

    async def no_catalog(rel: Relation) -> Table:
        raise AssertionError("no Relation message in this page")

    columns = (Column(True, "id", 23, -1), Column(False, "doc", 3802, -1))
    rel = Relation(1, "public", "docs", "d", columns)
    arn = "arn:aws:dynamodb:us-east-1:123456789012:table/db.public.docs/stream/slot"
    shard = ShardLog(SystemClock(), max_entries=10_000)
    reader = ChangeReader(
        shard=shard,
        shaper=shaper("NEW_IMAGE"),
        table=no_catalog,
        on_marker=lambda: None,
        page_rows=500,
        truncate="deliver",
        log=logging.getLogger("t"),
        trigger="t",
    )
    reader.tables[1] = Table(rel, (PgType(Kind.INTEGER), PgType(Kind.JSON)), (0,), arn)
    return reader, shard


class _StepClock:
    """A clock that moves only when told to (or by the time slept)."""

    now = 0.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def _bare_source(clock: Any = None) -> Any:
    """A postgres source (no connection made) of a trigger on `orders`."""
    import logging

    from triggerd.types import SourceContext, SystemClock
    from triggerd_postgres import source as src

    cfg = PostgresSourceConfig(type="postgres", tables=["orders"])
    log = logging.getLogger("t")
    ctx = SourceContext(trigger="t", state=None, clock=clock or SystemClock(), log=log)  # type: ignore[arg-type]
    return src.PostgresSource(cfg, ctx)


def _refusing_json(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    """The json mapping made to raise `error` for the document `"refused"`."""
    from triggerd_postgres import pgtypes

    mapped = pgtypes._json_value

    def refusing(value: Any, depth: int = 1) -> Any:
        if value == "refused":
            raise error
        return mapped(value, depth)

    monkeypatch.setattr(pgtypes, "_json_value", refusing)


def _json_page(
    tag: str, docs: tuple[str, ...] = ("{}", "[1]", '"refused"', "{}")
) -> list[dict[str, bytes]]:
    """One transaction (commit LSN 5000, end 5048) of a change of `docs` per document, by
    default four, the third with the document `"refused"`."""

    def change(i: int, doc: str) -> bytes:
        body = b"N" + tup(str(i), doc)
        return tag.encode() + struct.pack("!I", 1) + body

    begin = b"B" + struct.pack("!QqI", 5000, 0, 7)
    commit = b"C" + struct.pack("!bQQq", 0, 5000, 5048, 0)
    page = [begin, *(change(i, doc) for i, doc in enumerate(docs)), commit]
    return [{"data": data} for data in page]


@pytest.mark.parametrize("tag", ["I", "U"])
async def test_a_change_that_cannot_be_shaped_is_handed_on_in_its_place_with_its_error(
    tag: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A row whose record cannot be built (here a json value the mapping is made to refuse)
    # no longer fails reading (which read it again at every peek, for good): its record,
    # without values, carries the error for the pipeline to give up, in its place between
    # its neighbours, and the transaction's end marker follows, so the slot can move past it.
    from triggerd_postgres.changes import Session, SlotPosition

    _refusing_json(monkeypatch, TypeError("Recursion limit reached (made to fail)"))
    reader, shard = _json_reader()
    await reader.process(Session(), _json_page(tag))
    taken = shard.take(10)
    assert [r.payload["dynamodb"]["Keys"]["id"]["N"] for r in taken] == ["0", "1", "2", "3"]
    assert [r.build_error is None for r in taken] == [True, True, False, True]
    error, unbuilt = taken[2].build_error, taken[2].payload
    assert error is not None and reader.unbuilt == 1
    assert error.error_type == "TypeError"
    assert error.message == "Recursion limit reached (made to fail)"
    assert error.subject == "postgres table public.docs"
    assert unbuilt["eventName"] == ("INSERT" if tag == "I" else "MODIFY")
    assert "NewImage" not in unbuilt["dynamodb"], "no values"
    assert taken[2].item_id == unbuilt["dynamodb"]["SequenceNumber"] == sequence_number(5000, 2)
    assert unbuilt["dynamodb"]["ApproximateCreationDateTime"] == PG_EPOCH
    assert taken[2].created_at == PG_EPOCH
    assert unbuilt["eventSourceARN"].endswith("table/db.public.docs/stream/slot")
    shard.settle(taken)
    assert shard.checkpoint() == SlotPosition(5048), "the slot may move past the transaction"


def test_a_change_whose_key_cannot_be_converted_is_handed_on_without_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The Keys are built on their own when they can be; when the key column is the one that
    # fails, the record has none, and its ordering key is the table's.
    from triggerd.types import BuildError

    _refusing_json(monkeypatch, TypeError("refused"))
    columns = (Column(False, "n", 23, -1), Column(True, "doc", 3802, -1))
    rel = Relation(1, "public", "docs", "d", columns)
    arn = "arn:aws:dynamodb:us-east-1:123456789012:table/db.public.docs/stream/slot"
    keyed = Table(rel, (PgType(Kind.INTEGER), PgType(Kind.JSON)), (1,), arn)
    error = BuildError("TypeError", "refused", "postgres table public.docs")
    rec = shaper(pf=4).unbuilt("REMOVE", keyed, ("1", '"refused"'), None, 9, 0, 0.0, 5, error)
    assert "Keys" not in rec.payload["dynamodb"] and rec.key == "public.docs"
    assert rec.build_error is error and rec.item_id == sequence_number(9, 0)


#: A `json` value as PostgreSQL sends it (it keeps json as written) with an escaped lone
#: surrogate: it parses to a string no JSON writer can write.
UNWRITABLE_JSON = '{"note": "\\ud800"}'


@pytest.mark.parametrize("tag", ["I", "U"])
async def test_a_change_whose_key_converts_but_cannot_be_written_is_handed_on_without_keys(
    tag: str,
) -> None:
    # A key column whose value converts and cannot be written (a json column in the Keys: a
    # table with REPLICA IDENTITY FULL and no primary key has every column in its Keys): the
    # record is handed on without Keys (it could not be written with them), ordered by
    # the table, never raising out of the reader (which would read it again for good).
    from triggerd_postgres.changes import Session, SlotPosition

    reader, shard = _json_reader()
    reader.shaper = shaper("NEW_IMAGE", pf=4)
    plain = reader.tables[1]
    reader.tables[1] = Table(plain.relation, plain.types, (0, 1), plain.arn)
    await reader.process(Session(), _json_page(tag, ("{}", UNWRITABLE_JSON)))
    taken = shard.take(10)
    assert [r.build_error is None for r in taken] == [True, False]
    unbuilt = taken[1]
    assert unbuilt.build_error is not None and unbuilt.build_error.error_type == "TypeError"
    assert "Keys" not in unbuilt.payload["dynamodb"] and unbuilt.key == "public.docs"
    assert taken[0].payload["dynamodb"]["Keys"] == {"id": {"N": "0"}, "doc": {"M": {}}}
    shard.settle(taken)
    assert shard.checkpoint() == SlotPosition(5048)


@pytest.mark.parametrize("tag", ["I", "U"])
async def test_an_unbuilt_change_keeps_its_rows_lane_with_parallelization(tag: str) -> None:
    # With parallelization_factor > 1 the record of a change that cannot be built has the
    # ordering key of every other change of its row (its Keys' lane), as DynamoDB orders per
    # item: its row's changes before and after it stay in one lane.
    import orjson

    from triggerd.delivery.streams import lane_key
    from triggerd_postgres.changes import Session

    reader, shard = _json_reader()
    reader.shaper = shaper("NEW_IMAGE", pf=4)
    docs = tuple("{}" if i % 4 else UNWRITABLE_JSON for i in range(8))
    await reader.process(Session(), _json_page(tag, docs))
    taken = shard.take(10)
    assert [r.build_error is None for r in taken] == [bool(i % 4) for i in range(8)]
    for rec in taken:
        ident = rec.payload["dynamodb"]["Keys"]["id"]["N"]
        item = orjson.dumps({"id": {"N": ident}}, option=orjson.OPT_SORT_KEYS)
        assert rec.key == lane_key("public.docs", item, 4)


@pytest.mark.parametrize("tag", ["I", "U"])
async def test_a_streamed_change_that_cannot_be_shaped_is_handed_on_in_its_place(
    tag: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Protocol v2: a streamed transaction's changes are kept until its Stream Commit and read
    # back from the spill; the one whose record cannot be built is handed on in its place
    # there too, and the transaction's end marker follows it.
    from triggerd_postgres.changes import Session, SlotPosition

    _refusing_json(monkeypatch, TypeError("refused"))
    reader, shard = _json_reader()
    docs = ["{}", "[1]", '"refused"', "{}"]
    changes = [
        tag.encode() + struct.pack("!II", 9, 1) + b"N" + tup(str(i), doc)
        for i, doc in enumerate(docs)
    ]
    page = [
        b"S" + struct.pack("!Ib", 9, 1),
        *changes,
        b"E",
        b"c" + struct.pack("!IbQQq", 9, 0, 5000, 5048, 0),
    ]
    session = Session()
    assert await reader.process(session, [{"data": data} for data in page]) == 0
    assert session.replay is not None
    assert reader.replay_some(session, session.replay) == 4
    taken = shard.take(10)
    assert [r.payload["dynamodb"]["Keys"]["id"]["N"] for r in taken] == ["0", "1", "2", "3"]
    assert [r.build_error is None for r in taken] == [True, True, False, True]
    assert taken[2].item_id == sequence_number(5000, 2)
    shard.settle(taken)
    assert shard.checkpoint() == SlotPosition(5048)


async def test_failing_rows_of_a_long_insert_run_are_handed_on_in_place_the_rest_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A run of Inserts is shaped in one pass, and one at a time when a row of it fails: over
    # runs cut by the event loop's turns (every YIELD_EVERY rows), failing rows first, last
    # and on both sides of a cut are each handed on in their place, no row dropped, doubled
    # or moved.
    from triggerd_postgres.changes import YIELD_EVERY, Session, SlotPosition

    _refusing_json(monkeypatch, TypeError("refused"))
    count = 2 * YIELD_EVERY + 20
    bad = {0, YIELD_EVERY - 2, YIELD_EVERY - 1, YIELD_EVERY, count - 1}
    reader, shard = _json_reader()
    docs = tuple('"refused"' if i in bad else f"[{i}]" for i in range(count))
    await reader.process(Session(), _json_page("I", docs))
    taken = shard.take(count + 1)
    assert [r.item_id for r in taken] == [sequence_number(5000, i) for i in range(count)]
    assert {i for i, r in enumerate(taken) if r.build_error is not None} == bad
    good = [r for r in taken if r.build_error is None]
    assert [r.payload["dynamodb"]["NewImage"]["doc"] for r in good] == [
        {"L": [{"N": str(i)}]} for i in range(count) if i not in bad
    ]
    shard.settle(taken)
    assert shard.checkpoint() == SlotPosition(5048)


async def test_a_change_whose_shaping_ran_out_of_memory_is_read_again_never_skipped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Running out of memory is not an error of the row: reading fails as before, the next
    # peek reads the same changes, the rows before it are in the log once, and the row is
    # read again, never skipped (no marker after it lets the slot advance past it).
    from triggerd_postgres.changes import Session

    _refusing_json(monkeypatch, MemoryError())
    reader, shard = _json_reader()
    for _ in range(2):  # the failing peek, then the next one
        with pytest.raises(MemoryError):
            await reader.process(Session(), _json_page("I"))
    taken = shard.take(10)
    assert [r.payload["dynamodb"]["Keys"]["id"]["N"] for r in taken] == ["0", "1"]
    shard.settle(taken)
    assert shard.checkpoint() is taken[-1], "no marker after the row that failed"
    assert reader.unbuilt == 0


#: A value of a row, which the error of its shaping quotes (as a mapping's error may).
ROW_SECRET = "hunter2-card-4111"


@pytest.mark.parametrize(
    ("tag", "oom"),
    [("I", "next row"), ("I", "placeholder"), ("U", "placeholder")],
)
async def test_an_error_after_a_rows_build_error_does_not_carry_its_message_to_the_logs(
    tag: str, oom: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The row's error (its message may quote the row's values) goes to the destination only.
    # A read that fails after it (here running out of memory on the next row, or while
    # building the row's placeholder) is logged with its traceback (`source.receive_failed`):
    # that must not chain the row's error, "during handling of the above exception".
    import traceback

    from triggerd_postgres import pgtypes, shape
    from triggerd_postgres.changes import Session

    mapped = pgtypes._json_value

    def refusing(value: Any, depth: int = 1) -> Any:
        if value == "refused":
            raise TypeError(f"cannot write {ROW_SECRET!r}")
        if value == "oom":
            raise MemoryError
        return mapped(value, depth)

    monkeypatch.setattr(pgtypes, "_json_value", refusing)
    if oom == "placeholder":

        def no_memory(*args: Any) -> Any:
            raise MemoryError

        monkeypatch.setattr(shape.Shaper, "unbuilt", no_memory)
    docs = ("{}", "[1]", '"refused"', '"oom"' if oom == "next row" else "{}")
    page = _json_page(tag, docs)
    reader, _shard = _json_reader()
    with pytest.raises(MemoryError) as raised:
        await reader.process(Session(), page)
    logged = "".join(traceback.format_exception(raised.value))
    assert ROW_SECRET not in logged


async def test_a_failed_slot_advance_before_a_new_peek_does_not_stop_reading() -> None:
    # Before a new peek the slot is advanced over what is settled; if that fails (the state
    # store or the control connection down), the checkpoint loop keeps the points and tries
    # again later, as with any checkpoint: the peek still opens, the reader goes on.

    from triggerd_postgres import source as src
    from triggerd_postgres.changes import SlotPosition

    source = _bare_source()

    async def commit() -> float:
        raise ConnectionError("the state store is down")

    class Cursor:
        async def fetch(self, n: int) -> list[dict[str, bytes]]:
            return [{"data": b"B"}]

    async def open_peek() -> Any:
        return src._Peek(None, Cursor(), 100)  # type: ignore[arg-type]

    source._commit = commit  # type: ignore[method-assign]
    source._open_peek = open_peek  # type: ignore[method-assign]
    point = source._to_advance = SlotPosition(50)
    peek, rows = await source._fetch(None)
    assert rows == [{"data": b"B"}] and source._peek is peek
    assert source._to_advance is point and source._dirty.is_set(), "kept for the loop"


async def test_the_slot_advance_before_a_new_peek_waits_ten_times_the_last_ones_duration() -> None:
    # Each advance decodes the WAL from the slot's restart position: after one, the next
    # waits ten times as long as it took (at most MAX_CHECKPOINT_INTERVAL_S), so that the
    # slot spends at most a tenth of the time being advanced; the advance before a new peek
    # too (it advanced before every peek, however long each took).

    from triggerd_postgres.changes import SlotPosition

    clock = _StepClock()
    source = _bare_source(clock)
    advanced: list[tuple[float, int]] = []
    takes = iter([1.0, 1.0, 0.001, 0.001])  # seconds each advance takes

    class Conn:
        async def execute(self, sql: str, slot: str, lsn: int) -> None:
            advanced.append((clock.now, lsn))
            clock.now += next(takes)

    async def control() -> Any:
        return Conn()

    async def peek_at(now: float, lsn: int) -> None:
        clock.now = now
        source._to_advance = SlotPosition(lsn)
        await source._catch_up_slot()

    source._control_conn = control  # type: ignore[method-assign]
    await peek_at(0.0, 10)  # took 1 s: none before 3.0
    await peek_at(1.5, 20)
    assert advanced == [(0.0, 10)], "too soon: the checkpoint loop advances it later"
    assert source._to_advance == SlotPosition(20)
    await peek_at(3.1, 20)  # took 1 s: none before 6.1
    await peek_at(6.2, 30)  # took 1 ms: none before 6.211
    await peek_at(6.22, 40)
    assert advanced == [(0.0, 10), (3.1, 20), (6.2, 30), (6.22, 40)]


async def test_a_failed_slot_advance_before_a_peek_is_not_tried_again_before_every_peek() -> None:
    # The advance before a new peek failed (the control connection cannot be opened: "too
    # many clients"): the checkpoint loop tries again with its backoff; the peeks that follow
    # do not each try again at once (a connection attempt, up to connect_timeout_s, and a
    # warning before every peek under a backlog), only once per MAX_CHECKPOINT_INTERVAL_S.

    from triggerd_postgres.changes import SlotPosition

    clock = _StepClock()
    source = _bare_source(clock)
    tried: list[float] = []

    async def control() -> Any:
        tried.append(clock.now)
        raise ConnectionError("sorry, too many clients already")

    source._control_conn = control  # type: ignore[method-assign]
    for i in range(30):  # a peek every 0.1 s, each with more settled
        clock.now = i * 0.1
        source._to_advance = SlotPosition(10 + i)
        await source._catch_up_slot()
    assert tried == [0.0, pytest.approx(2.0)]
    assert source._dirty.is_set() and source._advanced_lsn == 0, "kept for the loop"


async def test_two_checkpoints_at_once_advance_the_slot_once_and_never_back() -> None:
    # The checkpoint loop and the advance before a new peek may both be under way: the one
    # that gets the slot second does not advance it again to where it is (each advance
    # decodes the WAL on the server), and the position known never goes back.
    import asyncio

    from triggerd_postgres.changes import SlotPosition

    source = _bare_source()
    advanced: list[int] = []

    class Conn:
        async def execute(self, sql: str, slot: str, lsn: int) -> None:
            advanced.append(lsn)
            await asyncio.sleep(0.01)

    async def control() -> Any:
        return Conn()

    source._control_conn = control  # type: ignore[method-assign]
    source._to_advance = SlotPosition(20)
    first = asyncio.create_task(source._commit())
    await asyncio.sleep(0)  # under way with 20
    second = asyncio.create_task(source._commit())  # the same point, not written yet
    await asyncio.gather(first, second)
    assert advanced == [20]
    source._to_advance = SlotPosition(30)
    newer = asyncio.create_task(source._commit())
    await asyncio.sleep(0)
    source._to_advance = SlotPosition(25)  # an older point, from a checkpoint taken before
    await asyncio.gather(newer, source._commit())
    assert advanced == [20, 30] and source._advanced_lsn == 30


def test_a_json_document_deeper_than_dynamodb_nests_is_its_text_and_its_record_is_built() -> None:
    # 200 levels of arrays: as nested L values, orjson refused to write the record (its
    # recursion limit), so the change could never be delivered and stopped the slot.
    import orjson

    deep = "[" * 200 + "1" + "]" * 200
    assert to_attribute(deep, PgType(Kind.JSON)) == {"S": deep}
    assert orjson.dumps({"NewImage": {"doc": to_attribute(deep, PgType(Kind.JSON))}})
    very_deep = '{"a":' * 5000 + "1" + "}" * 5000  # beyond json.loads' own recursion
    assert to_attribute(very_deep, PgType(Kind.JSON)) == {"S": very_deep}


def test_a_json_document_32_levels_deep_is_still_a_map_of_lists() -> None:
    from triggerd_postgres.pgtypes import MAX_JSON_DEPTH

    doc = '{"a":' + "[" * (MAX_JSON_DEPTH - 1) + "true" + "]" * (MAX_JSON_DEPTH - 1) + "}"
    value = to_attribute(doc, PgType(Kind.JSON))
    inner = value["M"]["a"]
    for _ in range(MAX_JSON_DEPTH - 2):
        inner = inner["L"][0]
    assert inner == {"L": [{"BOOL": True}]}
    one_more = "[" + doc + "]"
    assert to_attribute(one_more, PgType(Kind.JSON)) == {"S": one_more}
