"""Config model of the `webhook` source: one HTTP route on the daemon's listen address, wired to
the trigger's function with API Gateway's (REST 1.0 / HTTP API 2.0) or a function URL's event."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import ConfigDict, Field, SecretStr, field_validator, model_validator

from triggerd.http.templates import METHODS, RouteTemplate
from triggerd.types import MAX_SYNC_PAYLOAD, Model, SourceConfig, empty_list

#: API Gateway's integration timeout caps, used as the default route timeouts.
REST_TIMEOUT_S = 29.0
HTTP_API_TIMEOUT_S = 30.0


#: HMAC keys that one signature style reads and the other never does.
_STYLE_ONLY = {"github": {"prefix", "encoding"}, "stripe": {"tolerance_s"}}


class HmacAuth(Model):
    """A signature of the raw body with a shared secret (HMAC-SHA256), GitHub or Stripe style."""

    type: Literal["hmac"]
    secret: SecretStr = Field(description="The shared secret (never logged).")
    style: Literal["github", "stripe"] = Field(
        "github",
        description="github: header = prefix + hex(HMAC(body)); "
        "stripe: header = 't=<unix time>,v1=<hex(HMAC('<t>.<body>'))>' checked with tolerance_s.",
    )
    header: str | None = Field(
        None,
        description="Header holding the signature (default X-Hub-Signature-256 for github, "
        "Stripe-Signature for stripe).",
    )
    prefix: str = Field("sha256=", description="github style: text before the digest.")
    encoding: Literal["hex", "base64"] = Field("hex", description="github style: digest encoding.")
    tolerance_s: float = Field(
        300.0, gt=0, description="stripe style: largest accepted age of the signed timestamp."
    )

    @model_validator(mode="after")
    def _style_keys(self) -> HmacAuth:
        other = "stripe" if self.style == "github" else "github"
        unused = sorted(_STYLE_ONLY[other] & self.model_fields_set)
        if unused:
            raise ValueError(f"{', '.join(unused)}: only used with style = {other!r}")
        return self

    @property
    def header_name(self) -> str:
        if self.header:
            return self.header
        return "Stripe-Signature" if self.style == "stripe" else "X-Hub-Signature-256"

    @field_validator("secret")
    @classmethod
    def _not_empty(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value():
            raise ValueError("the secret must not be empty")
        return value


class BearerAuth(Model):
    """`Authorization: Bearer <token>`."""

    type: Literal["bearer"]
    token: SecretStr = Field(description="The expected token (never logged).")

    @field_validator("token")
    @classmethod
    def _not_empty(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value():
            raise ValueError("the token must not be empty")
        return value


AuthConfig = Annotated[HmacAuth | BearerAuth, Field(discriminator="type")]


class CorsConfig(Model):
    """CORS as HTTP APIs configure it: preflights are answered by the daemon, and actual
    responses get the Access-Control-* headers."""

    allow_origins: list[str] = Field(description="Allowed origins, or ['*'].", min_length=1)
    allow_methods: list[str] = Field(
        default_factory=lambda: ["*"], description="Methods allowed in a preflight, or ['*']."
    )
    allow_headers: list[str] = Field(
        default_factory=lambda: ["*"], description="Request headers allowed, or ['*']."
    )
    expose_headers: list[str] = Field(default_factory=empty_list)
    allow_credentials: bool = False
    max_age_s: int = Field(0, ge=0, le=86400, description="Access-Control-Max-Age (0: not sent).")

    @model_validator(mode="after")
    def _credentials_need_origins(self) -> CorsConfig:
        if self.allow_credentials and "*" in self.allow_origins:
            raise ValueError("allow_credentials needs explicit allow_origins, not '*'")
        return self


#: Keys that one invocation mode reads and the other never does: key -> (mode, why).
_MODE_ONLY = {
    "timeout_s": (
        "sync",
        "event mode answers 202 once the event is queued, waiting for no function",
    ),
    "accept_timeout_s": ("event", "sync mode queues nothing"),
    "queue_size": ("event", "sync mode queues nothing"),
}


class WebhookSourceConfig(SourceConfig):
    """An HTTP route on the daemon's listen address that invokes the trigger's function."""

    invocation: ClassVar[Literal["sync", "async"]] = "async"
    #: An ack only answers the caller (202): nothing upstream to leave untouched.
    record_passes_acks: ClassVar[bool] = True

    type: Literal["webhook"]
    method: str = Field("ANY", description="HTTP method, or ANY.")
    path: str = Field(description="Route template: /orders/{id}, /files/{proxy+}.")
    payload_format: Literal["1.0", "2.0", "url"] = Field(
        "2.0",
        description="1.0 = API Gateway REST proxy event; 2.0 = HTTP API payload 2.0; "
        "url = Lambda function URL.",
    )
    invocation_mode: Literal["sync", "event"] = Field(
        "sync",
        alias="invocation",
        description="sync: answer with the function's response; event: answer 202 once the "
        "event is durably queued, and invoke asynchronously.",
    )
    stage: str | None = Field(
        None,
        pattern=r"^(\$default|[A-Za-z0-9_-]{1,128})$",
        description="Stage name (default: prod for 1.0, $default for 2.0; url: always $default).",
    )
    stage_variables: dict[str, str] = Field(default_factory=dict)
    binary_media_types: list[str] = Field(
        default_factory=empty_list,
        description="1.0: request Content-Types delivered base64 (image/png, image/*, */*); also "
        "where a base64 response body is decoded (request Accept or response Content-Type).",
    )
    auth: AuthConfig | None = None
    max_body_bytes: int = Field(MAX_SYNC_PAYLOAD, ge=0, le=MAX_SYNC_PAYLOAD)
    max_headers: int = Field(100, ge=1, le=10_000)
    max_header_bytes: int = Field(
        10_240, ge=64, le=1_048_576, description="Total bytes of header names and values."
    )
    max_concurrency: int | None = Field(
        None, ge=1, description="Requests in progress at once; more get 429."
    )
    rate_limit_per_s: float | None = Field(
        None, gt=0, description="Token bucket refill rate; requests over it get 429."
    )
    burst: int | None = Field(None, ge=1, description="Token bucket size (default: the rate).")
    cors: CorsConfig | None = None
    timeout_s: float | None = Field(
        None,
        gt=0,
        le=900,
        description="Answer 504 after this long (default: the function timeout, capped at 29 s "
        "for 1.0 and 30 s for 2.0).",
    )
    accept_timeout_s: float = Field(
        10.0, gt=0, le=300, description="event mode: answer 503 if not queued durably by then."
    )
    queue_size: int = Field(
        1000, ge=1, le=100_000, description="event mode: requests waiting to be queued."
    )

    model_config = ConfigDict(populate_by_name=True)

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        upper = value.upper()
        if upper not in METHODS:
            raise ValueError(f"method {value!r} is not one of {', '.join(sorted(METHODS))}")
        return upper

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        RouteTemplate.parse(value)
        return value

    @field_validator("binary_media_types")
    @classmethod
    def _media(cls, value: list[str]) -> list[str]:
        for item in value:
            if item.count("/") != 1:
                raise ValueError(f"binary media type {item!r} is not type/subtype")
        return [v.lower() for v in value]

    @model_validator(mode="after")
    def _check(self) -> WebhookSourceConfig:
        if self.payload_format == "url" and (self.stage not in (None, "$default")):
            raise ValueError("a function URL has no stages (stage must be $default)")
        if self.payload_format == "url" and self.stage_variables:
            raise ValueError("a function URL has no stage variables")
        if self.burst is not None and self.rate_limit_per_s is None:
            raise ValueError("burst needs rate_limit_per_s")
        unused = self._unused_keys()
        if unused:
            raise ValueError("; ".join(unused))
        return self

    def _unused_keys(self) -> list[str]:
        """Keys set where this route, as configured, would never read them."""
        found = [
            f'{key}: only used with invocation = "{mode}" ({why})'
            for key, (mode, why) in _MODE_ONLY.items()
            if key in self.model_fields_set and mode != self.invocation_mode
        ]
        if self.binary_media_types and self.payload_format != "1.0":
            found.append(
                'binary_media_types: only payload_format = "1.0" (a REST API) has binary media '
                "types; 2.0 and url events carry non-text bodies base64 by themselves"
            )
        return found

    def ignored_trigger_settings(self) -> dict[str, str]:
        """A sync-mode webhook invokes the function in the request and answers with its
        response, as API Gateway does: no queue, so no filter, retry or destination."""
        if self.invocation_mode != "sync":
            return {}
        sync = "a sync-mode webhook"
        event = 'applies with invocation = "event"'
        no_retry = f"{sync} never retries (the caller gets the error); this {event}"
        return {
            "filters": f"{sync} invokes the function on every request; filtering {event}",
            "maximum_concurrency": f"{sync} has no queue to drain; limit requests with the "
            "source's max_concurrency",
            "maximum_retry_attempts": no_retry,
            "maximum_event_age_s": no_retry,
            "retry_base_delay_s": no_retry,
            "retry_max_delay_s": no_retry,
            "on_failure": f"{sync} has no failed events to send (the caller gets the error); "
            f"on_failure {event}",
        }

    def http_routes(self) -> list[tuple[str, str]]:
        return [(self.method, self.path)]

    @property
    def effective_stage(self) -> str:
        if self.stage is not None:
            return self.stage
        return "prod" if self.payload_format == "1.0" else "$default"

    @property
    def effective_burst(self) -> int:
        if self.burst is not None:
            return self.burst
        return max(1, round(self.rate_limit_per_s or 1))

    def effective_timeout_s(self, function_timeout_s: float) -> float:
        if self.timeout_s is not None:
            return self.timeout_s
        if self.payload_format == "1.0":
            return min(function_timeout_s, REST_TIMEOUT_S)
        if self.payload_format == "2.0":
            return min(function_timeout_s, HTTP_API_TIMEOUT_S)
        return function_timeout_s
