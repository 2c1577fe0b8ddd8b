"""The bundled Python runtime client: a Lambda Runtime API (2018-06-01) poller.

Run as a script by the local backend (`python .../bootstrap.py`, cwd = the function's code) with
the environment Lambda gives a runtime (`_HANDLER`, `AWS_LAMBDA_RUNTIME_API`, ...). It imports
the handler, reports init failures with Lambda's error types, then serves invocations one at a
time over one keep-alive connection. Standard library only (orjson, when installed, parses
events over 64 KB); importing this module has no side effects.

Responses are encoded like Lambda's Python runtime does (the standard `json` encoder with its
default separators, `Decimal` as a number), so the bytes match what AWS would return.
"""

from __future__ import annotations

import contextlib
import decimal
import importlib
import io
import json
import logging
import os
import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

API_PREFIX = "/2018-06-01/runtime"
#: Events at least this big are parsed with orjson when it is installed.
LARGE_EVENT_BYTES = 64 * 1024

Handler = Callable[[Any, Any], Any]


class InitError(Exception):
    """A failure to load the handler, reported through `/runtime/init/error`."""

    def __init__(self, error_type: str, message: str, stack: list[str] | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.stack = stack or []


# --------------------------------------------------------------------------------------------
# Context object (same attributes as awslambdaric's LambdaContext)


class CognitoIdentity:
    __slots__ = ("cognito_identity_id", "cognito_identity_pool_id")

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        data = data or {}
        self.cognito_identity_id = data.get("cognitoIdentityId")
        self.cognito_identity_pool_id = data.get("cognitoIdentityPoolId")


class Client:
    __slots__ = (
        "app_package_name",
        "app_title",
        "app_version_code",
        "app_version_name",
        "installation_id",
    )

    def __init__(self, data: dict[str, Any]) -> None:
        self.installation_id = data.get("installation_id")
        self.app_title = data.get("app_title")
        self.app_version_name = data.get("app_version_name")
        self.app_version_code = data.get("app_version_code")
        self.app_package_name = data.get("app_package_name")


class ClientContext:
    __slots__ = ("client", "custom", "env")

    def __init__(self, data: dict[str, Any]) -> None:
        client = data.get("client")
        self.client = Client(client) if isinstance(client, dict) else None
        self.custom = data.get("custom")
        self.env = data.get("env")


class LambdaContext:
    __slots__ = (
        "_deadline_ms",
        "aws_request_id",
        "client_context",
        "function_name",
        "function_version",
        "identity",
        "invoked_function_arn",
        "log_group_name",
        "log_stream_name",
        "memory_limit_in_mb",
        "tenant_id",
    )

    def __init__(
        self,
        static: dict[str, str],
        request_id: str,
        deadline_ms: int,
        invoked_function_arn: str,
        client_context: str | None,
        identity: str | None,
        tenant_id: str | None,
    ) -> None:
        self.function_name = static["function_name"]
        self.function_version = static["function_version"]
        self.memory_limit_in_mb = static["memory_limit_in_mb"]
        self.log_group_name = static["log_group_name"]
        self.log_stream_name = static["log_stream_name"]
        self.aws_request_id = request_id
        self.invoked_function_arn = invoked_function_arn
        self._deadline_ms = deadline_ms
        self.tenant_id = tenant_id
        self.identity = CognitoIdentity(_json_object(identity))
        cc = _json_object(client_context)
        self.client_context = ClientContext(cc) if cc is not None else None

    def get_remaining_time_in_millis(self) -> int:
        return max(self._deadline_ms - int(time.time() * 1000), 0)

    def log(self, message: str) -> None:
        sys.stdout.write(message)

    def __repr__(self) -> str:
        return (
            f"LambdaContext([aws_request_id={self.aws_request_id},"
            f"function_name={self.function_name},function_version={self.function_version},"
            f"invoked_function_arn={self.invoked_function_arn}])"
        )


def _json_object(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


# --------------------------------------------------------------------------------------------
# JSON like Lambda's Python runtime


def _encode_default(obj: Any) -> Any:
    if isinstance(obj, decimal.Decimal):
        if obj.is_nan():
            return float("nan")
        if obj == obj.to_integral_value():
            return int(obj)
        return float(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def make_encoder(runtime: str) -> json.JSONEncoder:
    # Lambda's python3.12+ runtimes stopped escaping non-ASCII characters.
    version = runtime.removeprefix("AWS_Lambda_python3.")
    ensure_ascii = not (version.isdigit() and int(version) >= 12)
    return json.JSONEncoder(ensure_ascii=ensure_ascii, allow_nan=True, default=_encode_default)


class EventDecoder:
    """Parses events with `json`; orjson (when installed) is imported on the first large event
    only, since importing it costs more at a cold start than it saves on small events."""

    def __init__(self, large_bytes: int = LARGE_EVENT_BYTES) -> None:
        self._large = large_bytes
        self._fast: Callable[[bytes], Any] | None = None
        self._fast_tried = False

    def __call__(self, body: bytes) -> Any:
        if not body:
            return {}
        if len(body) >= self._large:
            if not self._fast_tried:
                self._fast_tried = True
                with contextlib.suppress(ImportError):
                    self._fast = importlib.import_module("orjson").loads
            if self._fast is not None:
                try:
                    return self._fast(body)
                except ValueError:
                    pass  # NaN, huge integers: let the standard parser decide
        return json.loads(body)


def error_object(
    message: str, error_type: str, request_id: str, stack: list[str]
) -> dict[str, Any]:
    return {
        "errorMessage": message,
        "errorType": error_type,
        "requestId": request_id,
        "stackTrace": stack,
    }


def format_stack(tb: Any, skip: int) -> list[str]:
    frames = traceback.extract_tb(tb)[skip:]
    kept = [f for f in frames if not f.filename.startswith("<frozen ")]
    return traceback.format_list(kept)


def log_error(error: dict[str, Any]) -> None:
    """Print an error the way Lambda's Python runtime does: one line, frames joined by CR."""
    lines = [f"[ERROR] {error['errorType']}: {error['errorMessage']}"]
    if error["stackTrace"]:
        lines.append("Traceback (most recent call last):")
        lines.extend(frame.rstrip("\n").replace("\n", "\r") for frame in error["stackTrace"])
    sys.stdout.write("\r".join(lines) + "\n")


# --------------------------------------------------------------------------------------------
# Handler loading


def load_handler(spec: str) -> Handler:
    try:
        modname, fname = spec.rsplit(".", 1)
    except ValueError as e:
        raise InitError("Runtime.MalformedHandlerName", f"Bad handler '{spec}': {e}") from None
    if modname.split(".")[0] in sys.builtin_module_names:
        raise InitError(
            "Runtime.BuiltInModuleConflict",
            f"Cannot use built-in module {modname} as a handler module",
        )
    try:
        module = importlib.import_module(modname.replace("/", "."))
    except ImportError as e:
        raise InitError(
            "Runtime.ImportModuleError", f"Unable to import module '{modname}': {e}"
        ) from None
    except SyntaxError as e:
        frame = f'  File "{e.filename}" Line {e.lineno}\n    {e.text}'
        raise InitError(
            "Runtime.UserCodeSyntaxError", f"Syntax error in module '{modname}': {e}", [frame]
        ) from None
    except Exception as e:
        raise InitError(type(e).__name__, str(e), format_stack(e.__traceback__, 1)) from None
    handler = getattr(module, fname, None)
    if handler is None:
        raise InitError(
            "Runtime.HandlerNotFound", f"Handler '{fname}' missing on module '{modname}'"
        )
    return handler  # type: ignore[no-any-return]


# --------------------------------------------------------------------------------------------
# Runtime API client


class RuntimeClient:
    """A small blocking HTTP/1.1 client of the Runtime API over one keep-alive connection.

    http.client parses every response's headers with the email package and sends a request
    body in a second segment; each costs more than the rest of a warm invocation. Here a
    request is one `sendall` and a response is parsed directly (Content-Length or chunked).
    """

    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        self._address = (host, int(port))
        self._host = address
        self._sock: socket.socket | None = None
        self._rfile: Any = None

    def _connect(self) -> None:
        self.close()
        sock = socket.create_connection(self._address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._rfile = sock.makefile("rb")

    def close(self) -> None:
        if self._sock is not None:
            self._rfile.close()
            self._sock.close()
            self._sock = None

    def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        lines = [f"{method} {path} HTTP/1.1", "Host: " + self._host]
        if headers:
            lines.extend(f"{name}: {value}" for name, value in headers.items())
        if method != "GET":
            lines.append(f"Content-Length: {len(body)}")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        for attempt in (0, 1):
            try:
                if self._sock is None:
                    self._connect()
                assert self._sock is not None
                self._sock.sendall(data)
                return self._read_response()
            except (ConnectionResetError, BrokenPipeError):
                self.close()  # the server dropped an idle connection: try once more
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _read_response(self) -> tuple[int, dict[str, str], bytes]:
        rfile = self._rfile
        status_line = rfile.readline(65537)
        if not status_line:
            raise ConnectionResetError("the runtime api closed the connection")
        status = int(status_line.split(None, 2)[1])
        headers: dict[str, str] = {}
        while True:
            line = rfile.readline(65537)
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("utf-8", "replace").partition(":")
            headers[name.strip().lower()] = value.strip()
        length = headers.get("content-length")
        if length is not None:
            body = rfile.read(int(length))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = self._read_chunked()
        else:
            body = rfile.read()
            self.close()
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, body

    def _read_chunked(self) -> bytes:
        parts = []
        while size := int(self._rfile.readline(65537).split(b";", 1)[0], 16):
            parts.append(self._rfile.read(size))
            self._rfile.readline(65537)
        while self._rfile.readline(65537) not in (b"\r\n", b"\n", b""):
            pass  # trailers
        return b"".join(parts)

    def next(self) -> tuple[dict[str, str], bytes]:
        status, headers, body = self.request("GET", API_PREFIX + "/invocation/next")
        return _next_result(status, headers, body)

    def post(self, path: str, body: bytes, error_type: str | None = None) -> None:
        self.request("POST", API_PREFIX + path, body, _post_headers(error_type))

    def post_and_next(
        self,
        path: str,
        body: bytes,
        error_type: str | None = None,
        meanwhile: Callable[[], None] | None = None,
    ) -> tuple[dict[str, str], bytes]:
        """Post a result and poll for the next invocation in one write (HTTP/1.1 pipelining):
        the API answers both in order, and the runtime saves a round trip per invocation.
        `meanwhile` runs once the requests are sent, before the answers are read."""
        headers = _post_headers(error_type)
        headers["Content-Length"] = str(len(body))
        lines = [f"POST {API_PREFIX}{path} HTTP/1.1", "Host: " + self._host]
        lines.extend(f"{name}: {value}" for name, value in headers.items())
        data = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        data += f"GET {API_PREFIX}/invocation/next HTTP/1.1\r\nHost: {self._host}\r\n\r\n".encode()
        try:
            if self._sock is None:
                self._connect()
            assert self._sock is not None
            self._sock.sendall(data)
            if meanwhile is not None:
                meanwhile()
            self._read_response()
            if self._sock is None:  # the API closed after the post: poll on a new connection
                return self.next()
            return _next_result(*self._read_response())
        except (ConnectionResetError, BrokenPipeError):
            self.close()
            self.post(path, body, error_type)  # 403 when the first post did arrive: harmless
            return self.next()


def _post_headers(error_type: str | None) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if error_type is not None:
        headers["Lambda-Runtime-Function-Error-Type"] = error_type
    return headers


def _next_result(status: int, headers: dict[str, str], body: bytes) -> tuple[dict[str, str], bytes]:
    if status != 200:
        sys.exit(f"runtime api: /next answered {status}: {body!r}")
    return headers, body


# --------------------------------------------------------------------------------------------
# The trace id in the process environment

TRACE_ENV = "_X_AMZN_TRACE_ID"
_TRACE_KEY = TRACE_ENV.encode()
#: Room for "_X_AMZN_TRACE_ID=<header>" in the environment entry the client owns; a longer
#: header (none seen in practice) goes through os.environ as before.
TRACE_ENTRY_BYTES = 1024
#: The entries handed to putenv: the C environment may point into them until the process
#: ends, so they are never freed (one per TraceEnv that was prepared; the runtime has one).
_ENTRIES: list[Any] = []


class TraceEnv:
    """Puts each invocation's trace id in `_X_AMZN_TRACE_ID`, as Lambda's runtimes do (handlers
    and the X-Ray SDK read it from os.environ; child processes inherit it), without a leak.

    Setting os.environ calls setenv(3), and the C library keeps every distinct "name=value"
    string it was ever given (getenv's earlier results must stay valid): with a new trace id
    per invocation that is about 140 bytes lost each time, 1.4 MB per 10,000 invocations.
    Lambda's own client does the same and relies on environments being recycled.

    Instead, the client owns one environment entry: a buffer handed to putenv(3), which by
    POSIX becomes part of the environment without a copy, and which is rewritten in place per
    invocation, so the C environment (getenv, child processes) sees the new value and nothing
    is allocated. os.environ keeps its own copy of the environment in a mapping and has no
    public way to update that copy without calling putenv: the client updates the mapping
    directly (`os.environ._data`, stable since Python 3.2). When the handler sets or deletes the
    variable itself, the entry is handed to putenv again on the next invocation.

    The buffer needs ctypes (a few ms to import), so it is set up after the first invocation's
    result was sent, never during init or on the request path; until then, and wherever
    ctypes or the mapping is missing, os.environ is used as Lambda's client uses it. A thread
    the handler left running that reads the variable later sees the newest trace id, as it
    would through os.environ.
    """

    def __init__(self) -> None:
        self._entry: Any = None
        self._address = 0
        self._libc: Any = None
        self._data: dict[bytes, bytes] | None = None
        #: `prepare` ran (whether or not it could set the entry up).
        self.prepared = False

    @property
    def in_place(self) -> bool:
        """Whether values are written into the client's own environment entry."""
        return self._entry is not None

    def prepare(self) -> None:
        """Set up the entry (once; quietly keeps using os.environ when it cannot)."""
        if self.prepared:
            return
        self.prepared = True
        data = getattr(os.environ, "_data", None)
        if not isinstance(data, dict) or sys.platform == "win32":
            return
        try:
            ctypes = importlib.import_module("ctypes")
            libc = ctypes.CDLL(None)
            libc.getenv.restype = ctypes.c_void_p
            libc.getenv.argtypes = [ctypes.c_char_p]
            libc.putenv.argtypes = [ctypes.c_void_p]
            libc.unsetenv.argtypes = [ctypes.c_char_p]
            entry = ctypes.create_string_buffer(TRACE_ENTRY_BYTES)
        except (ImportError, OSError, AttributeError):
            return
        _ENTRIES.append(entry)
        self._libc, self._data = libc, data
        self._entry, self._address = entry, ctypes.addressof(entry)

    def set(self, value: str | None) -> None:
        entry, data = self._entry, self._data
        if value is None:
            if entry is None or data is None:
                os.environ.pop(TRACE_ENV, None)
            elif _TRACE_KEY in data or self._libc.getenv(_TRACE_KEY) is not None:
                data.pop(_TRACE_KEY, None)
                self._libc.unsetenv(_TRACE_KEY)  # unlinks the entry; frees nothing
            return
        raw = os.fsencode(value)
        line = _TRACE_KEY + b"=" + raw
        if entry is None or data is None or len(line) >= TRACE_ENTRY_BYTES or b"\0" in raw:
            os.environ[TRACE_ENV] = value
            return
        entry.raw = line + b"\0"  # never past the buffer: checked above
        libc = self._libc
        if libc.getenv(_TRACE_KEY) != self._address + len(_TRACE_KEY) + 1:
            libc.putenv(self._address)  # first use, or the handler replaced the variable
        data[_TRACE_KEY] = raw


# --------------------------------------------------------------------------------------------
# Logging like Lambda's Python runtime


class _RequestIdFilter(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.request_id = ""

    def filter(self, record: logging.LogRecord) -> bool:
        record.aws_request_id = self.request_id
        return True


class _LambdaFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(
            "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s",
            "%Y-%m-%dT%H:%M:%S",
        )
        self.converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", "\r")


def setup_logging() -> _RequestIdFilter:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_LambdaFormatter())
    request_filter = _RequestIdFilter()
    handler.addFilter(request_filter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    level = os.environ.get("AWS_LAMBDA_LOG_LEVEL")
    if level:
        root.setLevel(level.upper())
    return request_filter


# --------------------------------------------------------------------------------------------
# Main loop


class Runtime:
    def __init__(self, client: RuntimeClient, handler: Handler, encoder: json.JSONEncoder):
        env = os.environ
        self.client = client
        self.handler = handler
        self.encode = encoder.encode
        self.decode = EventDecoder()
        self.request_filter = setup_logging()
        self.trace = TraceEnv()
        self.static = {
            "function_name": env.get("AWS_LAMBDA_FUNCTION_NAME", ""),
            "function_version": env.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
            "memory_limit_in_mb": env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
            "log_group_name": env.get("AWS_LAMBDA_LOG_GROUP_NAME", ""),
            "log_stream_name": env.get("AWS_LAMBDA_LOG_STREAM_NAME", ""),
        }

    def serve_forever(self) -> NoReturn:
        invocation = self.client.next()
        while True:
            invocation = self.serve_one(invocation)

    def serve_one(self, invocation: tuple[dict[str, str], bytes]) -> tuple[dict[str, str], bytes]:
        """Run one invocation, post its result and return the next invocation."""
        headers, body = invocation
        header = headers.get
        request_id = header("lambda-runtime-aws-request-id") or ""
        self.request_filter.request_id = request_id
        self.trace.set(header("lambda-runtime-trace-id") or None)
        context = LambdaContext(
            self.static,
            request_id,
            int(header("lambda-runtime-deadline-ms") or 0),
            header("lambda-runtime-invoked-function-arn") or "",
            header("lambda-runtime-client-context"),
            header("lambda-runtime-cognito-identity"),
            header("lambda-runtime-aws-tenant-id"),
        )
        outcome = self.run_handler(request_id, body, context)
        end_of_output()
        # Set up once, while the daemon handles the first result: off init and the request path.
        meanwhile = None if self.trace.prepared else self.trace.prepare
        if isinstance(outcome, bytes):
            path, error_type = f"/invocation/{request_id}/response", None
        else:
            path, error_type = f"/invocation/{request_id}/error", outcome["errorType"]
            outcome = self.encode(outcome).encode()
        return self.client.post_and_next(path, outcome, error_type, meanwhile)

    def run_handler(self, request_id: str, body: bytes, context: LambdaContext) -> Any:
        """The encoded result, or an error object (a dict)."""
        try:
            event = self.decode(body)
        except ValueError as e:
            error = error_object(
                f"Unable to unmarshal input: {e}", "Runtime.UnmarshalError", request_id, []
            )
            log_error(error)
            return error
        try:
            result = self.handler(event, context)
        except Exception as e:
            error = error_object(
                str(e), type(e).__name__, request_id, format_stack(e.__traceback__, 1)
            )
            log_error(error)
            return error
        try:
            return self.encode(result).encode()
        except (TypeError, ValueError, OverflowError) as e:
            error = error_object(
                f"Unable to marshal response: {e}", "Runtime.MarshalError", request_id, []
            )
            log_error(error)
            return error


def end_of_output() -> None:
    """Flush the invocation's output, so it is in the pipes before the result is posted."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()  # fails when the function closed or replaced the stream


def _site_builtins() -> None:
    """The builtins `site` adds (exit, quit, help...): workers run with -S so that no
    site-packages reach the function, but Lambda's Python has these."""
    if "site" in sys.modules:
        return
    import _sitebuiltins
    import builtins

    if not hasattr(builtins, "exit"):
        builtins.exit = _sitebuiltins.Quitter("exit", "Ctrl-D (i.e. EOF)")
        builtins.quit = _sitebuiltins.Quitter("quit", "Ctrl-D (i.e. EOF)")
    if not hasattr(builtins, "help"):
        builtins.help = _sitebuiltins._Helper()


def main() -> None:
    env = os.environ
    _site_builtins()
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    task_root = env.get("LAMBDA_TASK_ROOT", os.getcwd())
    here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and sys.path[0] == here and here in sys.path[1:]:
        del sys.path[0]  # run as a script: the runtime dir is at the end of PYTHONPATH already
    if task_root not in sys.path:
        sys.path.insert(0, task_root)
    client = RuntimeClient(env["AWS_LAMBDA_RUNTIME_API"])
    encoder = make_encoder(env.get("AWS_EXECUTION_ENV", ""))
    try:
        handler = load_handler(env.get("_HANDLER", ""))
    except InitError as e:
        error = error_object(e.message, e.error_type, "", e.stack)
        log_error(error)
        end_of_output()
        client.post("/init/error", encoder.encode(error).encode(), e.error_type)
        sys.exit(1)
    Runtime(client, handler, encoder).serve_forever()


if __name__ == "__main__":
    main()
