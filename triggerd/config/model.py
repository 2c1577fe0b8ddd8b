"""The config file's pydantic models, built from the installed plugins so that every source,
destination and backend validates its own section. Reading, interpolating and validating a
file is `load`."""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Annotated, Any, Union, cast
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from triggerd.config.access import AccessKey, is_loopback
from triggerd.config.plugins import Kind, Registry
from triggerd.events.filters import FilterPatternError, compile_filters
from triggerd.types import (
    ConfigError,
    ConfigPath,
    DestinationConfig,
    FunctionConfig,
    InputFile,
    Model,
    OutputDir,
    SourceConfig,
    empty_list,
    resolve_config_path,
)

if TYPE_CHECKING:
    from triggerd.config.buses import EventBusConfig
    from triggerd.config.sns import SnsSettings

FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

#: Top-level sections whose models `build_config_model` imports and builds only for a config
#: that has them (and for the schema): `[sns]` and `[[event_buses]]` hold more models than
#: the rest of the core's config together, a tenth of the start-up of every command that
#: reads a config.
OPTIONAL_SECTIONS = ("event_buses", "sns")


def default_state_url(environ: Mapping[str, str]) -> str:
    """The store in systemd's StateDirectory (`$STATE_DIRECTORY`, the first one if several)
    when the daemon runs under a unit that has one, else `triggerd-state/state.db`."""
    directory = environ.get("STATE_DIRECTORY", "").split(":")[0]
    if directory.startswith("/"):
        return f"sqlite:///{directory}/state.db"
    return "sqlite:///triggerd-state/state.db"


#: The daemon's own endpoints, as (method, route template): on every listener, and on the
#: listeners that serve the control endpoints (`triggerd.http.server.add_daemon_routes`
#: registers exactly these; a test holds them together).
PUBLIC_ENDPOINTS: tuple[tuple[str, str], ...] = (("GET", "/healthz"), ("HEAD", "/healthz"))
CONTROL_ENDPOINTS: tuple[tuple[str, str], ...] = (
    ("GET", "/statusz"),
    ("GET", "/readyz"),
    ("HEAD", "/readyz"),
    ("GET", "/metrics"),
    ("HEAD", "/metrics"),
    ("POST", "/2015-03-31/functions/{function}/invocations"),
    ("GET", "/2015-03-31/functions/"),
    ("POST", "/control/triggers/{name}/pause"),
    ("POST", "/control/triggers/{name}/resume"),
    ("POST", "/control/reload"),
    ("POST", "/"),
)


def _route_shape(template: str) -> tuple[str, ...]:
    """A route template's segments with every parameter blanked, as the route table compares
    them (`triggerd.http.templates.RouteTemplate.shape`, which config may not import)."""
    stripped = template.strip("/")
    return tuple("{}" if s.startswith("{") else s for s in stripped.split("/") if stripped)


_LISTEN = r"^(|\[[0-9A-Fa-f:.]+\]:\d{1,5}|[^:\s\[\]]+:\d{1,5})$"


