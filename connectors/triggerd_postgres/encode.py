"""Each row change's record JSON built as bytes, by an encoder made once per Relation message.

The record's JSON is what the batch's event joins (`EncodesEvents`), and, for most records,
all that is ever needed of it: the dict form (`Record.payload`) is parsed from the JSON on
first use (a filter, an on-failure payload, a test). So the common row (no unchanged TOASTed
value) is written straight to bytes, with as little Python per value as possible: the fixed
parts (field names, the event source, the region, the table's ARN, the column names) are
`%`-templates made once per table and event kind; text, integer and timestamp values sit in
wrappers fixed in the templates (`{"S":"%s"}`), all of a row's strings escaped by one
`orjson.dumps`; the other types (numbers, booleans, JSON, bytea, arrays) and NULLs get the
whole AttributeValue from a writer chosen once per column.

The bytes are those of `orjson.dumps` of the dict the long way builds (`Shaper.built_row`),
which a property test checks for every mapped type, NULLs, each event and stream view type.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import orjson

from triggerd.types import JSONDict, Record

from .pgtypes import (
    Kind,
    PgType,
    converter,
    number,
    plain_number,
)

__all__ = ["ChangeRecord", "RowEncoder", "writer"]

#: A column's text value (not NULL) -> its AttributeValue's JSON.
Writer = Callable[[str], bytes]

NULL = b'{"NULL":true}'
_TRUE = b'{"BOOL":true}'
_FALSE = b'{"BOOL":false}'


def _number(text: str) -> bytes:
    if plain_number(text):  # digits, a sign, a point: nothing to escape
        return b'{"N":"' + text.encode() + b'"}'
    return orjson.dumps(number(text))


def _bool(text: str) -> bytes:
    return _TRUE if text == "t" else _FALSE


def _timestamp(escaped: bytes) -> bytes:
    """`pgtypes._timestamp` of a timestamp's escaped text (the same: escaping changes
    neither a leading digit, a space, nor a ` BC` or `+00` end)."""
    if escaped[:1].isdigit() and not escaped.endswith(b" BC"):
        escaped = escaped.replace(b" ", b"T", 1)
    return escaped


def _timestamptz(escaped: bytes) -> bytes:
    """`pgtypes._timestamptz` of a timestamptz's escaped text."""
    if escaped[:1].isdigit() and not escaped.endswith(b" BC"):
        escaped = escaped.replace(b" ", b"T", 1)
        if escaped.endswith(b"+00"):
            escaped = escaped[:-3] + b"Z"
    return escaped


_WRITERS: dict[Kind, Writer] = {
    Kind.NUMBER: _number,
    Kind.BOOL: _bool,
}


def writer(t: PgType) -> Writer:
    """The writer of a column of type `t` (not text, integer or a timestamp: those are
    wrapped in the templates): numbers and booleans written directly; JSON, bytea and arrays
    (nested values) serialise the converter's AttributeValue."""
    direct = _WRITERS.get(t.kind)
    if direct is not None:
        return direct
    convert = converter(t)
    return lambda text: orjson.dumps(convert(text))


#: Kinds whose AttributeValue is a fixed wrapper around the value's JSON-escaped text.
_WRAPPED: dict[Kind, bytes] = {
    Kind.TEXT: b'{"S":"%s"}',
    Kind.INTEGER: b'{"N":"%s"}',
    Kind.TIMESTAMP: b'{"S":"%s"}',
    Kind.TIMESTAMPTZ: b'{"S":"%s"}',
}
#: Wrapped kinds whose escaped text is rewritten first.
_REWRITES: dict[Kind, Callable[[bytes], bytes]] = {
    Kind.TIMESTAMP: _timestamp,
    Kind.TIMESTAMPTZ: _timestamptz,
}
#: The separator of two strings in `orjson.dumps` of a list of strings. Inside a string every
#: `"` is escaped (`\"`), so `","` is a separator unless its first `"` is an escaped one: a
#: string ending in `",` (escaped `\",`) followed by the separator reads `\",","`, where the
#: leftmost match is the wrong one. That needs `\","` in the output (so does a string ending
#: in a backslash, escaped `\\`, before a separator): when it is there, split per string.
_BETWEEN = b'","'
_AMBIGUOUS = b'\\","'


