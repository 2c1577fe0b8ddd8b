"""The row encoder (connectors/triggerd_postgres/encode.py) writes each record's JSON straight
to bytes; the long way (`Shaper.built_row`) builds the record as a dict and serialises it.
For every mapped type, NULLs, unchanged TOASTed columns, each event and each stream view type,
both must give the same record: the same bytes, hence the same parsed record, size and id."""

from __future__ import annotations

import hashlib
import json
from typing import Any
from unittest import mock

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from triggerd.types import Record
from triggerd_postgres.pgoutput import UNCHANGED, Column, Relation, Value
from triggerd_postgres.pgtypes import Kind, PgType, builtin_type
from triggerd_postgres.shape import Shaper, Table, stream_arn

VIEWS = ("KEYS_ONLY", "NEW_IMAGE", "OLD_IMAGE", "NEW_AND_OLD_IMAGES")

# Text as pgoutput may carry it: any Unicode but surrogates (quotes, backslashes, control
# characters, `%` and non-ASCII included: the encoder escapes what orjson escapes).
# Some end in `",`, escaped `\",`: before the next value's separator it reads `\",","`.
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12).flatmap(
    lambda text: st.sampled_from([text, text + '",'])
)
NUMBERS = st.one_of(
    st.integers().map(str),
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e+200", "1e-200", "0.000", "-0"]),
    st.from_regex(r"-?[0-9]{30,45}(\.[0-9]{1,20})?", fullmatch=True),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(TEXT, children, max_size=3),
    max_leaves=6,
)
TIMESTAMPS = st.one_of(
    st.datetimes().map(lambda d: d.isoformat(" ")),
    st.datetimes().map(lambda d: d.isoformat(" ") + "+00"),
    st.datetimes().map(lambda d: d.isoformat(" ") + "+05:30"),
    st.sampled_from(
        ["infinity", "-infinity", "0044-03-15 12:00:00 BC", "0044-03-15 12:00:00+00 BC"]
    ),
)