class DaemonSettings(Model):
    state: str = Field(
        default_factory=lambda: default_state_url(os.environ),
        description="State store URL: sqlite:///relative.db, sqlite:////absolute.db, or "
        "postgresql://user:password@host:port/database (shared by several daemons); default "
        "state.db in systemd's $STATE_DIRECTORY when set, else triggerd-state/state.db",
    )
    listen: str | None = Field(
        "127.0.0.1:9070",
        pattern=_LISTEN,
        description="host:port of the public listener: webhooks and /healthz; empty to disable",
    )
    control_listen: str | None = Field(
        "127.0.0.1:9071",
        pattern=_LISTEN,
        description="host:port of the control listener: the Invoke API, /metrics, /readyz, "
        "/statusz and /healthz (same TLS settings as listen); empty to disable",
    )
    control_on_public: bool = Field(
        False,
        description="Also serve the control endpoints on the public listener (listen)",
    )
    access_keys: list[AccessKey] = Field(
        default_factory=empty_list,
        description="Access keys for AWS Signature Version 4 on the AWS-compatible APIs; "
        "when set, every call to them must be signed with one",
    )
    allow_unauthenticated: bool = Field(
        False,
        description="Serve the AWS-compatible APIs without signatures on a listener that is "
        "not loopback (refused otherwise when no access_keys are set)",
    )
    metrics_token: SecretStr | None = Field(
        None,
        min_length=16,
        description="Bearer token that lets peers not on loopback read /metrics, /readyz, "
        "/statusz and /healthz's detail on the control listener (Prometheus's "
        "authorization/bearer_token); never logged",
    )
    tls_cert_file: InputFile | None = Field(
        None, description="PEM certificate chain: serve the listen address over HTTPS"
    )
    tls_key_file: InputFile | None = Field(
        None, description="PEM private key (if not in tls_cert_file)"
    )
    region: str = "us-east-1"
    account_id: str = Field("123456789012", pattern=r"^\d{12}$")
    shutdown_timeout_s: float = Field(30.0, gt=0, le=3600)
    lease_timeout_s: float | None = Field(
        None,
        ge=1,
        le=86_400,
        description="How long a claim on an async-queue event lasts without being extended "
        "(the daemon extends it every third of it while it runs): a dead daemon's claimed "
        "events are invoked by another one after at most this long (PostgreSQL store). "
        "Default: twice the function's timeout_s plus 60",
    )
    singleton_lease_timeout_s: float = Field(
        15.0,
        ge=1,
        le=3600,
        description="Lease of a source that runs on one daemon at a time (schedules, S3 poll "
        "mode, PostgreSQL CDC, each Kinesis / DynamoDB Streams shard) on a PostgreSQL store: "
        "the holder renews it every third of this and stops by itself after three quarters of "
        "it without a renewal; "
        "another daemon takes over after at most this long once the holder is gone (see "
        "docs/cluster.md)",
    )
    log_level: str = Field("INFO", pattern=r"^(?i:debug|info|warning|error)$")
    log_format: str = Field("auto", pattern=r"^(auto|json|text)$")
    work_dir: OutputDir | None = Field(
        None,
        description="Runtime files and function scratch space (default: run/ beside the SQLite "
        "state file; with a PostgreSQL store, triggerd-<pid> in the temp directory)",
    )
    runtimes_dir: ConfigPath | None = Field(
        None,
        description="Packages the runtimes provide (boto3 per Python version), shared by the "
        "functions (default: $TRIGGERD_RUNTIMES_DIR, else <work_dir>/runtimes)",
    )

    # Every listener the daemon opens (docs/listener.md, "Limits and timeouts").
    http_header_timeout_s: float = Field(
        10.0,
        gt=0,
        le=600,
        description="A request's headers must arrive within this long of the connection "
        "opening, or of the first byte of a kept-alive connection's next request (else 408)",
    )
    http_body_timeout_s: float = Field(
        20.0,
        gt=0,
        le=3600,
        description="Time to receive a request body, extended by 1 s for every "
        "http_body_min_bytes_per_s bytes received (else 408)",
    )
    http_body_min_bytes_per_s: int = Field(
        500,
        ge=1,
        description="The body rate each extra second of http_body_timeout_s is granted for",
    )
    http_idle_timeout_s: float = Field(
        60.0, gt=0, le=3600, description="Close a kept-alive connection idle this long"
    )
    http_max_connections: int = Field(
        1024,
        ge=1,
        le=1_000_000,
        description="Open connections per listener; more are answered 503 and closed",
    )

    @field_validator("state")
    @classmethod
    def _state_relative_to_config(cls, value: str, info: ValidationInfo) -> str:
        """`sqlite:///rel.db` is relative to the config file, like every other path in it;
        the URL must name a store this build has."""
        from triggerd.state.factory import check_state_url

        prefix = "sqlite:///"
        rest = value[len(prefix) :]
        if value.startswith(prefix) and not rest.startswith("/") and rest not in ("", ":memory:"):
            value = prefix + resolve_config_path(rest, info)
        try:
            check_state_url(value)  # parses only; opens nothing
        except ConfigError as exc:
            raise ValueError(
                "; ".join(p.removeprefix("daemon.state: ") for p in exc.problems)
            ) from None
        return value

    @model_validator(mode="after")
    def _tls_needs_a_certificate(self) -> DaemonSettings:
        if self.tls_key_file and not self.tls_cert_file:
            raise ValueError("daemon.tls_key_file: set tls_cert_file too")
        return self

    @field_validator("listen", "control_listen")
    @classmethod
    def _port_in_range(cls, value: str | None) -> str | None:
        if value and not 0 <= int(value.rpartition(":")[2]) <= 65535:
            raise ValueError("port must be 0-65535")
        return value or None

    @property
    def control_addresses(self) -> list[str]:
        """The listen addresses that serve the control endpoints."""
        found = [self.control_listen] if self.control_listen else []
        if self.control_on_public and self.listen:
            found.append(self.listen)
        return found

    @model_validator(mode="after")
    def _control_surface(self) -> DaemonSettings:
        problems = []
        if self.control_on_public and not self.listen:
            problems.append("control_on_public: there is no public listener (listen is empty)")
        if self.listen and self.listen == self.control_listen and not self.listen.endswith(":0"):
            problems.append(
                f"control_listen: {self.listen} is also listen: give the control listener its "
                'own address or set control_listen = "" and control_on_public = true'
            )
        ids = [k.access_key_id for k in self.access_keys]
        if len(set(ids)) != len(ids):
            problems.append("access_keys: an access_key_id appears twice")
        for i, key in enumerate(self.access_keys):
            problems += [
                f"access_keys.{i}.resources: {p}"
                for p in key.resource_problems(self.region, self.account_id)
            ]
        exposed = [a for a in self.control_addresses if not is_loopback(a)]
        if self.access_keys:
            if not self.control_addresses:
                problems.append("access_keys: no listener serves the control endpoints")
            if self.allow_unauthenticated:
                problems.append(
                    "allow_unauthenticated: access_keys are set, so every call must be signed"
                )
        elif exposed and not self.allow_unauthenticated:
            problems.append(
                f"access_keys: the Invoke API would be served on {exposed[0]}, which is not "
                "loopback, without authentication: add [[daemon.access_keys]] (AWS Signature "
                "Version 4) or set allow_unauthenticated = true"
            )
        elif self.allow_unauthenticated and not exposed:
            problems.append(
                "allow_unauthenticated: the control endpoints are served on loopback only, "
                "where signatures are optional anyway"
            )
        if self.metrics_token is not None and not exposed:
            problems.append(
                "metrics_token: the control endpoints are served on loopback only, where every "
                "peer is served without it"
            )
        if problems:
            raise ValueError("; ".join(f"daemon.{p}" for p in problems))
        return self


