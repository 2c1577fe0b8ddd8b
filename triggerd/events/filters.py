"""Lambda event filtering (`FilterCriteria`): the EventBridge pattern language, compiled once.

A trigger's `filters` are compiled by `compile_filters` into a `CompiledFilter` whose `matches`
runs on every record (the hot path): patterns become nested closures, so matching never parses
or walks the pattern JSON again.

Semantics (LAMBDA_SEMANTICS.md §4 plus EventBridge's pattern rules):

- Filters are OR-ed; inside one pattern every field must match (AND); the values in one array
  are OR-ed; `$or` (a list of sub-patterns) ORs across fields at any object level. An empty
  filter list matches everything.
- A leaf array holds literals (string, number, boolean, null) and operator objects (exactly
  one key each). Strings compare exactly; strings never equal numbers, booleans never equal
  numbers. **Literal numbers compare by their canonical JSON representation**, as the
  semantics reference says: an integer and a float are different (`300` does not match
  `300.0`, `1.50` and `1.5` are the same float); use `numeric` for value comparison.
  `anything-but` is the exact complement of the same comparison.
- A record array matches when **any** element matches (nested arrays are flattened). Inside an
  array of objects each element is matched on its own, so all fields of one nested pattern
  must match in the same element; `exists: false` is also checked per element.
- A pattern field absent from the record never matches, except `exists: false`, which matches
  when the key is absent or holds an empty array (no leaf value). A present `null` is a value:
  it matches `[null]` and `exists: true`, never `exists: false`.
- Kinds must agree: a leaf array never matches an object value (JSON body against a
  plain-string pattern: dropped), and a nested object pattern never matches a scalar (plain
  text body against a JSON-object pattern: dropped). A nested pattern over an absent key is
  evaluated as over an empty object, so `{"a": {"b": [{"exists": false}]}}` matches `{}`.
- Operators: `anything-but` (scalar, list, or an object with `prefix`, `suffix`,
  `equals-ignore-case` or `wildcard`; it is the complement of its operand over every leaf
  value, so `{"anything-but": "x"}` also matches numbers and null), `numeric` (`=`, `<`, `<=`,
  `>`, `>=`, or a range of one lower and one upper bound; matches JSON numbers only), `exists`,
  `prefix` / `suffix` (a string, or `{"equals-ignore-case": "..."}`), `equals-ignore-case`,
  `wildcard` (`*` is any run of characters, `\\*` a literal star, `\\\\` a literal backslash),
  `cidr` (IPv4 or IPv6 network; matches strings holding an address inside it). String
  operators match strings only; ignore-case comparison uses `str.casefold`.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import math
import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Final, Literal

import orjson

__all__ = [
    "MAX_FILTERS",
    "MAX_PATTERN_CHARS",
    "CompiledFilter",
    "FilterPatternError",
    "compile_filters",
    "parse_data",
    "view_with_data",
]

#: Lambda's default limit of filters per event source mapping.
MAX_FILTERS: Final = 5
#: Lambda's limit on one pattern's JSON text.
MAX_PATTERN_CHARS: Final = 4096


class FilterPatternError(ValueError):
    """A filter pattern is malformed; the message names the problem and where it is."""


#: A matcher over one leaf value (string, number, boolean or null).
ValuePred = Callable[[Any], bool]
#: A matcher over one field's value, or `_MISSING` when the key is absent.
FieldMatcher = Callable[[Any], bool]
#: A matcher over one JSON object.
ObjectMatcher = Callable[[Mapping[str, Any]], bool]
Path = tuple[str | int, ...]

_MISSING: Final = object()
_NO_KEY: Final = object()
_ARRAYS: Final = (list, tuple)

_NUMERIC_OPS: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "=": operator.eq,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_LOWER_OPS: Final = frozenset({">", ">="})
_UPPER_OPS: Final = frozenset({"<", "<="})
_ANYTHING_BUT_OPS: Final = ("prefix", "suffix", "equals-ignore-case", "wildcard")


# --------------------------------------------------------------------------------------------
# Public API


class CompiledFilter:
    """Compiled filter patterns: `matches` ORs them; no patterns means everything matches."""

    __slots__ = ("_matchers",)

    def __init__(self, matchers: Sequence[ObjectMatcher] = ()) -> None:
        self._matchers: tuple[ObjectMatcher, ...] = tuple(matchers)

    def matches(self, view: Mapping[str, Any]) -> bool:
        """Whether the record's filter view matches any pattern (True when there are none)."""
        for matcher in self._matchers:
            if matcher(view):
                return True
        return not self._matchers

    def __bool__(self) -> bool:
        return bool(self._matchers)

    def __len__(self) -> int:
        return len(self._matchers)

    def __repr__(self) -> str:
        return f"CompiledFilter(patterns={len(self._matchers)})"