def _template_part(value: bytes) -> bytes:
    """Fixed bytes inside a `%`-template."""
    return value.replace(b"%", b"%%")


def _escaped(strings: Sequence[str]) -> list[bytes]:
    """Each string JSON-escaped (without its quotes), all in one `orjson.dumps` unless a
    separator could be misread (`_AMBIGUOUS`: rare, then one call per string)."""
    if not strings:
        return []
    joined = orjson.dumps(strings)
    if _AMBIGUOUS in joined:
        return [orjson.dumps(s)[1:-1] for s in strings]
    return joined[2:-2].split(_BETWEEN)


@dataclass(eq=False, slots=True)
class _Templates:
    """A row's image and its Keys as `%`-templates, for one pattern of NULL columns."""

    image: bytes
    keys: bytes


@dataclass(eq=False, slots=True)
class RowEncoder:
    """A table's row records as JSON bytes (one per Relation message and Shaper).

    A row's values go into `%`-templates of the image and of the Keys: text and integer
    columns as their JSON-escaped text inside a wrapper fixed in the template (all of a row's
    strings escaped by one `orjson.dumps`), the other columns (and NULLs) as the whole
    AttributeValue their writer makes."""

    names: tuple[bytes, ...]
    wrappers: tuple[bytes | None, ...]
    #: Per column whose AttributeValue is written per value: its index and writer.
    computed: tuple[tuple[int, Writer], ...]
    #: Per wrapped column whose escaped text is rewritten: its index and rewrite.
    rewritten: tuple[tuple[int, Callable[[bytes], bytes]], ...]
    key_indexes: tuple[int, ...]
    keys_of: Callable[[list[bytes]], bytes | tuple[bytes, ...]]
    region: bytes
    view_type: bytes
    arn: bytes
    templates: _Templates = field(init=False)
    _with_nulls: dict[tuple[bool, ...], _Templates] = field(default_factory=dict)
    _records: dict[tuple[str, bool, bool], bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.templates = self._templates((False,) * len(self.names))

    @classmethod
    def of(
        cls,
        *,
        types: Sequence[PgType],
        names: Sequence[str],
        key_indexes: Sequence[int],
        region: str,
        view_type: str,
        arn: str,
    ) -> RowEncoder:
        wrappers = tuple(_WRAPPED.get(t.kind) for t in types)
        return cls(
            names=tuple(_template_part(orjson.dumps(n)) for n in names),
            wrappers=wrappers,
            computed=tuple((i, writer(t)) for i, t in enumerate(types) if wrappers[i] is None),
            rewritten=tuple(
                (i, _REWRITES[t.kind]) for i, t in enumerate(types) if t.kind in _REWRITES
            ),
            key_indexes=tuple(key_indexes),
            keys_of=_picker(key_indexes),
            region=_template_part(orjson.dumps(region)),
            view_type=_template_part(orjson.dumps(view_type)),
            arn=_template_part(orjson.dumps(arn)),
        )

    def _templates(self, nulls: tuple[bool, ...]) -> _Templates:
        slots = [
            b"%s" if wrapper is None or null else wrapper
            for wrapper, null in zip(self.wrappers, nulls, strict=True)
        ]
        columns = [name + b":" + slot for name, slot in zip(self.names, slots, strict=True)]
        return _Templates(
            image=b"{" + b",".join(columns) + b"}",
            keys=b"{" + b",".join(columns[i] for i in self.key_indexes) + b"}",
        )

    def fill(self, row: Sequence[str | None]) -> tuple[list[bytes], _Templates]:
        """What the templates take from a row without unchanged TOASTed values (of the
        table's width), and the templates for its NULLs."""
        if None in row:
            return self._fill_with_nulls(row)
        values = _escaped(row)  # type: ignore[arg-type]
        for i, rewrite in self.rewritten:
            values[i] = rewrite(values[i])
        for i, write in self.computed:
            values[i] = write(row[i])  # type: ignore[arg-type]
        return values, self.templates

    def fill_rows(
        self, rows: Sequence[Sequence[str | None]]
    ) -> list[tuple[list[bytes], _Templates]]:
        """`fill` of each row (all without unchanged TOASTed values, of the table's width),
        with the strings of all of them escaped in one `orjson.dumps`."""
        width = len(self.names)
        strings = list(itertools.chain.from_iterable(rows))
        nulls = None in strings
        if nulls:
            strings = [value for value in strings if value is not None]
        escaped = _escaped(strings)  # type: ignore[arg-type]
        out: list[tuple[list[bytes], _Templates]] = []
        rewritten, computed, templates = self.rewritten, self.computed, self.templates
        start = 0
        for row in rows:
            if nulls and None in row:
                end = start + width - row.count(None)
                out.append(self._nulls_filled(row, escaped[start:end]))
                start = end
                continue
            values = escaped[start : start + width]
            start += width
            for i, rewrite in rewritten:
                values[i] = rewrite(values[i])
            for i, write in computed:
                values[i] = write(row[i])  # type: ignore[arg-type]
            out.append((values, templates))
        return out

    def _fill_with_nulls(self, row: Sequence[str | None]) -> tuple[list[bytes], _Templates]:
        return self._nulls_filled(row, _escaped([value for value in row if value is not None]))

    def _nulls_filled(
        self, row: Sequence[str | None], escaped: list[bytes]
    ) -> tuple[list[bytes], _Templates]:
        """`_fill_with_nulls`, with the row's strings (not NULL) escaped already."""
        nulls = tuple(value is None for value in row)
        templates = self._with_nulls.get(nulls)
        if templates is None:
            templates = self._with_nulls[nulls] = self._templates(nulls)
        strings = iter(escaped)
        values = [NULL if value is None else next(strings) for value in row]
        for i, rewrite in self.rewritten:
            if row[i] is not None:
                values[i] = rewrite(values[i])
        for i, write in self.computed:
            value = row[i]
            if value is not None:
                values[i] = write(value)
        return values, templates

    def keys(self, values: list[bytes], templates: _Templates) -> bytes:
        return templates.keys % self.keys_of(values)

    def image(self, values: list[bytes], templates: _Templates) -> bytes:
        return templates.image % tuple(values)

    def record_template(self, event_name: str, new: bool, old: bool) -> bytes:
        """The record with `%` fields, in order: eventID, ApproximateCreationDateTime, Keys,
        NewImage (when `new`), OldImage (when `old`), SequenceNumber, SizeBytes. The order of
        the fields is the long way's (`Shaper._record`)."""
        kind = (event_name, new, old)
        template = self._records.get(kind)
        if template is None:
            template = (
                b'{"eventID":"%s","eventName":'
                + _template_part(orjson.dumps(event_name))
                + b',"eventVersion":"1.1","eventSource":"aws:dynamodb","awsRegion":'
                + self.region
                + b',"dynamodb":{"ApproximateCreationDateTime":%d,"Keys":%s'
                + (b',"NewImage":%s' if new else b"")
                + (b',"OldImage":%s' if old else b"")
                + b',"SequenceNumber":"%s","SizeBytes":%d,"StreamViewType":'
                + self.view_type
                + b'},"eventSourceARN":'
                + self.arn
                + b"}"
            )
            self._records[kind] = template
        return template


def _picker(indexes: Sequence[int]) -> Callable[[list[bytes]], bytes | tuple[bytes, ...]]:
    """What `%` of a template over the columns `indexes` takes from a row's values."""
    if not indexes:
        return lambda _values: ()
    return operator.itemgetter(*indexes)


class ChangeRecord(Record):
    """A row change's record: its handle is the record's JSON, and its payload the dict
    parsed from that JSON on first use (set at once when built the long way)."""

    __slots__ = ()

    @property
    def payload(self) -> JSONDict:
        payload: JSONDict | None = _PAYLOAD.__get__(self, Record)
        if payload is None:
            payload = orjson.loads(self.handle)
            _PAYLOAD.__set__(self, payload)
        return payload

    @payload.setter
    def payload(self, value: JSONDict | None) -> None:
        _PAYLOAD.__set__(self, value)


#: Record's own storage of `payload` (a slot), under ChangeRecord's property.
_PAYLOAD = Record.__dict__["payload"]