class OtelSettings(Model):
    """`[telemetry.otel]`: spans per batch and per invocation, exported over OTLP/HTTP
    (needs the `otel` extra)."""

    endpoint: str = Field(
        pattern=r"^https?://[^\s/?#]+[^\s]*$",
        description="OTLP/HTTP traces URL, e.g. http://127.0.0.1:4318/v1/traces; a URL with "
        "no path (http://127.0.0.1:4318) gets /v1/traces, as OTEL_EXPORTER_OTLP_ENDPOINT does",
    )
    headers: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="HTTP headers sent with every export (e.g. an Authorization token); "
        "secret, never logged",
    )
    service_name: str = Field("triggerd", min_length=1, description="The spans' service.name")

    @field_validator("endpoint")
    @classmethod
    def _traces_path(cls, value: str) -> str:
        # A collector's base URL alone would be posted to "/" and answered 404.
        url = urlsplit(value)
        if url.path in ("", "/"):
            return urlunsplit(url._replace(path="/v1/traces"))
        return value


class TelemetrySettings(Model):
    otel: OtelSettings | None = Field(None, description="OpenTelemetry tracing; off when absent")


class TriggerBase(Model):
    """Event-source-mapping settings, in Lambda's vocabulary. `source` and `on_failure` are
    filled in from the installed plugins by `build_config_model`."""

    name: str | None = Field(None, description="Unique name; default <function>-<index>")
    function: str
    enabled: bool = True
    batch_size: int | None = Field(None, ge=1, description="Default: the source's AWS default")
    batching_window_s: float | None = Field(None, ge=0, le=300)
    maximum_concurrency: int = Field(4, ge=1, le=1000, description="Batches in flight at once")
    report_batch_item_failures: bool = False
    filters: list[dict[str, Any] | str] = Field(default_factory=empty_list)
    maximum_retry_attempts: int | None = Field(
        None, description="async sources: 0-2 (default 2); streams: -1 (infinite)-10000"
    )
    maximum_record_age_s: float = Field(-1, description="Poll sources: -1 or 60-604800")
    maximum_event_age_s: float = Field(21600, description="Async sources: 60-21600")
    bisect_batch_on_function_error: bool | None = Field(
        None,
        description="Split a batch that failed as a whole (function error or timeout) and retry "
        "the halves, down to single records, so a bad record fails alone. Streams, Kafka, CDC: "
        "default false, as on AWS. SQS, RabbitMQ: default true when triggerd ends retries "
        "(maximum_retry_attempts with on_failure, or the source's own attempt limit), with or "
        "without report_batch_item_failures (a batch the function answered is never split)",
    )
    retry_base_delay_s: float | None = Field(
        None, gt=0, description="First retry delay; doubles each attempt (async default 60)"
    )
    retry_max_delay_s: float = Field(300, gt=0)

    @property
    def source_config(self) -> SourceConfig:
        return cast(SourceConfig, getattr(self, "source"))  # noqa: B009

    @property
    def on_failure_config(self) -> DestinationConfig | None:
        return cast(DestinationConfig | None, getattr(self, "on_failure", None))

    @property
    def is_async(self) -> bool:
        return self.source_config.invocation == "async"

    @property
    def effective_batch_size(self) -> int:
        return self.batch_size or self.source_config.default_batch_size

    @property
    def effective_window_s(self) -> float:
        if self.batching_window_s is not None:
            return self.batching_window_s
        return self.source_config.default_batching_window_s

    @property
    def effective_retry_attempts(self) -> int:
        attempts = self.maximum_retry_attempts
        if attempts is None:
            attempts = 2 if self.is_async else -1
        cap = self.source_config.retry_cap_with_on_failure
        if attempts == -1 and cap is not None and self.on_failure_config is not None:
            return cap
        return attempts

    @property
    def effective_bisect(self) -> bool:
        """Whether a wholly failed batch is split. Queue sources split by default wherever
        triggerd ends a message's retries, so only a message that failed on its own reaches
        the destination (on AWS, SQS redrive counts receives per message, not per batch).
        Partial batch responses do not change that: only a batch whose invocation raised or
        timed out, with no response to trust, is split."""
        if self.bisect_batch_on_function_error is not None:
            return self.bisect_batch_on_function_error
        src = self.source_config
        if src.retry_owner != "source":
            return False
        with_destination = self.on_failure_config is not None and self.effective_retry_attempts >= 0
        return with_destination or src.limits_attempts

    @property
    def effective_base_delay_s(self) -> float:
        if self.retry_base_delay_s is not None:
            return self.retry_base_delay_s
        return 60.0 if self.is_async else 1.0

    @model_validator(mode="after")
    def _check(self) -> TriggerBase:
        src = self.source_config
        if self.batch_size is not None and self.batch_size > src.max_batch_size:
            raise ValueError(
                f"batch_size {self.batch_size} is over this source's maximum {src.max_batch_size}"
            )
        ignored = src.ignored_trigger_settings()
        for key in sorted(ignored.keys() & self.model_fields_set):
            raise ValueError(f"{key}: {ignored[key]}")
        problem = src.trigger_problem(self)
        if problem:
            raise ValueError(problem)
        if self.is_async:
            _check_async_limits(self)
        else:
            _check_sync_limits(self)
            if src.retry_owner == "source":
                _check_queue_settings(self)
        try:
            compile_filters(self.filters)
        except FilterPatternError as exc:
            raise ValueError(f"filters: {exc}") from exc
        return self