def compile_filters(
    patterns: Sequence[Mapping[str, Any] | str], max_filters: int = MAX_FILTERS
) -> CompiledFilter:
    """Validate and compile filter patterns (objects, or JSON text as AWS's `Pattern` holds).

    Raises `FilterPatternError` naming the filter, the path inside it and the problem.
    """
    if isinstance(patterns, str | bytes | Mapping):
        raise FilterPatternError("filters must be a list of patterns, not a single pattern")
    if len(patterns) > max_filters:
        raise FilterPatternError(f"too many filters: {len(patterns)} (at most {max_filters})")
    matchers: list[ObjectMatcher] = []
    for index, pattern in enumerate(patterns):
        try:
            matchers.append(_compile_pattern(pattern))
        except FilterPatternError as exc:
            raise FilterPatternError(f"filter[{index}]{exc}") from None
    return CompiledFilter(matchers)


def parse_data(value: Any, encoding: Literal["json-text", "base64"]) -> Any:
    """The data key's value as filter patterns see it.

    `json-text` (SQS `body`): the parsed JSON when the text is valid JSON, else the string.
    `base64` (Kinesis `data`, Kafka `value`, RabbitMQ `data`): decoded, then parsed as JSON;
    decoded text that is not JSON stays a plain string (so object patterns drop it, as AWS
    does); a value that is not valid base64 or not UTF-8 is returned unchanged.
    Values that are not text (already parsed, or None) are returned unchanged.
    """
    if encoding == "json-text":
        if not isinstance(value, str | bytes):
            return value
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    if encoding == "base64":
        return _parse_base64(value)
    raise ValueError(f"unknown data encoding {encoding!r}")


def view_with_data(
    payload: Mapping[str, Any], data_key: str, encoding: Literal["json-text", "base64"]
) -> dict[str, Any]:
    """A shallow copy of `payload` with `data_key` parsed by `parse_data` (if present)."""
    view = dict(payload)
    if data_key in view:
        view[data_key] = parse_data(view[data_key], encoding)
    return view


def _parse_base64(value: Any) -> Any:
    if not isinstance(value, str | bytes):
        return value
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return value
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return value


# --------------------------------------------------------------------------------------------
# Validation helpers


def _where(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _fail(path: Path, problem: str) -> FilterPatternError:
    return FilterPatternError(f" at {_where(path)}: {problem}" if path else f": {problem}")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, _ARRAYS):
        return "array"
    return type(value).__name__


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _lit_key(value: Any) -> Any:
    """Equality key: strings, booleans and null by value; numbers by canonical JSON text."""
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, int):
        return ("#", int.__repr__(value))
    if isinstance(value, float):
        return ("#", float.__repr__(value))
    return _NO_KEY


def _pattern_text_chars(pattern: Mapping[str, Any]) -> int:
    try:
        return len(orjson.dumps(pattern, default=_jsonable).decode())
    except TypeError as exc:
        raise _fail((), f"pattern is not JSON-serialisable: {exc}") from None


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"type {type(value).__name__} is not JSON")


def _compile_pattern(pattern: Mapping[str, Any] | str) -> ObjectMatcher:
    if isinstance(pattern, str):
        if len(pattern) > MAX_PATTERN_CHARS:
            raise _fail((), f"pattern is {len(pattern)} characters (at most {MAX_PATTERN_CHARS})")
        try:
            loaded = orjson.loads(pattern)
        except orjson.JSONDecodeError as exc:
            raise _fail((), f"pattern is not valid JSON: {exc}") from None
    elif isinstance(pattern, Mapping):
        size = _pattern_text_chars(pattern)
        if size > MAX_PATTERN_CHARS:
            raise _fail((), f"pattern is {size} characters as JSON (at most {MAX_PATTERN_CHARS})")
        loaded = pattern
    else:
        raise _fail((), f"pattern must be a JSON object or its text, got {_kind(pattern)}")
    if not isinstance(loaded, Mapping):
        raise _fail((), f"pattern must be a JSON object, got {_kind(loaded)}")
    return _compile_object(loaded, ())


