"""EventBridge's event envelope and the input a rule's target receives: `input` (constant
JSON), `input_path` (one JSONPath) and `input_transformer` (`input_paths_map` +
`input_template`).

Pure functions over JSON values, compiled once per target so that delivering an event never
parses a path or a template again. The config validates with `compile_target_input`; the
event buses (`triggerd.fanout.events`) render with the compiled `TargetInput`.

JSONPath, as far as EventBridge evaluates it: `$`, dot names (letters, digits, `-`, `_`, `/`,
and anything else but `.`, `[`, `]`), `['quoted name']`, array indices `[0]` and the wildcard
`.*` / `[*]` (which yields an array of what it reaches). Written by hand: the general JSONPath
libraries accept much more than EventBridge does (filters, slices, recursion), so they would
accept paths AWS refuses.

Templates follow AWS's quoting rules: a `<variable>` outside a JSON string is replaced by the
value's JSON (a string with its quotes, an object as an object), inside a JSON string by the
value's text escaped for that string (a string without quotes, anything else as its JSON
text). A variable whose path reaches nothing renders `null` outside a string and nothing
inside one. `<aws.events.event>` (the event without `detail`) and `<aws.events.event.json>`
(the whole event) are JSON values, allowed outside strings only. `<...>` naming no variable
stays literal text. The rendered template must be JSON (a text template is written as a JSON
string: `"\\"<name> is <state>\\""`)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

__all__ = [
    "MAX_INPUT_CHARS",
    "MAX_PATHS",
    "MAX_PATH_CHARS",
    "MAX_TEMPLATE_CHARS",
    "PREDEFINED",
    "InputError",
    "RuleContext",
    "TargetInput",
    "compile_json_path",
    "compile_target_input",
    "event_envelope",
]

#: AWS's limits on a target's Input, InputPath, InputTemplate and InputPathsMap.
MAX_INPUT_CHARS: Final = 8192
MAX_TEMPLATE_CHARS: Final = 8192
MAX_PATH_CHARS: Final = 256
MAX_PATHS: Final = 100
_VARIABLE: Final = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_PLACEHOLDER: Final = re.compile(r"<([^<>\s]{1,256})>")

RULE_ARN: Final = "aws.events.rule-arn"
RULE_NAME: Final = "aws.events.rule-name"
INGESTION_TIME: Final = "aws.events.event.ingestion-time"
EVENT: Final = "aws.events.event"
EVENT_JSON: Final = "aws.events.event.json"
PREDEFINED: Final = frozenset({RULE_ARN, RULE_NAME, INGESTION_TIME, EVENT, EVENT_JSON})
#: The predefined variables whose values are JSON objects (never inside a JSON string).
_JSON_ONLY: Final = frozenset({EVENT, EVENT_JSON})

_MISSING: Final = object()


class InputError(ValueError):
    """A target's input settings are invalid; the message says what and where."""


def event_envelope(
    *,
    event_id: str,
    detail_type: str,
    source: str,
    account: str,
    time: str,
    region: str,
    resources: Sequence[str],
    detail: Any,
    replay_name: str | None = None,
) -> dict[str, Any]:
    """An EventBridge event, with AWS's keys in AWS's order (`replay-name` only on events a
    replay re-delivers, as AWS adds it)."""
    event: dict[str, Any] = {
        "version": "0",
        "id": event_id,
        "detail-type": detail_type,
        "source": source,
        "account": account,
        "time": time,
        "region": region,
        "resources": list(resources),
        "detail": detail,
    }
    if replay_name is not None:
        event["replay-name"] = replay_name
    return event


# --------------------------------------------------------------------------------------------
# JSONPath

#: One step of a path: a key, an index, or the wildcard.
_Step = str | int | None


def compile_json_path(text: str) -> Callable[[Any], Any]:
    """A function from a JSON value to what `text` reaches in it (`_MISSING` when nothing);
    a path with a wildcard gives the list of what it reaches."""
    if not isinstance(text, str) or not text.startswith("$"):
        raise InputError(f"JSON path must start with $, got {text!r}")
    if len(text) > MAX_PATH_CHARS:
        raise InputError(f"JSON path is {len(text)} characters (at most {MAX_PATH_CHARS})")
    steps = _parse_path(text)
    wildcard = None in steps

    def evaluate(value: Any) -> Any:
        found = list(_walk(value, steps))
        if wildcard:
            return found
        return found[0] if found else _MISSING

    return evaluate