def _quoted(element: str) -> str:
    return '"' + element.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _array(elements: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """An array literal (one or two dimensions) of quoted elements and NULLs."""
    item = st.one_of(elements.map(_quoted), st.just("NULL"))
    flat = st.lists(item, max_size=4).map(lambda xs: "{" + ",".join(xs) + "}")
    nested = st.lists(flat, min_size=1, max_size=2).map(lambda xs: "{" + ",".join(xs) + "}")
    return flat | nested


#: Per type OID (each kind of the mapping, and arrays of some): text values of that type.
VALUES: dict[int, st.SearchStrategy[str]] = {
    16: st.sampled_from(["t", "f"]),  # bool
    17: st.binary(max_size=8).map(lambda b: "\\x" + b.hex()),  # bytea
    20: st.integers(-(2**63), 2**63 - 1).map(str),  # bigint
    21: st.integers(-(2**15), 2**15 - 1).map(str),  # smallint
    23: st.integers(-(2**31), 2**31 - 1).map(str),  # integer
    26: st.integers(0, 2**32 - 1).map(str),  # oid
    114: st.one_of(JSON_VALUES.map(json.dumps), TEXT),  # json (and text that is not JSON)
    3802: JSON_VALUES.map(lambda v: json.dumps(v, separators=(", ", ": "))),  # jsonb
    700: NUMBERS,  # real
    701: NUMBERS,  # double precision
    1700: NUMBERS,  # numeric
    1114: TIMESTAMPS,  # timestamp
    1184: TIMESTAMPS,  # timestamptz
    25: TEXT,  # text
    1043: TEXT,  # varchar
    1042: TEXT,  # char (padding kept)
    2950: st.uuids().map(str),  # uuid
    1082: st.dates().map(str),  # date
    1186: st.sampled_from(["P1DT2H", "PT0S", "P-1Y"]),  # interval
    1000: _array(st.sampled_from(["t", "f"])),  # bool[]
    1007: _array(st.integers(-(2**31), 2**31 - 1).map(str)),  # integer[]
    1009: _array(TEXT),  # text[]
    1231: _array(NUMBERS),  # numeric[]
    1185: _array(TIMESTAMPS),  # timestamptz[]
    3807: _array(JSON_VALUES.map(json.dumps)),  # jsonb[]
}
#: A user type (an enum) maps as text; a domain as its base type.
ENUM = PgType(Kind.TEXT)


@st.composite
def tables(draw: st.DrawFn) -> tuple[Table, list[st.SearchStrategy[str]]]:
    oids = draw(st.lists(st.sampled_from(sorted(VALUES) + [16500]), min_size=0, max_size=6))
    names = draw(st.lists(TEXT, min_size=len(oids), max_size=len(oids), unique=True))
    keys = draw(st.sets(st.integers(0, max(len(oids) - 1, 0)), max_size=min(len(oids), 2)))
    types = [builtin_type(oid) or ENUM for oid in oids]
    relation = Relation(
        16385,
        "public",
        draw(TEXT),
        "f",
        tuple(
            Column(i in keys, n, oid, -1)
            for i, (n, oid) in enumerate(zip(names, oids, strict=True))
        ),
    )
    arn = stream_arn("us-east-1", "123456789012", "db%s", "public", relation.name, "slot")
    table = Table(relation, tuple(types), tuple(sorted(keys)), arn)
    return table, [VALUES.get(oid, TEXT) for oid in oids]


def rows(
    strategies: list[st.SearchStrategy[str]], *, toast: bool
) -> st.SearchStrategy[tuple[Value, ...]]:
    """Rows of the table's width: values, NULLs, and (with `toast`) unchanged values."""
    extra: list[st.SearchStrategy[Value]] = [st.none()]
    if toast:
        extra.append(st.just(UNCHANGED))
    return st.tuples(*(st.one_of(s, *extra) for s in strategies))


def _stored_payload(record: Record) -> Any:
    """The payload as the record holds it (None until parsed from its JSON)."""
    return Record.__dict__["payload"].__get__(record, Record)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_encoded_records_are_the_records_the_long_way_builds(data: st.DataObject) -> None:
    table, strategies = data.draw(tables())
    view = data.draw(st.sampled_from(VIEWS))
    event = data.draw(st.sampled_from(["INSERT", "MODIFY", "REMOVE"]))
    toast = data.draw(st.booleans())
    new = data.draw(rows(strategies, toast=toast)) if event != "REMOVE" else None
    old = data.draw(st.none() | rows(strategies, toast=toast)) if event == "MODIFY" else None
    if event == "REMOVE":
        old = data.draw(rows(strategies, toast=False))
    old_full = data.draw(st.booleans())
    factor = data.draw(st.sampled_from([1, 4]))
    ordinal = data.draw(st.integers(0, 10**6))
    commit_time = data.draw(st.floats(0, 4e9))
    shaper = Shaper(
        "us-east-1",
        "123456789012",
        "db",
        "slot",
        view,
        "<toast>",
        factor,  # type: ignore[arg-type]
    )
    args = (event, table, new, old, old_full, 123_456_789, ordinal, commit_time, 77)
    long_way = Shaper.built_row
    calls: list[bool] = []

    def counted(self: Shaper, *args: Any) -> Record:
        calls.append(True)
        return long_way(self, *args)

    with mock.patch.object(Shaper, "built_row", counted):
        record = shaper.row(*args)
    expected = long_way(shaper, *args)

    unchanged = any(v is UNCHANGED for row in (new, old) if row is not None for v in row)
    # rows without unchanged TOASTed values are encoded, the others built the long way
    assert len(calls) == (1 if unchanged else 0)
    if not unchanged:
        assert _stored_payload(record) is None  # parsed from the bytes below, on first use
    assert record.handle == expected.handle
    assert orjson.loads(record.handle) == expected.payload
    assert record.payload == expected.payload
    assert (record.item_id, record.size, record.created_at, record.key) == (
        expected.item_id,
        expected.size,
        expected.created_at,
        expected.key,
    )
    assert record.size == len(record.handle)
    # the eventID is the documented digest of the database, slot and sequence number
    event_id = hashlib.md5(f"db/slot/{record.item_id}".encode(), usedforsecurity=False)
    assert record.payload["eventID"] == event_id.hexdigest()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_run_of_inserts_shaped_at_once_gives_the_records_the_long_way_builds(
    data: st.DataObject,
) -> None:
    # `Shaper.inserts` escapes the strings of every row of a run in one pass: each row must
    # still get its own values, NULLs and separators included, in its own record
    table, strategies = data.draw(tables())
    view = data.draw(st.sampled_from(VIEWS))
    factor = data.draw(st.sampled_from([1, 4]))
    news = data.draw(st.lists(rows(strategies, toast=False), min_size=1, max_size=8))
    first = data.draw(st.integers(0, 10**6))
    commit_time = data.draw(st.floats(0, 4e9))
    shaper = Shaper(
        "us-east-1",
        "123456789012",
        "db",
        "slot",
        view,
        "<toast>",
        factor,  # type: ignore[arg-type]
    )
    run = [(new, first + 2 * i, 50 + i) for i, new in enumerate(news)]
    records = shaper.inserts(table, run, 123_456_789, commit_time)
    assert len(records) == len(run)
    for record, (new, ordinal, size) in zip(records, run, strict=True):
        expected = shaper.built_row(
            "INSERT", table, new, None, False, 123_456_789, ordinal, commit_time, size
        )
        assert _stored_payload(record) is None  # parsed from the bytes, on first use
        assert record.handle == expected.handle
        assert record.payload == expected.payload
        assert (record.item_id, record.size, record.created_at, record.key) == (
            expected.item_id,
            expected.size,
            expected.created_at,
            expected.key,
        )


@pytest.mark.parametrize("view", VIEWS)
def test_each_view_type_encodes_the_images_it_names(view: str) -> None:
    columns = (Column(True, "id", 23, -1), Column(False, "at", 1184, -1))
    table = Table(
        Relation(16385, "public", "orders", "f", columns),
        (PgType(Kind.INTEGER), PgType(Kind.TIMESTAMPTZ)),
        (0,),
        "arn",
    )
    shaper = Shaper("us-east-1", "123456789012", "db", "slot", view, "")  # type: ignore[arg-type]
    new, old = ("1", "2024-01-01 00:00:00+00"), ("1", None)
    record = shaper.row("MODIFY", table, new, old, True, 5, 0, 1.0, 9)
    ddb = orjson.loads(record.handle)["dynamodb"]
    images = {k: v for k, v in ddb.items() if k.endswith("Image")}
    expected = {
        "KEYS_ONLY": {},
        "NEW_IMAGE": {"NewImage": {"id": {"N": "1"}, "at": {"S": "2024-01-01T00:00:00Z"}}},
        "OLD_IMAGE": {"OldImage": {"id": {"N": "1"}, "at": {"NULL": True}}},
    }
    expected["NEW_AND_OLD_IMAGES"] = expected["NEW_IMAGE"] | expected["OLD_IMAGE"]
    assert images == expected[view]
    assert ddb["Keys"] == {"id": {"N": "1"}} and ddb["StreamViewType"] == view


@pytest.mark.parametrize(
    "text",
    ['a",', '",', 'say "hi",', "a\\", 'a\\",', '","', '\\"', 'x",",'],
)
@pytest.mark.parametrize("view", ["NEW_IMAGE", "KEYS_ONLY"])
def test_a_text_ending_in_a_quote_and_comma_keeps_every_column_its_own_value(
    text: str, view: str
) -> None:
    # `",` at the end of a value (JSON `\",`) before the next value's separator (`","`)
    # reads `\",","`, whose first `","` is not the separator: the row's strings must still
    # be split where the separators are (random short text rarely ends that way)
    columns = (Column(True, "note", 25, -1), Column(False, "n", 23, -1), Column(False, "m", 25, -1))
    table = Table(
        Relation(16385, "public", "t", "f", columns),
        (PgType(Kind.TEXT), PgType(Kind.INTEGER), PgType(Kind.TEXT)),
        (0,),
        "arn",
    )
    shaper = Shaper("us-east-1", "123456789012", "db", "slot", view, "")  # type: ignore[arg-type]
    for new in [(text, "7", text), (text, "7", None), (text, None, "z")]:
        args = ("INSERT", table, new, None, False, 5, 0, 1.0, 9)
        record = shaper.row(*args)
        assert record.handle == shaper.built_row(*args).handle
        ddb = orjson.loads(record.handle)["dynamodb"]
        assert ddb["Keys"] == {"note": {"S": text}}
        if view == "NEW_IMAGE":
            assert ddb["NewImage"]["note"] == {"S": text}
