"""PostgreSQL column values (pgoutput's text) as DynamoDB AttributeValues.

The mapping (docs/postgres.md has the table):

- smallint, integer, bigint, oid, numeric, real, double precision -> `N` (the exact text);
  NaN, ±Infinity and numbers DynamoDB cannot hold (more than 38 significant digits, or outside
  1E-130..9.99E+125) -> `S`, so that boto3's TypeDeserializer never raises on them;
- boolean -> `BOOL`; bytea -> `B` (base64); SQL NULL -> `{"NULL": true}`;
- json, jsonb -> `M` (objects), `L` (arrays), `S` / `N` / `BOOL` / `NULL` (scalars), numbers
  kept exactly as written; a document nested deeper than DynamoDB's 32 levels (which no
  DynamoDB stream can carry, and too deep for the record's JSON) -> `S` (its text);
- arrays (any dimension) -> `L` of the element type's values, NULL elements as `NULL`;
- timestamp -> `S` ISO-8601 (`2024-05-01T12:34:56.789`); timestamptz -> `S` ISO-8601 in UTC
  with `Z`; date, time, timetz -> `S` as PostgreSQL writes them in ISO style; interval -> `S`
  in ISO-8601 (`P1DT2H`);
- text, varchar, char (padding kept), uuid, enums, and every other type -> `S` (its text
  output); domains map as their base type.
"""

from __future__ import annotations

import base64
import decimal
import enum
import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from triggerd.types import JSONDict

__all__ = ["Converter", "Kind", "PgType", "builtin_type", "converter", "to_attribute"]

#: A column's text value -> its AttributeValue.
Converter = Callable[[str], JSONDict]


class Kind(enum.Enum):
    INTEGER = "integer"
    NUMBER = "number"
    BOOL = "bool"
    BYTES = "bytes"
    JSON = "json"
    TIMESTAMP = "timestamp"
    TIMESTAMPTZ = "timestamptz"
    TEXT = "text"
    ARRAY = "array"


@dataclass(frozen=True, slots=True)
class PgType:
    kind: Kind
    #: Element type of an array.
    element: PgType | None = None
    #: Array element delimiter (`,`; `;` for box).
    delimiter: str = ","


_SCALARS: Final[dict[int, Kind]] = {
    16: Kind.BOOL,
    17: Kind.BYTES,
    20: Kind.INTEGER,
    21: Kind.INTEGER,
    23: Kind.INTEGER,
    26: Kind.INTEGER,
    114: Kind.JSON,
    700: Kind.NUMBER,
    701: Kind.NUMBER,
    1114: Kind.TIMESTAMP,
    1184: Kind.TIMESTAMPTZ,
    1700: Kind.NUMBER,
    3802: Kind.JSON,
}

#: Array type OID -> element type OID, for the built-in array types.
_ARRAYS: Final[dict[int, int]] = {
    1000: 16,
    1001: 17,
    1005: 21,
    1007: 23,
    1016: 20,
    1028: 26,
    199: 114,
    1021: 700,
    1022: 701,
    1115: 1114,
    1185: 1184,
    1231: 1700,
    3807: 3802,
    1009: 25,
    1014: 1042,
    1015: 1043,
    2951: 2950,
    1182: 1082,
    1183: 1083,
    1270: 1266,
    1187: 1186,
    1002: 18,
    1003: 19,
}

_TEXT = PgType(Kind.TEXT)


def builtin_type(oid: int) -> PgType | None:
    """The mapping of a built-in type, or None when the OID is not one this module knows
    (a user type: the caller resolves it from the catalog)."""
    if oid in _SCALARS:
        return PgType(_SCALARS[oid])
    if oid in _ARRAYS:
        element = builtin_type(_ARRAYS[oid]) or _TEXT
        return PgType(Kind.ARRAY, element)
    if oid < 16384:
        return _TEXT  # every other built-in type: its text output
    return None


def catalog_type(
    *, typtype: str, category: str, element: PgType | None, base: PgType | None, delimiter: str
) -> PgType:
    """The mapping of a type described by its pg_type row (enums, domains, composite, arrays
    of those, extension types)."""
    if typtype == "d" and base is not None:
        return base
    if category == "A" and element is not None:
        return PgType(Kind.ARRAY, element, delimiter)
    if category == "N":
        return PgType(Kind.NUMBER)
    if category == "B":
        return PgType(Kind.BOOL)
    return _TEXT


# ---- values ------------------------------------------------------------------------------

_CONTEXT = decimal.Context(prec=60)
_MAX_DIGITS = 38
_MAX_EXP = 125
_MIN_EXP = -130


#: A number written without exponent: with at most 38 characters it has at most 38
#: significant digits and an exponent well inside DynamoDB's range, so it is always `N`.
_PLAIN_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")


def plain_number(text: str) -> bool:
    """A number that is `N` as written, without building a Decimal (the common case)."""
    return len(text) <= _MAX_DIGITS and (
        (text.isascii() and text.isdigit()) or _PLAIN_NUMBER.fullmatch(text) is not None
    )


def number(text: str) -> JSONDict:
    """`N` when DynamoDB (and boto3's deserializer) can hold the number, else `S`."""
    if plain_number(text):
        return {"N": text}
    try:
        value = _CONTEXT.create_decimal(text)
    except decimal.InvalidOperation:
        return {"S": text}
    if not value.is_finite():
        return {"S": text}
    if value.is_zero():
        return {"N": text}
    digits = value.normalize(_CONTEXT).as_tuple().digits
    exponent = value.adjusted()
    if len(digits) > _MAX_DIGITS or not _MIN_EXP <= exponent <= _MAX_EXP:
        return {"S": text}
    return {"N": text}