#: Poll-source settings that mean nothing to an asynchronous (push) source.
_SYNC_ONLY = (
    "batch_size",
    "batching_window_s",
    "report_batch_item_failures",
    "maximum_record_age_s",
    "bisect_batch_on_function_error",
)


def _check_async_limits(t: TriggerBase) -> None:
    if t.maximum_retry_attempts is not None and not 0 <= t.maximum_retry_attempts <= 2:
        raise ValueError("maximum_retry_attempts must be 0-2 for an asynchronous source")
    if not 60 <= t.maximum_event_age_s <= 21600:
        raise ValueError("maximum_event_age_s must be 60-21600")
    unused = [k for k in _SYNC_ONLY if k in t.model_fields_set]
    if unused:
        raise ValueError(
            f"{', '.join(unused)}: only poll sources use this; this source is invoked "
            "asynchronously, one event at a time"
        )


def _check_sync_limits(t: TriggerBase) -> None:
    limit = t.source_config.window_required_above_batch_size
    if limit is not None and t.effective_batch_size > limit and t.effective_window_s < 1:
        raise ValueError(
            f"batch_size above {limit} needs batching_window_s of at least 1 (as AWS requires)"
        )
    if "maximum_event_age_s" in t.model_fields_set:
        raise ValueError(
            "maximum_event_age_s: only asynchronous sources use this; "
            "poll sources have maximum_record_age_s"
        )
    if t.maximum_retry_attempts is not None and not -1 <= t.maximum_retry_attempts <= 10000:
        raise ValueError("maximum_retry_attempts must be -1 (infinite) to 10000")
    age = t.maximum_record_age_s
    if age != -1 and not 60 <= age <= 604800:
        raise ValueError("maximum_record_age_s must be -1 (infinite) or 60-604800")


