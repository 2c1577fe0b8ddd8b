"""What every translator returns, and the overrides file they share.

A `Translation` holds the triggerd config as plain data (what `tomllib.load` would return for
the equivalent TOML file: `daemon`, `functions`, `triggers`, ...) so that it goes through the
same validation as a hand-written file, and `Warning`s naming each property of the source
definition that has no triggerd equivalent or was not understood.

Every string in a translation is a literal value: `render_toml` writes each `$` as `$$`, so
the loader's `${VAR}` interpolation gives back exactly the translated value. `${VAR}` in the
overrides file is replaced with the environment when the file is loaded (`load_overrides`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from triggerd.config.load import format_errors, interpolate, read_file
from triggerd.imports.fanout import FanOut
from triggerd.types import ConfigError

__all__ = [
    "FunctionOverride",
    "Overrides",
    "ResourceOverride",
    "Translation",
    "TranslationWarning",
    "load_overrides",
    "render_toml",
]


@dataclass(frozen=True)
class TranslationWarning:
    """A property that was not carried over: where it is (`Resources.Fn.Properties.Events.
    Q.Properties.Foo`, `functions.fn.events[0].sqs.foo`) and why."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class Translation:
    """The triggerd config (TOML-shaped data) and the warnings of one translation."""

    config: dict[str, Any] = field(default_factory=dict)
    warnings: list[TranslationWarning] = field(default_factory=list)
    #: Files the config needs that the definition holds inline (SAM's InlineCode), by path
    #: relative to the definition's directory: `triggerd import` and `run` write them.
    files: dict[str, str] = field(default_factory=dict)
    #: The SNS topics and EventBridge rules the events subscribe functions to.
    fanout: FanOut = field(default_factory=FanOut)

    def warn(self, where: str, message: str) -> None:
        self.warnings.append(TranslationWarning(where, message))


# --------------------------------------------------------------------------------------------
# The overrides file


def _scalar_text(value: Any) -> Any:
    """Numbers and booleans as the text a template or environment would hold (`PORT: 8080`
    in YAML is meant as "8080"); anything else is left for the str check to refuse."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


#: A string value in the overrides file; numbers and booleans are taken as their text.
Text = Annotated[str, BeforeValidator(_scalar_text)]


class ResourceOverride(BaseModel):
    """What to read instead of one AWS resource: a partial triggerd `source` table merged
    over the one the translator made. `type` changes the kind of source (a queue read from
    RabbitMQ, a bucket from a directory, a table's stream from PostgreSQL); the other keys are
    that source type's options (`queue_url`, `endpoint_url`, `path`, `bootstrap_servers`...),
    checked by the config loader like any source table."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: str | None = Field(
        None,
        description="The triggerd source type to use for this resource (default: the one "
        "matching the AWS service: sqs, s3, kinesis, dynamodb_streams, kafka, rabbitmq)",
    )

    @property
    def options(self) -> dict[str, Any]:
        """The source options (every key but `type`)."""
        return dict(self.model_extra or {})


class FunctionOverride(BaseModel):
    """Per-function changes: environment variables merged over the definition's, and any
    other keys of a triggerd `[functions.NAME]` table (interpreter, code, backend, ...)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    environment: dict[str, Text] = Field(default_factory=dict)
    settings: dict[str, Any] = Field(
        default_factory=dict,
        description="Keys of the triggerd function table, set over the translated ones",
    )


class Overrides(BaseModel):
    """The overrides file (YAML or TOML): maps the AWS resources a definition names to local
    ones, and adjusts the daemon, functions and triggers of the translation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    daemon: dict[str, Any] = Field(
        default_factory=dict,
        description="Keys of the triggerd [daemon] table (listen, control_listen, state...)",
    )
    endpoint_url: str | None = Field(
        None,
        description="AWS endpoint (moto, LocalStack) for every AWS source whose resource has "
        "no entry in `resources`",
    )
    region: str | None = Field(None, description="Region of the AWS sources without an entry")
    resources: dict[str, ResourceOverride] = Field(
        default_factory=dict,
        description="By logical id, name or ARN of the AWS resource: what to read instead",
    )
    functions: dict[str, FunctionOverride] = Field(
        default_factory=dict, description="By function name (SAM: logical id)"
    )
    triggers: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="By trigger name (<function>-<event>): keys of the [[triggers]] table set "
        "over the translated ones (enabled, batch_size, on_failure...)",
    )
    parameters: dict[str, Text] = Field(
        default_factory=dict,
        description="Template parameter values (SAM: as --parameter-overrides; the command "
        "line wins)",
    )

    def resource(self, *keys: str | None) -> ResourceOverride | None:
        """The override of the first of `keys` (logical id, name, ARN) that has one."""
        for key in keys:
            if key and key in self.resources:
                return self.resources[key]
        return None


