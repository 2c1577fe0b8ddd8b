"""The Serverless Framework's variables: `${source:address, fallback, ...}` in a serverless.yml.

No maintained Python library resolves them, so this module does, for the sources that make
sense on a machine without the framework: `self:` (paths into the file, `custom` included),
`opt:` (the command's options), `env:` (the environment), `sls:stage`, `aws:region` /
`aws:accountId`, `param:` (the `params` section), and `file(./x.yml):key` for YAML/JSON files
inside the service directory. Fallbacks are quoted strings, numbers, booleans, `null` or
further variables (bare, `self:x`, or wrapped, `${self:x}`); variables nest
(`${self:custom.${opt:stage}.queue}`). A variable alone in a value keeps its value's type; one
inside text is written into it.

What cannot be resolved (an unset `env:` variable without fallback, `ssm:`, `cf:`, `s3:` ...)
becomes an `Unresolved` marker and a warning naming where it is; the translator turns a
marker in a required value into an error. `${AWS::Region}` and `${LogicalId}` (CloudFormation
`Fn::Sub` syntax, no source) are left as written.

Hostile files: a reference cycle, variables nested too deeply, a file outside the service
directory, or a file that expands past MAX_NODES values (YAML aliases) is a ConfigError."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from triggerd.imports.serverless_yaml import Intrinsic, as_intrinsic, read_yaml
from triggerd.types import ConfigError

__all__ = ["MAX_NODES", "Resolver", "Unresolved"]

#: Values a resolved file may hold (aliases let a small file expand exponentially).
MAX_NODES = 200_000
#: References being resolved inside one another at once (self: chains, files, nesting).
MAX_NESTING = 32
#: Files `${file(...)}` may read.
MAX_FILES = 64
DEFAULT_ACCOUNT = "123456789012"

_SOURCE = re.compile(
    r"^(?P<source>[A-Za-z][A-Za-z0-9]*)(?:\((?P<arg>[^)]*)\))?(?::(?P<address>.*))?$"
)
_CFN_SUB = re.compile(r"^(AWS::[A-Za-z]+|[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)?)$")
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")
_KNOWN = frozenset({"self", "opt", "env", "sls", "aws", "param", "file"})
_REMOTE = frozenset({"ssm", "cf", "s3", "secretsmanager", "sls", "aws", "strToBool", "output"})


@dataclass(frozen=True)
class Unresolved:
    """A value whose variable could not be resolved (the warning was already given)."""

    text: str
    reason: str

    def __str__(self) -> str:
        return self.text


# --------------------------------------------------------------------------------------------
# Parsing `${...}`


@dataclass
class _Var:
    """`${p1, p2, ...}`: each parameter is a template (text and nested variables)."""

    params: list[list[str | _Var]] = field(default_factory=list)
    text: str = ""


class _TooDeep(Exception):
    """Variables inside variables beyond MAX_NESTING."""


def _parse(text: str, start: int, inside: bool, depth: int = 0) -> tuple[list[str | _Var], int]:
    """Parts of `text` from `start` up to the end, or (inside a variable) up to the `,` or
    `}` that ends the parameter. Quotes inside a variable protect `,` and `}`."""
    if depth > MAX_NESTING:
        raise _TooDeep
    parts: list[str | _Var] = []
    buf: list[str] = []
    i = start
    quote = ""
    while i < len(text):
        ch = text[i]
        if quote:
            buf.append(ch)
            quote = "" if ch == quote else quote
            i += 1
        elif text.startswith("${", i):
            if buf:
                parts.append("".join(buf))
                buf = []
            var, i = _parse_var(text, i, depth)
            parts.append(var)
        elif inside and ch in ",}":
            break
        else:
            if inside and ch in "'\"":
                quote = ch
            buf.append(ch)
            i += 1
    if buf:
        parts.append("".join(buf))
    return parts, i


def _parse_var(text: str, start: int, depth: int) -> tuple[_Var | str, int]:
    """The variable opening at `start` (`${`); an unclosed one is kept as text."""
    var = _Var()
    i = start + 2
    while True:
        param, i = _parse(text, i, inside=True, depth=depth + 1)
        var.params.append(param)
        if i >= len(text):
            return text[start:], len(text)
        if text[i] == "}":
            var.text = text[start : i + 1]
            return var, i + 1
        i += 1  # the comma


# --------------------------------------------------------------------------------------------
# Resolving


_MISSING = object()


@dataclass(frozen=True)
class _Failure:
    """Why a source gave no value (joined into the warning)."""

    reason: str


class Resolver:
    """Resolves the variables of one serverless.yml (and the files it includes)."""

    def __init__(
        self,
        raw: Any,
        service_dir: Path,
        options: Mapping[str, str],
        environ: Mapping[str, str],
        warn: Callable[[str, str], None],
    ) -> None:
        self.raw = raw
        self.service_dir = service_dir.resolve()
        self.options = options
        self.environ = environ
        self.warn = warn
        self._memo: dict[str, Any] = {}
        self._active: list[str] = []
        self._nodes = 0
        self._files: dict[Path, Any] = {}

    # ---- the tree ------------------------------------------------------------------------

    def resolve_all(self) -> dict[str, Any]:
        """The whole file with every variable resolved (or replaced by an Unresolved)."""
        if not isinstance(self.raw, dict):
            raise ConfigError(["serverless.yml: the top level must be a mapping"])
        try:
            return {str(key): self.path(str(key)) for key in self.raw}
        except RecursionError:
            # Each limit holds alone (nesting, references, files); together they could
            # still recurse past Python's stack: the same error, not a traceback.
            raise ConfigError(
                ["serverless.yml: values and variables nested too deeply to resolve"]
            ) from None

    def path(self, address: str) -> Any:
        """The resolved value at a dotted path of the main file (`custom.queue`), or
        _MISSING when there is nothing there."""
        if address in self._memo:
            return self._memo[address]
        parts = [p for p in address.split(".") if p != ""]
        node: Any = self.raw
        resolved = False
        for n, part in enumerate(parts):
            node = _child(node, part)
            if node is _MISSING or isinstance(node, Unresolved):
                return node
            if not resolved and isinstance(node, str) and "${" in node and n < len(parts) - 1:
                # A variable that gives a mapping: resolve it, then descend into its value.
                node = self.path(".".join(parts[: n + 1]))
                resolved = True
        if not resolved:
            raw = node
            node = self._enter(address, lambda: self.walk(raw, address))
        self._memo[address] = node
        return node

    def _enter(self, key: str, work: Callable[[], Any]) -> Any:
        for active in self._active:
            if active == key or active.startswith(key + "."):
                chain = " -> ".join([*self._active[self._active.index(active) :], key])
                raise ConfigError(
                    [f"serverless.yml: variables refer to each other in a cycle: {chain}"]
                )
        if len(self._active) >= MAX_NESTING:
            raise ConfigError(
                [
                    f"{key}: variables nested more than {MAX_NESTING} deep (through "
                    f"{' -> '.join(self._active[:3])} ...)"
                ]
            )
        self._active.append(key)
        try:
            return work()
        finally:
            self._active.pop()

    def walk(self, node: Any, where: str) -> Any:
        """`node` with its variables resolved; `where` names it in warnings."""
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise ConfigError(
                [f"serverless.yml: over {MAX_NODES} values once expanded (YAML aliases?)"]
            )
        if isinstance(node, str):
            return self.string(node, where) if "${" in node else node
        if isinstance(node, Intrinsic):
            return Intrinsic(node.name, self.walk(node.args, where))
        if isinstance(node, dict):
            out = {
                str(k): self.walk(v, f"{where}.{k}" if where else str(k)) for k, v in node.items()
            }
            return as_intrinsic(out) or out
        if isinstance(node, list):
            return [self.walk(v, f"{where}[{i}]") for i, v in enumerate(node)]
        return node

    # ---- strings -------------------------------------------------------------------------

    def string(self, text: str, where: str) -> Any:
        try:
            parts, _ = _parse(text, 0, inside=False)
        except _TooDeep:
            raise ConfigError(
                [f"{where}: variables nested more than {MAX_NESTING} deep inside one another"]
            ) from None
        if len(parts) == 1 and isinstance(parts[0], _Var):
            return self._var(parts[0], where)
        out: list[str] = []
        for part in parts:
            value = part if isinstance(part, str) else self._var(part, where)
            if isinstance(value, Unresolved):
                return Unresolved(text, value.reason)
            if isinstance(value, dict | list | Intrinsic):
                self.warn(
                    where,
                    f"{part.text if isinstance(part, _Var) else part} is a "
                    "mapping or list and cannot be written into text",
                )
                return Unresolved(text, "a mapping or list inside text")
            out.append(_text(value))
        return "".join(out)

    def _var(self, var: _Var, where: str) -> Any:
        first = _render_plain(var.params[0])
        if first is not None and _CFN_SUB.match(first):
            return var.text  # ${LogicalId}, ${AWS::Region}: CloudFormation Fn::Sub syntax
        reasons: list[str] = []
        for n, param in enumerate(var.params):
            value = self._param(param, where, fallback=n > 0, reasons=reasons)
            if value is not _MISSING and not isinstance(value, Unresolved):
                return value
        reason = "; ".join(reasons) or "no value"
        self.warn(where, f"{var.text} could not be resolved: {reason}")
        return Unresolved(var.text, reason)

    def _param(
        self, param: list[str | _Var], where: str, fallback: bool, reasons: list[str]
    ) -> Any:
        if len(param) == 1 and isinstance(param[0], _Var):
            nested = self._var(param[0], where)
            if isinstance(nested, Unresolved):
                reasons.append(nested.reason)
            return nested
        pieces: list[str] = []
        for part in param:
            value = part if isinstance(part, str) else self._var(part, where)
            if isinstance(value, Unresolved):
                reasons.append(value.reason)
                return _MISSING
            pieces.append(_text(value))
        word = "".join(pieces).strip()
        if fallback:
            literal = _literal(word)
            if literal is not _MISSING:
                return literal
        match = _SOURCE.match(word)
        if fallback and (not match or (match["address"] is None and match["arg"] is None)):
            return word  # a bare word as fallback: taken as text
        if not match:
            reasons.append(f"{word!r} is not a variable source")
            return _MISSING
        value = self._source(match["source"], match["arg"], match["address"], where)
        if isinstance(value, _Failure):
            reasons.append(value.reason)
            return _MISSING
        if value is _MISSING:
            reasons.append(f"{word} has no value")
        return value

    # ---- sources -------------------------------------------------------------------------

    def _source(self, source: str, arg: str | None, address: str | None, where: str) -> Any:
        addr = (address or "").strip()
        if source == "self":
            return self.path(addr) if addr else _Failure("${self:} (the whole file) is not read")
        if source == "opt":
            return self.options.get(addr, _MISSING)
        if source == "env":
            return self.environ.get(addr, _MISSING)
        if source == "sls" and addr == "stage":
            return self.stage()
        if source == "aws" and addr == "region":
            return self.region()
        if source == "aws" and addr == "accountId":
            return self.account_id(where)
        if source == "param":
            return self._param_value(addr)
        if source == "file" and arg is not None:
            return self._file(arg.strip(), addr, where)
        if source in _REMOTE or source not in _KNOWN:
            return _Failure(
                f"{source}:{addr} needs the Serverless Framework or AWS to resolve: give a "
                "fallback (${...,'default'}) or an --opt/environment value"
            )
        return _Failure(f"unknown variable {source}:{addr}")

    def stage(self) -> Any:
        if "stage" in self.options:
            return self.options["stage"]
        provider = self.path("provider.stage")
        return provider if isinstance(provider, str) else "dev"

    def region(self) -> Any:
        if "region" in self.options:
            return self.options["region"]
        provider = self.path("provider.region")
        return provider if isinstance(provider, str) else "us-east-1"

    def account_id(self, where: str) -> str:
        if "accountId" in self.options:
            return self.options["accountId"]
        self.warn(
            where,
            f"${{aws:accountId}}: no account given (--opt accountId=...): {DEFAULT_ACCOUNT}, "
            "triggerd's default account, is used",
        )
        return DEFAULT_ACCOUNT

    def _param_value(self, name: str) -> Any:
        stage = self.stage()
        for scope in (stage, "default"):
            if isinstance(scope, str):
                value = self.path(f"params.{scope}.{name}")
                if value is not _MISSING:
                    return value
        return _MISSING

    def _file(self, name: str, address: str, where: str) -> Any:
        target = (self.service_dir / name).resolve()
        if not target.is_relative_to(self.service_dir):
            raise ConfigError(
                [
                    f"{where}: ${{file({name})}} is outside the service directory "
                    f"{self.service_dir}: refused"
                ]
            )
        if target.suffix not in (".yml", ".yaml", ".json"):
            return _Failure(f"file({name}): only YAML and JSON files are read (code is not run)")
        if not target.is_file():
            return _Failure(f"file({name}) does not exist")
        if target not in self._files:
            if len(self._files) >= MAX_FILES:
                raise ConfigError([f"{where}: more than {MAX_FILES} files included"])
            self._files[target] = read_yaml(target, f"file({name})")
        key = f"file({target})"
        node = self._files[target]
        for part in [p for p in address.split(".") if p]:
            node = _child(node, part)
            if node is _MISSING:
                return _MISSING
        label = f"{key}:{address}" if address else key
        return self._enter(
            label, lambda: self.walk(node, f"file({name}){':' if address else ''}{address}")
        )


def _child(node: Any, part: str) -> Any:
    if isinstance(node, dict):
        return node.get(part, _MISSING)
    if isinstance(node, list) and part.isdigit() and int(part) < len(node):
        return node[int(part)]
    return _MISSING


def _render_plain(param: list[str | _Var]) -> str | None:
    """A parameter that is plain text (no nested variable), stripped; else None."""
    if all(isinstance(p, str) for p in param):
        return "".join(p for p in param if isinstance(p, str)).strip()
    return None


def _quoted(word: str) -> bool:
    return len(word) >= 2 and word[0] == word[-1] and word[0] in "'\""


def _literal(word: str) -> Any:
    """A fallback's literal value: 'text', "text", a number, true/false/null; else _MISSING."""
    if _quoted(word):
        return word[1:-1]
    if _NUMBER.match(word):
        return float(word) if "." in word else int(word)
    if word in ("true", "false"):
        return word == "true"
    if word == "null":
        return None
    return _MISSING


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)
