"""The state one serverless.yml translation shares between its parts (functions, events), and
the small readers they use for values: each takes the key path it reads (for warnings),
skips a value whose variable was not resolved (its warning was given when it was resolved),
and refuses a required one."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from triggerd.imports.common import Translation, file_destination, warn_disabled
from triggerd.imports.serverless_refs import (
    OverridesLike,
    Ref,
    RefContext,
    ResourceOverrideLike,
    reference,
)
from triggerd.imports.serverless_vars import Unresolved
from triggerd.types import ConfigError

__all__ = ["SlsContext"]

_NOT_LOCAL = "has no local equivalent and is not carried over"
#: Source and destination types that talk to AWS (or an emulator at `endpoint_url`).
_AWS_TYPES = frozenset({"sqs", "s3", "kinesis", "dynamodb_streams"})
_WHAT = {"sqs": "queue", "s3": "bucket", "kinesis": "stream", "dynamodb_streams": "stream"}


@dataclass
class SlsContext:
    """One translation: the resolved file, where it lives, the overrides and the output."""

    data: dict[str, Any]
    service_dir: Path
    overrides: OverridesLike | None
    region: str
    account: str
    stage: str
    out: Translation = field(default_factory=Translation)
    #: The AWS resources the event being translated reads with no local counterpart (no
    #: override, no endpoint_url): its triggers are written disabled, as SAM's are.
    unmapped: list[tuple[str, str]] = field(default_factory=list)
    #: On-failure tables that stand for a file of the trigger they end up in, with the
    #: (where, why) of the warning.
    pending_files: list[tuple[dict[str, Any], str, str]] = field(default_factory=list)

    def warn(self, where: str, message: str) -> None:
        """A warning, once (provider settings are read for every function)."""
        if not any(w.where == where and w.message == message for w in self.out.warnings):
            self.out.warn(where, message)

    @property
    def provider(self) -> dict[str, Any]:
        value = self.data.get("provider")
        return value if isinstance(value, dict) else {}

    @property
    def refs(self) -> RefContext:
        resources = self.data.get("resources")
        declared = resources.get("Resources") if isinstance(resources, dict) else None
        return RefContext(
            resources=declared if isinstance(declared, dict) else {},
            region=self.region,
            account=self.account,
            warn=self.warn,
        )

    def reference(self, value: Any, kind: str, where: str) -> Ref | None:
        return reference(value, kind, where, self.refs)

    # ---- overrides -----------------------------------------------------------------------

    def override(self, *keys: str | None) -> ResourceOverrideLike | None:
        return self.overrides.resource(*keys) if self.overrides is not None else None

    def local_source(
        self, ref: Ref | None, default: dict[str, Any] | None, kind_type: str
    ) -> dict[str, Any] | None:
        """The source table for the resource `ref` names: its override's options set over
        `default` (or replacing it when the override changes the type); without one,
        `default` with the overrides' AWS endpoint and region (which are for the resources
        without an entry). None when neither exists."""
        entry = self.override(*ref.keys()) if ref is not None else None
        if entry is None:
            if default is None:
                return None
            if not self.reaches_local(default) and ref is not None:
                self.unmapped.append((_WHAT.get(str(default["type"]), "resource"), ref.text))
            return self.aws_defaults(default)
        table = self.entry_table(entry, default, kind_type)
        if not self.reaches_local(table) and ref is not None:
            # An entry that only tunes an AWS source (poll_interval_s...) and a file with no
            # endpoint_url: it would read AWS itself.
            self.unmapped.append((_WHAT.get(str(table["type"]), "resource"), ref.text))
        return table

    def entry_table(
        self, entry: ResourceOverrideLike, default: dict[str, Any] | None, kind_type: str
    ) -> dict[str, Any]:
        """An override's options over `default` (or replacing it for another type); an AWS
        source that names no local endpoint of its own gets the overrides' one."""
        given = entry.type or kind_type
        if default is None or given != default.get("type"):
            table = {"type": given, **entry.options}
        else:
            table = {**default, **entry.options}
        return table if self.names_endpoint(table) else self.aws_defaults(table)

    def reaches_local(self, table: dict[str, Any]) -> bool:
        """False for an AWS source or destination with no endpoint_url, here or in the
        overrides file: it would be read on AWS itself."""
        if self.names_endpoint(table):
            return True
        return self.overrides is not None and bool(self.overrides.endpoint_url)

    @staticmethod
    def names_endpoint(table: dict[str, Any]) -> bool:
        """True for a table that is no AWS source, or that names its endpoint: endpoint_url,
        or an SQS queue_url whose host is not AWS's (the SQS source's endpoint then)."""
        if table.get("type") not in _AWS_TYPES or table.get("endpoint_url"):
            return True
        url = table.get("queue_url") if table.get("type") == "sqs" else None
        if not isinstance(url, str):
            return False
        return not (urlsplit(url).hostname or "").endswith(".amazonaws.com")

    def pending_file(self, where: str, why: str) -> dict[str, Any]:
        """An on-failure file destination, named after its trigger once it has a name
        (`settle`)."""
        table: dict[str, Any] = {"type": "file", "path": ""}
        self.pending_files.append((table, where, why))
        return table

    def settle(self, trig: dict[str, Any], where: str) -> None:
        """A translated trigger: disabled when its event reads an AWS resource with no
        local counterpart; its on-failure file named after it."""
        for what, key in self.unmapped:
            trig["enabled"] = False
            warn_disabled(self.warn, where, what, key)
        table = trig.get("on_failure")
        for pending, at, why in self.pending_files:
            if pending is table:
                name = str(trig["name"])
                trig["on_failure"] = file_destination(self.out, at, name, why, "serverless.yml")

    def aws_defaults(self, table: dict[str, Any]) -> dict[str, Any]:
        """An AWS source or destination with the overrides' `endpoint_url` and `region`
        where it sets none (moto, LocalStack)."""
        if self.overrides is None or table.get("type") not in _AWS_TYPES:
            return table
        out = dict(table)
        if self.overrides.endpoint_url and "endpoint_url" not in out:
            out["endpoint_url"] = self.overrides.endpoint_url
        if self.overrides.region and "region" not in out:
            out["region"] = self.overrides.region
        return out

    def rest(self, mapping: Mapping[str, Any], handled: Iterable[str], where: str) -> None:
        """A warning for every key of `mapping` not in `handled`."""
        known = set(handled)
        for key in mapping:
            if key not in known:
                self.warn(f"{where}.{key}", _NOT_LOCAL)

    # ---- values --------------------------------------------------------------------------

    def required_str(self, value: Any, where: str) -> str:
        if isinstance(value, Unresolved):
            raise ConfigError([f"{where}: required, but {value.text} could not be resolved"])
        if not isinstance(value, str) or not value:
            raise ConfigError([f"{where}: required (a non-empty string)"])
        return value

    def text(self, value: Any, where: str) -> str | None:
        if value is None or isinstance(value, Unresolved):
            return None
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str | int | float):
            return str(value)
        self.warn(where, f"expected text, not {type(value).__name__}: not carried over")
        return None

    def integer(self, value: Any, where: str) -> int | None:
        if value is None or isinstance(value, Unresolved):
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        self.warn(where, f"expected a whole number, not {value!r}: not carried over")
        return None

    def number(self, value: Any, where: str) -> float | None:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if value is not None and not isinstance(value, Unresolved):
            self.warn(where, f"expected a number, not {value!r}: not carried over")
        return None

    def boolean(self, value: Any, where: str) -> bool | None:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if value is not None and not isinstance(value, Unresolved):
            self.warn(where, f"expected true or false, not {value!r}: not carried over")
        return None

    def plain(self, value: Any, where: str) -> Any:
        """Data to copy as is (filter patterns, schedule input): None, with a warning, when
        it holds an unresolved variable or a CloudFormation intrinsic."""
        problem = _impure(value)
        if problem is not None:
            self.warn(where, f"holds {problem}, which cannot be resolved here: not carried over")
            return None
        return value


def _impure(value: Any) -> str | None:
    if isinstance(value, Unresolved):
        return value.text
    if isinstance(value, dict):
        for item in value.values():
            found = _impure(item)
            if found:
                return found
    elif isinstance(value, list):
        for item in value:
            found = _impure(item)
            if found:
                return found
    elif not isinstance(value, str | int | float | bool | type(None)):
        return str(value)
    return None