# --------------------------------------------------------------------------------------------
# Objects, fields and leaves


def _compile_object(obj: Mapping[str, Any], path: Path) -> ObjectMatcher:
    if not obj:
        raise _fail(path, "empty object: a pattern object needs at least one field")
    fields: list[tuple[str, FieldMatcher]] = []
    or_groups: list[tuple[ObjectMatcher, ...]] = []
    for key, value in obj.items():
        if not isinstance(key, str):
            raise _fail(path, f"field names must be strings, got {key!r}")
        sub = (*path, key)
        if key == "$or":
            or_groups.append(_compile_or(value, sub))
        elif isinstance(value, Mapping):
            fields.append((key, _compile_nested(value, sub)))
        elif isinstance(value, _ARRAYS):
            fields.append((key, _compile_leaf(value, sub)))
        else:
            raise _fail(sub, f"value must be an array or an object, got {_kind(value)}")
    return _object_matcher(tuple(fields), tuple(or_groups))


def _object_matcher(
    fields: tuple[tuple[str, FieldMatcher], ...], or_groups: tuple[tuple[ObjectMatcher, ...], ...]
) -> ObjectMatcher:
    missing = _MISSING

    def match_fields(record: Mapping[str, Any]) -> bool:
        return all(field(record.get(key, missing)) for key, field in fields)

    if not or_groups:
        return match_fields

    def match(record: Mapping[str, Any]) -> bool:
        if not match_fields(record):
            return False
        return all(any(alt(record) for alt in group) for group in or_groups)

    return match


def _compile_or(value: Any, path: Path) -> tuple[ObjectMatcher, ...]:
    if not isinstance(value, _ARRAYS):
        raise _fail(path, f"$or must be an array of pattern objects, got {_kind(value)}")
    if not value:
        raise _fail(path, "$or is empty: it needs at least one pattern object")
    alternatives: list[ObjectMatcher] = []
    for i, item in enumerate(value):
        if not isinstance(item, Mapping):
            raise _fail((*path, i), f"$or items must be pattern objects, got {_kind(item)}")
        alternatives.append(_compile_object(item, (*path, i)))
    return tuple(alternatives)


def _compile_nested(obj: Mapping[str, Any], path: Path) -> FieldMatcher:
    inner = _compile_object(obj, path)
    matches_absent = inner({})
    missing = _MISSING

    def match(value: Any) -> bool:
        if isinstance(value, dict):
            return inner(value)
        if isinstance(value, _ARRAYS):
            return any(inner(item) for item in _iter_objects(value))
        if value is missing:
            return matches_absent
        return False

    return match


def _iter_objects(items: Sequence[Any]) -> Iterator[Mapping[str, Any]]:
    for item in items:
        if isinstance(item, dict):
            yield item
        elif isinstance(item, _ARRAYS):
            yield from _iter_objects(item)


def _iter_leaves(items: Sequence[Any]) -> Iterator[Any]:
    for item in items:
        if isinstance(item, _ARRAYS):
            yield from _iter_leaves(item)
        elif not isinstance(item, dict):
            yield item


def _compile_leaf(items: Sequence[Any], path: Path) -> FieldMatcher:
    if not items:
        raise _fail(path, "empty array matches nothing: list at least one value or operator")
    literals: set[Any] = set()
    preds: list[ValuePred] = []
    matches_absent = False
    for i, item in enumerate(items):
        if item is None or isinstance(item, str | bool) or _is_number(item):
            if isinstance(item, float) and not math.isfinite(item):
                raise _fail((*path, i), "numbers must be finite")
            literals.add(_lit_key(item))
        elif isinstance(item, Mapping):
            pred, absent_ok = _compile_operator(item, (*path, i))
            matches_absent = matches_absent or absent_ok
            if pred is not None:
                preds.append(pred)
        else:
            raise _fail((*path, i), f"expected a value or an operator object, got {_kind(item)}")
    return _leaf_matcher(_value_test(frozenset(literals), tuple(preds)), matches_absent)