#: Retry settings a queue source (SQS, RabbitMQ) has no use for: failed messages go back to
#: the queue, which redelivers them; nothing waits in triggerd or ages out of it.
_IN_PLACE_RETRY_ONLY = {
    "maximum_record_age_s": "queue sources have no record age (AWS offers it for streams "
    "only); the queue's own retention or message TTL limits a message's age",
    "retry_base_delay_s": "queue sources retry by redelivery, not by backoff (a failed message "
    "comes back when the queue hands it out again; SQS: nack_visibility_timeout_s)",
    "retry_max_delay_s": "queue sources retry by redelivery, not by backoff (a failed message "
    "comes back when the queue hands it out again; SQS: nack_visibility_timeout_s)",
}


def _check_queue_settings(t: TriggerBase) -> None:
    """Refuse what a queue source would accept and then ignore."""
    for key, why in _IN_PLACE_RETRY_ONLY.items():
        if key in t.model_fields_set:
            raise ValueError(f"{key}: {why}")
    if "maximum_retry_attempts" in t.model_fields_set and t.on_failure_config is None:
        raise ValueError(
            "maximum_retry_attempts: on a queue source it only ends retries into on_failure; "
            "without a destination failed messages go back to the queue (use its dead-letter "
            "settings: SQS redrive policy, RabbitMQ dead_letter_after_attempts)"
        )


def wire_problems(functions: list[str], triggers: list[tuple[Any, Any]]) -> list[str]:
    """Cross-references: function names, each trigger's function, unique trigger names.
    `triggers` is (function, name) per trigger; values that are not strings (a config whose
    fields are invalid too) are skipped, so these lines can join the field errors."""
    problems: list[str] = []
    for name in functions:
        if not FUNCTION_NAME.match(name):
            problems.append(f"functions.{name}: name must be 1-64 of [A-Za-z0-9_-]")
    seen: set[str] = set()
    for i, (function, trigger_name) in enumerate(triggers):
        if not isinstance(function, str):
            continue
        if function not in functions:
            hint = _did_you_mean(function, functions)
            problems.append(f"triggers.{i}.function: no function {function!r}{hint}")
        name = trigger_name if isinstance(trigger_name, str) else f"{function}-{i}"
        if name in seen:
            problems.append(f"triggers.{i}.name: duplicate trigger name {name!r}")
        seen.add(name)
    return problems


