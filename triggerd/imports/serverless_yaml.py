"""Reading a serverless.yml (or a file it includes) into plain data, safely.

PyYAML's safe loader, plus constructors for CloudFormation's short-form tags (`!Ref`,
`!GetAtt`, `!Sub`, ...) that Serverless Framework files may hold: each becomes an
`Intrinsic` marker, the same object the long form (`Fn::GetAtt: [...]`) is turned into, so
that the translator resolves both one way. No library reads these tags into markers for an
arbitrary YAML file (cfn-lint's decoder expects a whole CloudFormation template and rejects a
serverless.yml), so the constructors are written here.

Hostile files get one clear error: too large, nested too deeply, or not YAML."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from triggerd.types import ConfigError

__all__ = ["MAX_DEPTH", "MAX_FILE_BYTES", "Intrinsic", "as_intrinsic", "read_yaml"]

#: Largest file read (serverless.yml or an included file).
MAX_FILE_BYTES = 2 * 1024 * 1024
#: Deepest nesting of mappings and lists accepted.
MAX_DEPTH = 64

#: CloudFormation's short-form tags and the long form each stands for.
_TAGS = {
    "Ref": "Ref",
    "Condition": "Condition",
    **{
        name: f"Fn::{name}"
        for name in (
            "GetAtt",
            "Sub",
            "Join",
            "Select",
            "Split",
            "If",
            "Equals",
            "And",
            "Or",
            "Not",
            "FindInMap",
            "Base64",
            "Cidr",
            "GetAZs",
            "ImportValue",
            "Transform",
            "ToJsonString",
            "Length",
        )
    },
}


@dataclass(frozen=True)
class Intrinsic:
    """A CloudFormation intrinsic function (`Ref`, `Fn::GetAtt`, ...) and its argument,
    kept as written (variables inside it resolved)."""

    name: str
    args: Any

    def __str__(self) -> str:
        return f"{{{self.name}: {self.args!r}}}"


def as_intrinsic(node: Any) -> Intrinsic | None:
    """The long form `{"Fn::GetAtt": [...]}` / `{"Ref": "X"}` as an Intrinsic, else None."""
    if isinstance(node, Intrinsic):
        return node
    if isinstance(node, dict) and len(node) == 1:
        (key, value), *_ = node.items()
        if isinstance(key, str) and (key == "Ref" or key.startswith("Fn::")):
            return Intrinsic(key, value)
    return None


class _Loader(yaml.SafeLoader):
    """The safe loader with the short-form intrinsic tags. The pure-Python one on purpose:
    it stops hostile nesting with a RecursionError, where libyaml's (CSafeLoader) composer
    recurses in C without a limit; a serverless.yml parses in tens of milliseconds."""


def _construct(loader: yaml.SafeLoader, node: yaml.Node, name: str) -> Intrinsic:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if name == "Fn::GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return Intrinsic(name, value)


def _constructor(name: str) -> Callable[[yaml.SafeLoader, yaml.Node], Intrinsic]:
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> Intrinsic:
        return _construct(loader, node, name)

    return construct


for _short, _long in _TAGS.items():
    _Loader.add_constructor(f"!{_short}", _constructor(_long))


def read_yaml(path: Path, what: str) -> Any:
    """Parse one YAML (or JSON) file; `what` names it in errors."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ConfigError([f"{what}: {size} bytes, over the {MAX_FILE_BYTES} bytes limit"])
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{what}: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{what}: not UTF-8 text"]) from None
    try:
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except RecursionError:
        raise ConfigError([f"{what}: nested too deeply (over {MAX_DEPTH} levels)"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError([f"{what}: invalid YAML{at}: {problem}"]) from None
    _check_depth(data, what)
    return data


def _check_depth(data: Any, what: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH (iteratively: no recursion on hostile input).
    Anchors make a graph, not a tree: each node is visited once."""
    seen: set[int] = set()
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ConfigError([f"{what}: nested too deeply (over {MAX_DEPTH} levels)"])
        if isinstance(node, Intrinsic):
            stack.append((node.args, depth + 1))
        elif isinstance(node, dict | list) and id(node) not in seen:
            seen.add(id(node))
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children)
