"""The bases of the config models: every config section a source, destination or backend
declares is a `Model`, and a config path is one of the annotated `str` types here (resolved
against the config file's directory, checked by `triggerd validate`).

`triggerd.types` names them too, importing this module (and pydantic) only when one is
first used: a command that reads no config (`generate-event`) does not pay for pydantic.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Protocol

from pydantic import AfterValidator, BaseModel, ConfigDict, PrivateAttr, ValidationInfo

__all__ = [
    "CodePath",
    "ConfigPath",
    "DestinationConfig",
    "FunctionConfig",
    "InputDir",
    "InputFile",
    "Model",
    "OutputDir",
    "OutputFile",
    "PathCheck",
    "SourceConfig",
    "TriggerSettings",
    "empty_list",
    "resolve_config_path",
]


class Model(BaseModel):
    """Base for every config model: unknown keys are errors, values are validated on assignment.
    No float is inf or nan (TOML has both): a delay, timeout or interval of inf waited for
    ever."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True, allow_inf_nan=False)


def empty_list() -> list[Any]:
    """`default_factory` of a config model's list field. Not `list` itself: pydantic reads a
    factory's signature, and a builtin's is parsed from text by `inspect`, which compiles
    `tokenize`'s regular expressions on first use (about 3 ms of every command that loads a
    config); a Python function's comes from its code."""
    return []


def resolve_config_path(value: str, info: ValidationInfo) -> str:
    base = info.context.get("base_dir") if isinstance(info.context, dict) else None
    path = Path(value).expanduser()
    if base is not None and not path.is_absolute():
        path = Path(base) / path
    return str(path)


#: A filesystem path in the config: relative paths are resolved against the config file's
#: directory when the config is loaded.
ConfigPath = Annotated[str, AfterValidator(resolve_config_path)]


@dataclass(frozen=True, slots=True)
class PathCheck:
    """Metadata on a config path saying what `triggerd validate` checks on this machine:
    "file" a readable file, "dir" a directory, "code" a directory or a .zip file, "writable"
    a file that can be created or appended to (it, or the nearest existing directory above
    it, is writable), "writable_dir" a directory the daemon creates or writes in (it, or
    the nearest existing directory above it, is a writable directory)."""

    kind: Literal["file", "dir", "code", "writable", "writable_dir"]


#: Config paths that must exist when the daemon starts, or that it must be able to write.
InputFile = Annotated[str, AfterValidator(resolve_config_path), PathCheck("file")]
InputDir = Annotated[str, AfterValidator(resolve_config_path), PathCheck("dir")]
CodePath = Annotated[str, AfterValidator(resolve_config_path), PathCheck("code")]
OutputFile = Annotated[str, AfterValidator(resolve_config_path), PathCheck("writable")]
OutputDir = Annotated[str, AfterValidator(resolve_config_path), PathCheck("writable_dir")]


class SourceConfig(Model):
    """Base for a source's config model. Subclasses add `type: Literal["<name>"]`.

    Class variables tell the pipeline how the source is invoked.
    """

    #: "sync": poll source following the event-source-mapping rules (batches, partial failures).
    #: "async": push source following the asynchronous-invocation rules (durable queue).
    invocation: ClassVar[Literal["sync", "async"]] = "async"
    #: For sync sources: who retries a failed record. "source" = nack and let the system
    #: redeliver (SQS, RabbitMQ); "pipeline" = retry in place, blocking the key (streams, Kafka).
    retry_owner: ClassVar[Literal["source", "pipeline"]] = "pipeline"
    #: Defaults AWS uses for this source kind.
    default_batch_size: ClassVar[int] = 10
    max_batch_size: ClassVar[int] = 10_000
    default_batching_window_s: ClassVar[float] = 0.0
    #: AWS requires `batching_window_s >= 1` when `batch_size` is above this (SQS: 10).
    window_required_above_batch_size: ClassVar[int | None] = None
    #: Every batch holds records of one ordering key only (a Kafka partition, a stream
    #: shard), so keys run in parallel and a failure in one never holds back another.
    batch_per_key: ClassVar[bool] = False
    #: With an on-failure destination, infinite retries (-1) become this many (AWS's Kafka
    #: mappings apply 10); None keeps them infinite.
    retry_cap_with_on_failure: ClassVar[int | None] = None

    @property
    def limits_attempts(self) -> bool:
        """The source itself ends a failing message's retries after a set number of attempts
        (RabbitMQ's `dead_letter_after_attempts`): queue triggers then split failed batches by
        default, so that limit is reached by the failing message alone."""
        return False

    #: `triggerd record`: acknowledging this source's records changes nothing at the source
    #: (a webhook only answers its caller), so a recording passes acks through; otherwise
    #: received records are held unsettled and given back (nack) when the recording ends.
    record_passes_acks: ClassVar[bool] = False

    def record_refusal(self) -> str | None:
        """`triggerd record`: why recording this source, as configured, would change it (one
        line); None when its records can be held and given back untouched."""
        return None

    def for_recording(self, trigger: str) -> SourceConfig:
        """`triggerd record`: this config as a recording reads the source, leaving what the
        trigger itself uses untouched (Kafka: a consumer group of its own)."""
        return self

    #: Set by `recording_copy` only (not a config key): see `recording`.
    _recording: bool = PrivateAttr(default=False)

    @property
    def recording(self) -> bool:
        """The source runs for `triggerd record`: it must change nothing at its system
        (no commits, no slot advances, no deletes, nothing created), whatever its acks."""
        return self._recording

    def recording_copy(self, trigger: str) -> SourceConfig:
        """`for_recording`'s config, marked `recording` for the source to read."""
        config = self.for_recording(trigger).model_copy()
        config._recording = True
        return config

    def http_routes(self) -> list[tuple[str, str]]:
        """The (method, route template) pairs this source serves on the public listener
        (a webhook's), so that config validation refuses the ones another route took."""
        return []

    def ignored_trigger_settings(self) -> dict[str, str]:
        """Trigger keys this source, as configured, would accept and then ignore, each with
        the reason: config validation refuses them when they are set."""
        return {}

    def trigger_problem(self, trigger: TriggerSettings) -> str | None:
        """A combination of this source's settings and its trigger's that would be accepted
        and then do nothing (or contradict itself): config validation refuses it with this
        one-line reason."""
        return None


class DestinationConfig(Model):
    """Base for an on-failure destination's config model (`type: Literal[...]`)."""


class TriggerSettings(Protocol):
    """The trigger settings a source's `trigger_problem` may look at."""

    @property
    def maximum_concurrency(self) -> int: ...

    @property
    def maximum_retry_attempts(self) -> int | None: ...

    @property
    def on_failure_config(self) -> DestinationConfig | None: ...

    @property
    def model_fields_set(self) -> set[str]: ...


class FunctionConfig(Model):
    """Settings every backend shares. Backends subclass it and add `backend: Literal[...]`."""

    timeout_s: float = 3.0
    memory_mb: int = 128
    reserved_concurrency: int | None = None
    description: str = ""