def _parse_path(text: str) -> tuple[_Step, ...]:
    steps: list[_Step] = []
    i = 1
    while i < len(text):
        char = text[i]
        if char == ".":
            end = i + 1
            while end < len(text) and text[end] not in ".[]":
                end += 1
            name = text[i + 1 : end]
            if not name:
                raise InputError(f"JSON path {text!r}: empty name at character {i + 1}")
            steps.append(None if name == "*" else name)
            i = end
        elif char == "[":
            close = text.find("]", i)
            if close < 0:
                raise InputError(f"JSON path {text!r}: '[' at character {i} is not closed")
            steps.append(_bracket(text, text[i + 1 : close]))
            i = close + 1
        else:
            raise InputError(f"JSON path {text!r}: unexpected {char!r} at character {i}")
    return tuple(steps)


def _bracket(text: str, inner: str) -> _Step:
    if inner == "*":
        return None
    if inner.isdigit():
        return int(inner)
    if len(inner) >= 2 and inner[0] == inner[-1] and inner[0] in "'\"":
        return inner[1:-1]
    raise InputError(f"JSON path {text!r}: [{inner}] is neither an index, '*' nor a 'name'")


def _walk(value: Any, steps: tuple[_Step, ...]) -> Any:
    if not steps:
        yield value
        return
    step, rest = steps[0], steps[1:]
    if step is None:
        if isinstance(value, dict):
            children: Sequence[Any] = list(value.values())
        elif isinstance(value, list):
            children = value
        else:
            return
        for child in children:
            yield from _walk(child, rest)
    elif isinstance(step, int):
        if isinstance(value, list) and step < len(value):
            yield from _walk(value[step], rest)
    elif isinstance(value, dict) and step in value:
        yield from _walk(value[step], rest)


# --------------------------------------------------------------------------------------------
# Target input


@dataclass(frozen=True, slots=True)
class RuleContext:
    """What the predefined variables name: the rule that matched and when the event came."""

    rule_name: str
    rule_arn: str
    ingestion_time: str


@dataclass(frozen=True, slots=True)
class _Slot:
    """One placeholder of a template: its variable and whether it sits inside a string."""

    name: str
    quoted: bool


class TargetInput:
    """A compiled target input: `render(event, event_bytes, context)` gives the payload."""

    __slots__ = ("_constant", "_parts", "_path", "_paths")

    def __init__(
        self,
        *,
        constant: bytes | None = None,
        path: Callable[[Any], Any] | None = None,
        paths: Mapping[str, Callable[[Any], Any]] | None = None,
        parts: Sequence[str | _Slot] = (),
    ) -> None:
        self._constant = constant
        self._path = path
        self._paths = dict(paths or {})
        self._parts = tuple(parts)

    @property
    def passes_event(self) -> bool:
        """Whether the target receives the matched event itself."""
        return self._constant is None and self._path is None and not self._parts

    def render(self, event: Mapping[str, Any], event_bytes: bytes, ctx: RuleContext) -> bytes:
        if self._constant is not None:
            return self._constant
        if self._path is not None:
            found = self._path(event)
            return b"null" if found is _MISSING else orjson.dumps(found)
        if not self._parts:
            return event_bytes
        values = {name: path(event) for name, path in self._paths.items()}
        out: list[str] = []
        for part in self._parts:
            if isinstance(part, str):
                out.append(part)
            else:
                out.append(_substitute(part, values, event, event_bytes, ctx))
        return "".join(out).encode("utf-8")


def _substitute(
    slot: _Slot,
    values: Mapping[str, Any],
    event: Mapping[str, Any],
    event_bytes: bytes,
    ctx: RuleContext,
) -> str:
    name = slot.name
    if name == EVENT_JSON:
        return event_bytes.decode("utf-8")
    if name == EVENT:
        return orjson.dumps({k: v for k, v in event.items() if k != "detail"}).decode()
    if name == RULE_NAME:
        value: Any = ctx.rule_name
    elif name == RULE_ARN:
        value = ctx.rule_arn
    elif name == INGESTION_TIME:
        value = ctx.ingestion_time
    else:
        value = values.get(name, _MISSING)
    if slot.quoted:
        if value is _MISSING:
            return ""
        text = value if isinstance(value, str) else orjson.dumps(value).decode()
        return orjson.dumps(text).decode()[1:-1]
    return "null" if value is _MISSING else orjson.dumps(value).decode()


