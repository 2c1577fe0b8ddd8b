"""The Lambda Extensions API (2020-01-01) of one execution environment.

Extensions register (`POST /extension/register` with `Lambda-Extension-Name`; the answer
carries their `Lambda-Extension-Identifier`), then long-poll `GET /extension/event/next` for
`INVOKE` and `SHUTDOWN` events, and may report `init/error` or `exit/error`. Answers, error
types and messages follow the AWS Runtime Interface Emulator's handlers. An extension whose
name is one of the external extensions started for the environment is external (it may ask
for INVOKE and SHUTDOWN); any other name registers an internal extension (one running inside
the runtime process, INVOKE only).

The environment's owner (`runtime_api.RuntimeEndpoint`) asks `ready` before it hands the runtime
an invocation: as on Lambda, an invocation phase ends, and the environment can take the next
invocation, only once every extension has called `event/next` again. `on_change` tells the
owner whenever that may have changed.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import orjson

from triggerd.functions.runtime_http import (
    NOT_FOUND,
    Request,
    RuntimeConnection,
    error_reply,
    http_reply,
    method_not_allowed,
)
from triggerd.functions.telemetry_api import TelemetryAPI

__all__ = ["EXTENSION_PREFIX", "LOGS_PATH", "TELEMETRY_PATH", "ExtensionsAPI", "InitFailure"]

EXTENSION_PREFIX = "/2020-01-01/extension/"
TELEMETRY_PATH = "/2022-07-01/telemetry"
LOGS_PATH = "/2020-08-15/logs"
#: Lambda's limit on extensions per function.
MAX_EXTENSIONS = 10
_EVENTS = ("INVOKE", "SHUTDOWN")
_ID = "lambda-extension-identifier"
_NAME = "lambda-extension-name"
_ERROR_TYPE = "lambda-extension-function-error-type"
_FEATURES = "lambda-extension-accept-feature"
_ACCEPTED = http_reply(202, orjson.dumps({"status": "OK"}))
_NOT_ALLOWED_MSG = "State transition is not allowed"
_LOGS_STUB = error_reply(202, "Logs.NotSupported", "Logs API is not supported")


def _forbidden(error_type: str, message: str) -> bytes:
    return error_reply(403, error_type, message)


def _transition(state: str, target: str, who: str) -> bytes:
    return _forbidden(
        "Extension.InvalidExtensionState",
        f"State transition from {state} to {target} failed for extension {who}. "
        f"Error: {_NOT_ALLOWED_MSG}",
    )


@dataclass(frozen=True, slots=True)
class InitFailure:
    """Why the environment's init failed because of an extension."""

    error_type: str
    message: str

    def body(self) -> bytes:
        return orjson.dumps({"errorMessage": self.message, "errorType": self.error_type})