def _value_test(literals: frozenset[Any], preds: tuple[ValuePred, ...]) -> ValuePred:
    key = _lit_key
    if not preds:
        return lambda value: key(value) in literals
    if not literals:
        if len(preds) == 1:
            return preds[0]
        return lambda value: any(p(value) for p in preds)
    return lambda value: key(value) in literals or any(p(value) for p in preds)


def _leaf_matcher(test: ValuePred, matches_absent: bool) -> FieldMatcher:
    missing = _MISSING

    def match(value: Any) -> bool:
        if value is missing:
            return matches_absent
        if isinstance(value, dict):
            return False
        if isinstance(value, _ARRAYS):
            if not value:
                return matches_absent
            return any(test(leaf) for leaf in _iter_leaves(value))
        return test(value)

    return match


# --------------------------------------------------------------------------------------------
# Operators


def _compile_operator(spec: Mapping[str, Any], path: Path) -> tuple[ValuePred | None, bool]:
    """(predicate over a leaf value or None, whether an absent key matches)."""
    if len(spec) != 1:
        names = ", ".join(repr(k) for k in spec) or "none"
        raise _fail(path, f"an operator object needs exactly one operator, got {names}")
    ((name, operand),) = spec.items()
    sub = (*path, name)
    if name == "exists":
        if not isinstance(operand, bool):
            raise _fail(sub, f"exists takes true or false, got {_kind(operand)}")
        return (_always if operand else None), not operand
    compiler = _OPERATORS.get(name)
    if compiler is None:
        known = ", ".join(sorted([*_OPERATORS, "exists"]))
        raise _fail(path, f"unknown operator {name!r} (known: {known})")
    return compiler(operand, sub), False


def _always(value: Any) -> bool:
    return True


def _require_string(operand: Any, path: Path, op: str) -> str:
    if not isinstance(operand, str):
        raise _fail(path, f"{op} takes a string, got {_kind(operand)}")
    return operand


def _compile_equals_ignore_case(operand: Any, path: Path) -> ValuePred:
    target = _require_string(operand, path, "equals-ignore-case").casefold()
    return lambda v: isinstance(v, str) and v.casefold() == target


def _compile_affix(operand: Any, path: Path, op: str) -> ValuePred:
    if isinstance(operand, Mapping):
        if set(operand) != {"equals-ignore-case"}:
            raise _fail(path, f'{op} takes a string or {{"equals-ignore-case": "..."}}')
        text = _require_string(operand["equals-ignore-case"], (*path, "equals-ignore-case"), op)
        folded = text.casefold()
        if op == "prefix":
            return lambda v: isinstance(v, str) and v.casefold().startswith(folded)
        return lambda v: isinstance(v, str) and v.casefold().endswith(folded)
    text = _require_string(operand, path, op)
    if op == "prefix":
        return lambda v: isinstance(v, str) and v.startswith(text)
    return lambda v: isinstance(v, str) and v.endswith(text)


def _compile_prefix(operand: Any, path: Path) -> ValuePred:
    return _compile_affix(operand, path, "prefix")


def _compile_suffix(operand: Any, path: Path) -> ValuePred:
    return _compile_affix(operand, path, "suffix")


def _compile_wildcard(operand: Any, path: Path) -> ValuePred:
    segments = _wildcard_segments(_require_string(operand, path, "wildcard"), path)
    if len(segments) == 1:
        exact = segments[0]
        return lambda v: isinstance(v, str) and v == exact
    head, *middle, tail = segments
    fixed = len(head) + len(tail)

    def match(value: Any) -> bool:
        if not isinstance(value, str) or len(value) < fixed:
            return False
        if not (value.startswith(head) and value.endswith(tail)):
            return False
        pos, end = len(head), len(value) - len(tail)
        for segment in middle:  # leftmost-first is optimal for '*'-only globs: linear time
            found = value.find(segment, pos, end)
            if found < 0:
                return False
            pos = found + len(segment)
        return True

    return match


def _wildcard_segments(text: str, path: Path) -> list[str]:
    """Split on unescaped '*'; '\\*' is a literal star and '\\\\' a literal backslash."""
    segments: list[str] = []
    current: list[str] = []
    i, previous_star = 0, False
    while i < len(text):
        char = text[i]
        if char == "\\":
            following = text[i + 1 : i + 2]
            if following not in ("*", "\\"):
                raise _fail(path, f"invalid escape at character {i}: only \\* and \\\\ exist")
            current.append(following)
            i, previous_star = i + 2, False
            continue
        if char == "*":
            if previous_star:
                raise _fail(path, f"consecutive '*' at character {i} are not allowed")
            segments.append("".join(current))
            current, previous_star = [], True
        else:
            current.append(char)
            previous_star = False
        i += 1
    segments.append("".join(current))
    return segments