def compile_target_input(
    *,
    input_json: str | None = None,
    input_path: str | None = None,
    paths_map: Mapping[str, str] | None = None,
    template: str | None = None,
) -> TargetInput:
    """Validate and compile a target's input settings (at most one kind; none passes the
    matched event). Raises InputError naming the key that is wrong."""
    kinds = [
        k
        for k, v in (
            ("input", input_json),
            ("input_path", input_path),
            ("input_transformer", template if template is not None else paths_map),
        )
        if v is not None
    ]
    if len(kinds) > 1:
        raise InputError(f"set only one of input, input_path and input_transformer, not {kinds}")
    if input_json is not None:
        return TargetInput(constant=_constant(input_json))
    if input_path is not None:
        try:
            return TargetInput(path=compile_json_path(input_path))
        except InputError as exc:
            raise InputError(f"input_path: {exc}") from None
    if template is None:
        if paths_map is not None:
            raise InputError("input_transformer.input_template: required")
        return TargetInput()
    compiled = _compile_paths(paths_map or {})
    return TargetInput(paths=compiled, parts=_compile_template(template, set(compiled)))


def _constant(text: str) -> bytes:
    if len(text) > MAX_INPUT_CHARS:
        raise InputError(f"input: {len(text)} characters (at most {MAX_INPUT_CHARS})")
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"input: not valid JSON: {exc}") from None
    # Sent as written, as AWS sends Input: parsing and writing it again would turn integers
    # beyond 64 bits into floats.
    return text.encode("utf-8")


def _compile_paths(paths_map: Mapping[str, str]) -> dict[str, Callable[[Any], Any]]:
    if len(paths_map) > MAX_PATHS:
        raise InputError(
            f"input_transformer.input_paths_map: {len(paths_map)} variables (at most {MAX_PATHS})"
        )
    compiled: dict[str, Callable[[Any], Any]] = {}
    for name, path in paths_map.items():
        where = f"input_transformer.input_paths_map.{name}"
        if name in PREDEFINED or name.startswith("aws."):
            raise InputError(f"{where}: {name!r} is reserved for a predefined variable")
        if not _VARIABLE.match(name):
            raise InputError(f"{where}: a variable name is letters, digits, '_' and '-'")
        try:
            compiled[name] = compile_json_path(path)
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None
    return compiled


def _compile_template(template: str, variables: set[str]) -> list[str | _Slot]:
    where = "input_transformer.input_template"
    if len(template) > MAX_TEMPLATE_CHARS:
        raise InputError(f"{where}: {len(template)} characters (at most {MAX_TEMPLATE_CHARS})")
    quoted_at = _string_spans(template)
    parts: list[str | _Slot] = []
    last = 0
    for match in _PLACEHOLDER.finditer(template):
        name = match.group(1)
        if name not in variables and name not in PREDEFINED:
            continue  # not a variable: literal text, as AWS leaves it
        quoted = quoted_at(match.start())
        if quoted and name in _JSON_ONLY:
            raise InputError(f"{where}: <{name}> is a JSON object: use it outside quotes")
        parts.append(template[last : match.start()])
        parts.append(_Slot(name, quoted))
        last = match.end()
    parts.append(template[last:])
    _check_renders_json(parts, where)
    return [p for p in parts if p != ""]


def _string_spans(template: str) -> Callable[[int], bool]:
    """Whether a position of the template lies inside a JSON string literal."""
    inside: list[bool] = []
    in_string = escaped = False
    for char in template:
        inside.append(in_string)
        if escaped:
            escaped = False
        elif in_string and char == "\\":
            escaped = True
        elif char == '"':
            in_string = not in_string
    return lambda pos: inside[pos] if pos < len(inside) else False


def _check_renders_json(parts: Sequence[str | _Slot], where: str) -> None:
    sample = "".join(
        p if isinstance(p, str) else ("x" if p.quoted else '{"x": null}') for p in parts
    )
    try:
        orjson.loads(sample)
    except orjson.JSONDecodeError as exc:
        raise InputError(
            f"{where}: does not render JSON ({exc}); write a text template as a JSON string, "
            'e.g. "\\"<name> is <state>\\""'
        ) from None