class AsyncInvocationBase(Model):
    """A function's asynchronous invocation settings (Lambda's PutFunctionEventInvokeConfig)
    for its own queue of Event invocations: the Invoke API's `Event` calls and what event
    buses deliver. `on_failure` is filled in from the installed destinations by
    `build_config_model`."""

    maximum_retry_attempts: int = Field(
        2, ge=0, le=2, description="Retries after a function error (0-2, Lambda's default 2)"
    )
    maximum_event_age_s: float = Field(
        21600, ge=60, le=21600, description="How long an event is retried (60-21600 s)"
    )

    @property
    def on_failure_config(self) -> DestinationConfig | None:
        return cast(DestinationConfig | None, getattr(self, "on_failure", None))


class ConfigBase(Model):
    daemon: DaemonSettings = Field(default_factory=DaemonSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    functions: dict[str, Any] = Field(default_factory=dict)
    triggers: list[Any] = Field(default_factory=empty_list)
    async_invocation: dict[str, Any] = Field(
        default_factory=dict,
        description="Per function: retries, maximum event age and on-failure destination of "
        "its asynchronous invocations (Invoke API Event calls, event bus deliveries)",
    )
    if TYPE_CHECKING:
        event_buses: list[EventBusConfig] = Field(default_factory=empty_list)
        sns: SnsSettings | None = None
    else:
        # Typed in full by `build_config_model` when the config has the section; absent,
        # the default is all the model needs (OPTIONAL_SECTIONS).
        event_buses: list[Any] = Field(default_factory=empty_list)
        sns: None = None

    @property
    def trigger_list(self) -> list[TriggerBase]:
        return cast(list[TriggerBase], self.triggers)

    @property
    def function_map(self) -> dict[str, FunctionConfig]:
        return cast(dict[str, FunctionConfig], self.functions)

    @property
    def async_invocation_map(self) -> dict[str, AsyncInvocationBase]:
        return cast(dict[str, AsyncInvocationBase], self.async_invocation)

    @model_validator(mode="after")
    def _wire(self) -> ConfigBase:
        problems = wire_problems(
            list(self.functions), [(t.function, t.name) for t in self.trigger_list]
        )
        problems += self._route_problems()
        if self.event_buses:
            from triggerd.config.buses import bus_problems

            problems += bus_problems(self.event_buses, self.functions)
        names = list(self.functions)
        problems += [
            f"async_invocation.{name}: no function {name!r}{_did_you_mean(name, names)}"
            for name in self.async_invocation
            if name not in self.functions
        ]
        if self.event_buses and not self.daemon.control_addresses:
            problems.append(
                "event_buses: PutEvents is served on the control listener: set "
                "daemon.control_listen (or control_on_public = true)"
            )
        problems += self._sns_problems()
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def trigger_name(self, index: int) -> str:
        trig = self.trigger_list[index]
        return trig.name or f"{trig.function}-{index}"

    def _sns_problems(self) -> list[str]:
        """SNS subscriptions to functions this config does not have; topics without the
        control listener that serves them."""
        if self.sns is None:
            return []
        from triggerd.config.sns import LambdaSubscription

        problems = [
            f"sns.topics.{i}.subscriptions.{j}.function: {sub.function!r} is not a function "
            f"of this config{_did_you_mean(sub.function, list(self.functions))}"
            for i, topic in enumerate(self.sns.topics)
            for j, sub in enumerate(topic.subscriptions)
            if isinstance(sub, LambdaSubscription) and sub.function not in self.functions
        ]
        if not self.daemon.control_addresses:
            problems.append(
                "sns: the SNS API is served on the control listener: set daemon.control_listen "
                "(or daemon.control_on_public)"
            )
        return problems

    def _route_problems(self) -> list[str]:
        """Routes the daemon would refuse when it starts (exit status 2): a push source's
        route on a method and path the daemon's own endpoints, or another trigger, took on
        the public listener (the route table's rule: one method, one shape of path)."""
        d = self.daemon
        if not d.listen:
            return []
        control = " (control_on_public = true serves the control endpoints on listen)"
        taken = {(m, _route_shape(t)): f"the daemon's own {m} {t}" for m, t in PUBLIC_ENDPOINTS}
        if d.control_on_public:
            taken.update(
                {
                    (m, _route_shape(t)): f"the daemon's own {m} {t}{control}"
                    for m, t in CONTROL_ENDPOINTS
                }
            )
        problems = []
        for i, trig in enumerate(self.trigger_list):
            if not trig.enabled:
                continue
            for method, template in trig.source_config.http_routes():
                key = (method, _route_shape(template))
                if key in taken:
                    problems.append(
                        f"triggers.{i}.source: {method} {template} is already taken by "
                        f"{taken[key]}: give it another path"
                    )
                else:
                    taken[key] = f"trigger {self.trigger_name(i)!r}"
        return problems


# --------------------------------------------------------------------------------------------
# Building the models from the plugins


def _union(models: Mapping[str, type[BaseModel]], key: str, default: str | None) -> Any:
    def pick(value: Any) -> str | None:
        if isinstance(value, dict):
            tag = value.get(key, default)
            return tag if isinstance(tag, str) else None
        return cast(str | None, getattr(value, key, None))

    if not models:
        return Any
    if len(models) == 1:  # a one-member Union is that member, which takes no Discriminator
        return next(iter(models.values()))
    tagged = tuple(Annotated[m, Tag(name)] for name, m in models.items())
    return Annotated[Union[tagged], Discriminator(pick)]  # noqa: UP007


def _section_fields(sections: Collection[str] | None) -> dict[str, Any]:
    """The fields of the OPTIONAL_SECTIONS in `sections` (None: all of them), with their
    models."""
    fields: dict[str, Any] = {}
    if sections is None or "event_buses" in sections:
        from triggerd.config.buses import EventBusConfig

        fields["event_buses"] = (
            list[EventBusConfig],
            Field(
                default_factory=empty_list,
                description="EventBridge-compatible event buses served on the control "
                "listener (PutEvents), with their rules and targets (docs/eventbridge.md)",
            ),
        )
    if sections is None or "sns" in sections:
        from triggerd.config.sns import SnsSettings

        fields["sns"] = (
            SnsSettings | None,
            Field(None, description="SNS-compatible topics on the control listener (docs/sns.md)"),
        )
    return fields


def build_config_model(
    registry: Registry,
    only: Mapping[Kind, set[str]] | None = None,
    sections: Collection[str] | None = None,
) -> type[ConfigBase]:
    """The root config model for the plugins that are installed, or for those named in `only`
    (the ones a config uses, all of them installed: `load.used_plugins`); with the
    OPTIONAL_SECTIONS named in `sections` (the ones a config has), or all of them (None)."""
    sources = _models(registry, "source", only)
    dests = _models(registry, "destination", only)
    backends = _models(registry, "backend", only)
    source_t = _union(sources, "type", None)
    dest_t = _union(dests, "type", None)
    trigger = create_model(
        "Trigger",
        __base__=TriggerBase,
        source=(source_t, ...),
        on_failure=(dest_t | None, None),
    )
    async_invocation = create_model(
        "AsyncInvocation", __base__=AsyncInvocationBase, on_failure=(dest_t | None, None)
    )
    function_t: Any = dict[str, _union(backends, "backend", "local")]  # type: ignore[misc]
    trigger_list_t: Any = list[trigger]
    async_t: Any = dict[str, async_invocation]
    return create_model(
        "TriggerdConfig",
        __base__=ConfigBase,
        functions=(function_t, Field(default_factory=dict)),
        triggers=(trigger_list_t, Field(default_factory=empty_list)),
        async_invocation=(async_t, Field(default_factory=dict)),
        **_section_fields(sections),
    )


def _models(
    registry: Registry, kind: Kind, only: Mapping[Kind, set[str]] | None
) -> dict[str, type[BaseModel]]:
    if only is None:
        plugins = registry.available(kind)
    else:
        plugins = {name: registry.load(kind, name) for name in sorted(only.get(kind, ()))}
    return {
        name: cast(type[BaseModel], getattr(plugin, "config_model"))  # noqa: B009
        for name, plugin in plugins.items()
    }


def _did_you_mean(word: str, candidates: list[str]) -> str:
    import difflib  # for a config with a mistake: every valid config's start-up skips it

    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