def load_overrides(path: str | Path, environ: Mapping[str, str] | None = None) -> Overrides:
    """Read and check an overrides file (YAML for .yaml/.yml, else TOML), `${VAR}` replaced
    from `environ` (default: the process's). Raises ConfigError, one line per problem naming
    the file and the key."""
    file = Path(path)
    try:
        raw = read_file(file)
    except OSError as exc:
        raise ConfigError([f"{file}: cannot read the overrides file: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{file}: not UTF-8 text: {exc.reason}"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        why = getattr(exc, "problem", None) or "cannot be parsed"
        raise ConfigError([f"{file}: invalid YAML{line}: {why}"]) from None
    except ConfigError as exc:
        lines = [p if p.startswith(str(file)) else f"{file}: {p}" for p in exc.problems]
        raise ConfigError(lines) from None
    data, problems = interpolate(raw, os.environ if environ is None else environ)
    if problems:
        raise ConfigError([f"{file}: {p}" for p in problems])
    try:
        return Overrides.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([f"{file}: {p}" for p in format_errors(exc, Overrides)]) from None


# --------------------------------------------------------------------------------------------
# Writing the config


def _literal(node: Any) -> Any:
    """`node` with `$` written `$$` in every string (the loader reads `$$` as one `$`, so a
    translated value is never taken for a `${VAR}` reference), and None values left out
    (TOML has no null)."""
    if isinstance(node, str):
        return node.replace("$", "$$")
    if isinstance(node, dict):
        return {str(k): _literal(v) for k, v in node.items() if v is not None}
    if isinstance(node, list | tuple):
        return [_literal(v) for v in node if v is not None]
    return node


def render_toml(config: dict[str, Any]) -> str:
    """The TOML text of a translated config, which `triggerd validate` and `run` read back
    as exactly `config`."""
    import tomli_w

    return tomli_w.dumps(_literal(config))


def apply_trigger_overrides(
    triggers: list[dict[str, Any]], overrides: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """The overrides file's `triggers.NAME` keys over the translated triggers, their
    `source` and `on_failure` tables merged key by key (an override names the keys it
    changes); the names that match no trigger are returned."""
    by_name = {str(t["name"]): t for t in triggers}
    for name, extra in overrides.items():
        trigger = by_name.get(name)
        if trigger is None:
            continue
        merged = dict(extra)
        if isinstance(trigger.get("source"), dict) and isinstance(extra.get("source"), dict):
            merged["source"] = {**trigger["source"], **extra["source"]}
        trigger.update(merged)
    return [name for name in overrides if name not in by_name]


#: Where failed events go when an on-failure destination has no local equivalent.
DLQ_DIR = "triggerd-dlq"


def warn_disabled(warn: Callable[[str, str], None], where: str, what: str, key: str) -> None:
    """The warning of a trigger written disabled: an AWS resource with no local one (no
    override, no endpoint_url), which must not be read on AWS by surprise."""
    warn(
        where,
        f"no local {what} for {key}: the trigger is disabled (map it in the overrides "
        f"file's resources.{key}, or set endpoint_url there for moto or LocalStack)",
    )


def file_destination(
    out: Translation, where: str, trigger: str, why: str, beside: str = "the template"
) -> dict[str, Any]:
    """A JSON Lines file for an on-failure destination with no local equivalent, so that no
    failed event is lost."""
    path = f"{DLQ_DIR}/{trigger}.jsonl"
    out.warn(where, f"{why}: failed events are written to {path} (beside {beside})")
    return {"type": "file", "path": path}


def warn_local_broker(warn: Callable[[str, str], None], where: str, key: str, queue: str) -> None:
    """The warning of an Amazon MQ broker with no override: its queue is read from the
    RabbitMQ on localhost:5672, never from the broker on AWS."""
    warn(
        where,
        f"no override for {key}: reading queue {queue!r} from the RabbitMQ on "
        f"localhost:5672 (map it in the overrides file's resources.{key})",
    )


def _loopback(server: str) -> bool:
    host = server.rsplit(":", 1)[0].strip("[]").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


def warn_remote_kafka(
    warn: Callable[[str, str], None], where: str, servers: list[str], key: str
) -> None:
    """The warning of a self-managed Kafka read at the servers the definition names (no
    override) when one is not on this machine: the trigger's consumer group reads and
    commits offsets on that cluster, beside (or instead of) the deployed function's."""
    remote = [s for s in servers if not _loopback(s)]
    if remote:
        warn(
            where,
            f"no override for {key}: reading the Kafka at {', '.join(remote)} named here, "
            "whose consumer group then commits offsets on that cluster (map it in the "
            f"overrides file's resources.{key} with bootstrap_servers to read a local broker)",
        )


def one_shard_reader_per_window(
    source: dict[str, Any], warn: Callable[[str, str], None], where: str
) -> None:
    """A tumbling window with a ParallelizationFactor over 1 (valid on AWS, whose window
    state is kept per shard and partition key): triggerd keeps a window's state per shard,
    so the window is kept and the factor set to 1."""
    factor = source.get("parallelization_factor")
    if source.get("tumbling_window_s") and isinstance(factor, int) and factor > 1:
        source["parallelization_factor"] = 1
        warn(
            where,
            f"{factor} with a tumbling window: 1 here (a window's state is kept per shard, "
            "read by one batch at a time)",
        )