def _bytes(text: str) -> JSONDict:
    if text.startswith("\\x"):
        raw = bytes.fromhex(text[2:])
    else:  # bytea_output = escape
        raw = text.encode("latin-1").decode("unicode_escape").encode("latin-1")
    return {"B": base64.b64encode(raw).decode()}


class _Num(str):
    """A JSON number kept as the text it was written as."""

    __slots__ = ()


#: How deep DynamoDB nests documents (maps and lists): a json/jsonb value nested deeper maps
#: to `S`. Without a bound, a deep document's record could not be written at all (orjson
#: refuses about 250 levels of nesting, each JSON level being two in AttributeValues) and the
#: change would stop the slot for good.
MAX_JSON_DEPTH = 32


class _TooDeep(Exception):
    """A json/jsonb document nested deeper than MAX_JSON_DEPTH."""


def _json_value(value: Any, depth: int = 1) -> JSONDict:
    if isinstance(value, _Num):
        return number(str(value))
    if isinstance(value, str):
        return {"S": value}
    if value is True or value is False:
        return {"BOOL": value}
    if value is None:
        return {"NULL": True}
    if isinstance(value, dict | list) and depth > MAX_JSON_DEPTH:
        raise _TooDeep
    if isinstance(value, dict):
        return {"M": {k: _json_value(v, depth + 1) for k, v in value.items()}}
    if isinstance(value, list):
        return {"L": [_json_value(v, depth + 1) for v in value]}
    return {"S": str(value)}


def _json(text: str) -> JSONDict:
    try:
        parsed = json.loads(text, parse_int=_Num, parse_float=_Num, parse_constant=_Num)
        return _json_value(parsed)
    except (ValueError, RecursionError, _TooDeep):
        return {"S": text}


def _timestamp(text: str) -> JSONDict:
    if text[:1].isdigit() and not text.endswith(" BC"):
        text = text.replace(" ", "T", 1)
    return {"S": text}


def _timestamptz(text: str) -> JSONDict:
    if text[:1].isdigit() and not text.endswith(" BC"):
        text = text.replace(" ", "T", 1)
        if text.endswith("+00"):
            text = text[:-3] + "Z"
    return {"S": text}


def _text(text: str) -> JSONDict:
    return {"S": text}


def _integer(text: str) -> JSONDict:
    return {"N": text}


def _bool(text: str) -> JSONDict:
    return {"BOOL": text == "t"}


#: A column's text value (never NULL) -> its AttributeValue, per kind (arrays: `converter`).
_CONVERTERS: Final[dict[Kind, Converter]] = {
    Kind.TEXT: _text,
    Kind.INTEGER: _integer,
    Kind.NUMBER: number,
    Kind.BOOL: _bool,
    Kind.TIMESTAMPTZ: _timestamptz,
    Kind.TIMESTAMP: _timestamp,
    Kind.JSON: _json,
    Kind.BYTES: _bytes,
}


def converter(t: PgType) -> Converter:
    """The function that turns a column's text value (not NULL) into its AttributeValue:
    chosen once per column of a Relation message, not per value."""
    if t.kind is Kind.ARRAY:
        return functools.partial(_array, t=t)
    return _CONVERTERS.get(t.kind, _text)


def to_attribute(text: str | None, t: PgType) -> JSONDict:
    """One column's text value as an AttributeValue."""
    if text is None:
        return {"NULL": True}
    return converter(t)(text)


# ---- arrays -------------------------------------------------------------------------------


def _array(text: str, *, t: PgType) -> JSONDict:
    element = converter(t.element or _TEXT)
    if text.startswith("["):  # dimension decoration: [0:2]={...}
        text = text[text.index("=") + 1 :]
    parsed, _ = _parse_array(text, 0, t.delimiter)
    return _array_value(parsed, element)


def _array_value(items: list[Any], element: Converter) -> JSONDict:
    out: list[JSONDict] = []
    for item in items:
        if isinstance(item, list):
            out.append(_array_value(item, element))
        elif item is None:
            out.append({"NULL": True})
        else:
            out.append(element(item))
    return {"L": out}


def _parse_array(text: str, pos: int, delim: str) -> tuple[list[Any], int]:
    """Parse `{...}` starting at text[pos] == "{"; returns (items, position after "}")."""
    if text[pos] != "{":
        raise ValueError(f"array literal expected at {pos}: {text!r}")
    items: list[Any] = []
    pos += 1
    if text[pos] == "}":
        return items, pos + 1
    while True:
        char = text[pos]
        if char == "{":
            sub, pos = _parse_array(text, pos, delim)
            items.append(sub)
        elif char == '"':
            value, pos = _quoted(text, pos + 1)
            items.append(value)
        else:
            end = pos
            while text[end] != delim and text[end] != "}":
                end += 1
            raw = text[pos:end]
            items.append(None if raw == "NULL" else raw)
            pos = end
        if text[pos] == "}":
            return items, pos + 1
        pos += 1  # the delimiter


def _quoted(text: str, pos: int) -> tuple[str, int]:
    out: list[str] = []
    while True:
        char = text[pos]
        if char == "\\":
            out.append(text[pos + 1])
            pos += 2
        elif char == '"':
            return "".join(out), pos + 1
        else:
            out.append(char)
            pos += 1