def _compile_cidr(operand: Any, path: Path) -> ValuePred:
    text = _require_string(operand, path, "cidr")
    if "/" not in text:
        raise _fail(path, f"cidr needs a network such as 10.0.0.0/24, got {text!r}")
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        raise _fail(path, f"invalid cidr {text!r}: {exc}") from None

    def match(value: Any) -> bool:
        if not isinstance(value, str):
            return False
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            return False
        return address.version == network.version and address in network

    return match


def _compile_numeric(operand: Any, path: Path) -> ValuePred:
    if not isinstance(operand, _ARRAYS) or len(operand) not in (2, 4):
        raise _fail(path, 'numeric takes [op, number] or [op, number, op, number], e.g. [">", 0]')
    checks: list[tuple[str, float]] = []
    for i in range(0, len(operand), 2):
        op, number = operand[i], operand[i + 1]
        if not isinstance(op, str) or op not in _NUMERIC_OPS:
            raise _fail((*path, i), f"unknown numeric operator {op!r} (use =, <, <=, >, >=)")
        if not _is_number(number) or not math.isfinite(number):
            raise _fail((*path, i + 1), f"numeric operand must be a number, got {_kind(number)}")
        checks.append((op, number))
    if len(checks) == 2:
        _check_range(checks, path)
    compiled = tuple((_NUMERIC_OPS[op], number) for op, number in checks)

    def match(value: Any) -> bool:
        if type(value) is not int and type(value) is not float:
            return False
        return all(compare(value, number) for compare, number in compiled)

    return match


def _check_range(checks: list[tuple[str, float]], path: Path) -> None:
    ops = {op for op, _ in checks}
    if len(ops & _LOWER_OPS) != 1 or len(ops & _UPPER_OPS) != 1:
        raise _fail(path, "a numeric range needs one lower (> or >=) and one upper (< or <=) bound")
    (low_op, low), (high_op, high) = sorted(checks, key=lambda c: c[0] in _UPPER_OPS)
    if low > high or (low == high and (low_op, high_op) != (">=", "<=")):
        raise _fail(path, f"numeric range {low_op} {low} and {high_op} {high} is empty")


def _compile_anything_but(operand: Any, path: Path) -> ValuePred:
    if isinstance(operand, Mapping):
        return _compile_anything_but_op(operand, path)
    values = list(operand) if isinstance(operand, _ARRAYS) else [operand]
    if not values:
        raise _fail(path, "anything-but list is empty")
    for i, value in enumerate(values):
        if not (isinstance(value, str) or _is_number(value)):
            where = (*path, i) if isinstance(operand, _ARRAYS) else path
            raise _fail(where, f"anything-but takes strings or numbers, got {_kind(value)}")
    excluded = frozenset(_lit_key(v) for v in values)
    key = _lit_key
    return lambda v: key(v) not in excluded


def _compile_anything_but_op(operand: Mapping[str, Any], path: Path) -> ValuePred:
    if len(operand) != 1 or next(iter(operand)) not in _ANYTHING_BUT_OPS:
        raise _fail(path, f"anything-but takes a value, a list, or one of {_ANYTHING_BUT_OPS}")
    ((name, value),) = operand.items()
    sub = (*path, name)
    values = list(value) if isinstance(value, _ARRAYS) else [value]
    if not values:
        raise _fail(sub, f"anything-but {name} list is empty")
    inner: list[ValuePred] = []
    for i, text in enumerate(values):
        where = (*sub, i) if isinstance(value, _ARRAYS) else sub
        inner.append(_OPERATORS[name](_require_string(text, where, name), where))
    return lambda v: not any(p(v) for p in inner)


_OPERATORS: Final[dict[str, Callable[[Any, Path], ValuePred]]] = {
    "anything-but": _compile_anything_but,
    "numeric": _compile_numeric,
    "prefix": _compile_prefix,
    "suffix": _compile_suffix,
    "equals-ignore-case": _compile_equals_ignore_case,
    "wildcard": _compile_wildcard,
    "cidr": _compile_cidr,
}