@dataclass(slots=True, eq=False)
class Extension:
    name: str
    id: str
    external: bool
    events: frozenset[str]
    #: Registered, Ready (polling event/next), Running (handed an event), InitError, ExitError.
    state: str = "Registered"
    poll: RuntimeConnection | None = None
    #: An event waiting for the extension's next poll (SHUTDOWN while it was busy).
    queued: bytes | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class ExtensionsAPI:
    """Registered extensions and their event polls (see the module docstring)."""

    def __init__(
        self,
        *,
        function_name: str = "",
        function_version: str = "$LATEST",
        handler: str = "",
        account_id: str = "",
        external: Collection[str] = (),
        telemetry: TelemetryAPI | None = None,
    ) -> None:
        self._metadata = {
            "functionName": function_name,
            "functionVersion": function_version,
            "handler": handler,
        }
        self._account_id = account_id
        #: Names of the external extensions started for this environment.
        self.external = frozenset(external)
        self.telemetry = telemetry or TelemetryAPI()
        self.by_id: dict[str, Extension] = {}
        self._registration_open = True
        self.failure: InitFailure | None = None
        self._shutting_down = False
        self.on_change: Callable[[], None] = lambda: None
        #: Set on every change of an extension's state (who waits clears it first).
        self.changed = asyncio.Event()

    # ---- owner side ------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Every extension is waiting in event/next (and every external one registered)."""
        if not self.by_id and not self.external:
            return True
        if any(e.state != "Ready" for e in self.by_id.values()):
            return False
        registered = {e.name for e in self.by_id.values() if e.external}
        return registered >= self.external

    def _changed(self) -> None:
        self.changed.set()
        self.on_change()

    def close_registration(self) -> None:
        self._registration_open = False

    def invoke(self, request_id: str, deadline_ms: int, arn: str, trace_id: str | None) -> None:
        """Hand the INVOKE event to every extension that asked for it (all are polling)."""
        event: dict[str, Any] = {
            "eventType": "INVOKE",
            "deadlineMs": deadline_ms,
            "requestId": request_id,
            "invokedFunctionArn": arn,
        }
        if trace_id:
            event["tracing"] = {"type": "X-Amzn-Trace-Id", "value": trace_id}
        data = orjson.dumps(event)
        for ext in self.by_id.values():
            if "INVOKE" in ext.events:
                self._send(ext, data)

    def shutdown(self, reason: str, deadline_ms: int) -> list[Extension]:
        """Send SHUTDOWN to the extensions that asked for it; they are returned."""
        self._shutting_down = True
        data = orjson.dumps(
            {"eventType": "SHUTDOWN", "deadlineMs": deadline_ms, "shutdownReason": reason}
        )
        told = []
        for ext in self.by_id.values():
            if "SHUTDOWN" in ext.events:
                told.append(ext)
                if ext.poll is not None:
                    self._send(ext, data)
                else:
                    ext.queued = data
        return told

    def connection_gone(self, conn: RuntimeConnection) -> None:
        for ext in self.by_id.values():
            if ext.poll is conn:
                ext.poll = None

    def _send(self, ext: Extension, data: bytes) -> None:
        conn = ext.poll
        if conn is None:
            ext.queued = data
            return
        ext.poll = None
        ext.state = "Running"
        headers = {"Lambda-Extension-Event-Identifier": str(uuid.uuid4())}
        conn.answer_parked(http_reply(200, data, headers))

    # ---- extension side --------------------------------------------------------------------

    def dispatch(self, conn: RuntimeConnection, request: Request, path: str) -> bytes | None:
        """The answer to a request on an Extensions or Telemetry API path (None: parked)."""
        method = request.method
        if path == TELEMETRY_PATH:
            if method != "PUT":
                return method_not_allowed("PUT")
            ext = self._identify(request)
            if isinstance(ext, bytes):
                return ext
            return self.telemetry.subscribe(ext.name, request.body)
        if path == LOGS_PATH:
            return _LOGS_STUB if method == "PUT" else method_not_allowed("PUT")
        action = path[len(EXTENSION_PREFIX) :]
        if action == "event/next":
            if method != "GET":
                return method_not_allowed("GET")
            return self._next(conn, request)
        if action in ("register", "init/error", "exit/error"):
            if method != "POST":
                return method_not_allowed("POST")
            if action == "register":
                return self._register(request)
            return self._error(request, action == "init/error")
        return NOT_FOUND

    def _identify(self, request: Request) -> Extension | bytes:
        value = (request.extension or {}).get(_ID)
        if not value:
            return _forbidden(
                "Extension.MissingExtensionIdentifier", "Missing Lambda-Extension-Identifier header"
            )
        try:
            ext_id = str(uuid.UUID(value))
        except ValueError:
            return _forbidden(
                "Extension.InvalidExtensionIdentifier", "Invalid Lambda-Extension-Identifier"
            )
        ext = self.by_id.get(ext_id)
        if ext is None:
            return _forbidden("Extension.UnknownExtensionIdentifier", f"Unknown extension {ext_id}")
        return ext

    def _register(self, request: Request) -> bytes:
        headers = request.extension or {}
        name = headers.get(_NAME, "")
        if not name:
            return _forbidden("Extension.InvalidExtensionName", "Empty extension name")
        external = name in self.external
        events = _requested_events(request.body, external)
        if isinstance(events, bytes):
            return events
        known = next((e for e in self.by_id.values() if e.name == name), None)
        if known is not None:
            if external:
                return _transition(known.state, "Registered", name)
            return _forbidden(
                "Extension.InvalidExtensionState", "Extension with this name already registered"
            )
        if not self._registration_open and not external:
            return _forbidden(
                "Extension.RegistrationClosed", "Extension registration closed already"
            )
        if len(self.by_id) >= MAX_EXTENSIONS:
            return _forbidden(
                "Extension.TooManyExtensions", f"Extension limit ({MAX_EXTENSIONS}) reached"
            )
        ext = Extension(name, str(uuid.uuid4()), external, events)
        self.by_id[ext.id] = ext
        answer = dict(self._metadata)
        features = {f.strip() for f in headers.get(_FEATURES, "").split(",")}
        if "accountId" in features and self._account_id:
            answer = {"accountId": self._account_id, **answer}
        self._changed()
        return http_reply(200, orjson.dumps(answer), {"Lambda-Extension-Identifier": ext.id})

    def _next(self, conn: RuntimeConnection, request: Request) -> bytes | None:
        ext = self._identify(request)
        if isinstance(ext, bytes):
            return ext
        if ext.state not in ("Registered", "Running"):
            return _transition(ext.state, "Ready", ext.id)
        ext.state = "Ready"
        if ext.queued is None and not self._shutting_down:
            if not self.telemetry.init_done and not ext.extra.get("announced"):
                ext.extra["announced"] = True
                record = {"name": ext.name, "state": "Ready", "events": sorted(ext.events)}
                self.telemetry.emit("platform", "platform.extension", record)
            # The owner may hand out an invocation now: its INVOKE event, sent while this poll
            # is not parked yet, is queued and answered right here.
            self._changed()
        if ext.queued is not None:
            data, ext.queued = ext.queued, None
            ext.state = "Running"
            headers = {"Lambda-Extension-Event-Identifier": str(uuid.uuid4())}
            return http_reply(200, data, headers)
        ext.poll = conn
        return None

    def _error(self, request: Request, init: bool) -> bytes:
        ext = self._identify(request)
        if isinstance(ext, bytes):
            return ext
        error_type = (request.extension or {}).get(_ERROR_TYPE, "")
        if not error_type:
            return _forbidden(
                "Extension.MissingHeader", "Lambda-Extension-Function-Error-Type not found"
            )
        if init:
            if ext.state != "Registered" or self.telemetry.init_done:
                return _transition(ext.state, "InitError", ext.id)
            ext.state = "InitError"
            if self.failure is None:
                self.failure = InitFailure(
                    "Extension.InitError",
                    f"Extension {ext.name} reported an init error: {error_type}",
                )
        else:
            if ext.state in ("InitError", "ExitError"):
                return _transition(ext.state, "Exited", ext.id)
            ext.state = "ExitError"
        ext.extra["error_type"] = error_type
        self._changed()
        return _ACCEPTED

    def crashed(self, name: str, reason: str) -> None:
        """An external extension's process ended before the environment stopped."""
        if not self.telemetry.init_done and self.failure is None:
            self.failure = InitFailure(
                "Extension.Crash", f"Extension {name} exited during init: {reason}"
            )
        for ext in self.by_id.values():
            if ext.name == name:
                ext.state = "Exited"
        self._changed()


def _requested_events(raw: bytes | None, external: bool) -> frozenset[str] | bytes:
    """The events a register request asks for, or the answer refusing it."""
    try:
        body = orjson.loads(raw or b"")
    except orjson.JSONDecodeError as e:
        return _forbidden("InvalidRequestFormat", str(e))
    if not isinstance(body, dict) or not isinstance(body.get("events", []), list):
        return _forbidden(
            "InvalidRequestFormat", "the body must be an object with a list of events"
        )
    if body.get("configurationKeys"):
        return _forbidden(
            "InvalidRequestFormat",
            "configurationKeys are deprecated; use environment variables instead",
        )
    events = body.get("events", [])
    for event in events:
        if event not in _EVENTS:
            return _forbidden("Extension.InvalidEventType", f"{event}: invalid event type")
        if event == "SHUTDOWN" and not external:
            return _forbidden(
                "Extension.InvalidEventType",
                f"{event}: event not supported for internal extensions",
            )
    return frozenset(events)
