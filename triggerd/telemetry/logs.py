"""Structured logging: one JSON object per line when not on a terminal, readable text otherwise.

Under systemd, when stderr is the journal (`JOURNAL_STREAM` names stderr's device and inode),
every line starts with its syslog priority (`<3>` for errors, as sd-daemon(3) describes), so
`journalctl -p err` finds them. A function's multi-line output arrives as Lambda writes it,
lines joined with `\r` (one CloudWatch event): on a terminal it is shown as indented lines;
in JSON it stays one field.

Log calls use a stable event name as the message and pass fields through `extra`:
`log.info("batch.invoked", extra={"trigger": t, "function": f, "request_id": r})`.

Function logs are the busiest lines (START, END and REPORT for every invocation, and each line
the function prints), so they stay cheap: `LineLogger` builds their records from a template
instead of `Logger.makeRecord`, and the handlers `setup_logging` installs write the lines of one
event-loop iteration with one write, at most one such write per 20 ms (`LineBatch`); warnings
and errors are written at once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from operator import is_
from typing import Any, Literal, TextIO, cast

import orjson

from triggerd.events.timestamps import iso_ms

#: Attributes every LogRecord has; everything else on a record came from `extra`.
_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)
#: Field names that must never be logged with their value.
_SECRET_HINTS = ("password", "secret", "token", "authorization", "credential")


@functools.cache
def _is_secret(key: str) -> bool:
    """Whether a field name hints at a secret (field names are few: decided once each)."""
    lowered = key.lower()
    return any(hint in lowered for hint in _SECRET_HINTS)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in vars(record).items():
        if key in _STANDARD or key.startswith("_"):
            continue
        out[key] = "***" if _is_secret(key) else value
    return out


def _masked(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: "***" if _is_secret(k) else v for k, v in fields.items()}


#: Renders one INFO line from its time, message and field values (see `LineFormatter`).
Renderer = Callable[[float, str, tuple[Any, ...]], str]
#: Renders INFO lines with the same field values, one per (time, message), joined by newlines
#: (see `LineFormatter.lines_renderer`).
LinesRenderer = Callable[[Sequence[tuple[float, str]], tuple[Any, ...]], str]


class LineFormatter(logging.Formatter):
    """A formatter that also writes an INFO line from its parts, without a record: the line
    `format` gives for an INFO record of that logger, time, message and extra fields (what
    `LineLogger` writes for the function log's lines)."""

    def info_line(self, logger: str, created: float, text: str, fields: dict[str, Any]) -> str:
        raise NotImplementedError

    def renderer(self, logger: str, fixed: dict[str, Any], names: tuple[str, ...]) -> Renderer:
        """`info_line` for lines with these fixed fields and field names, taking the values;
        formatters do the work that is the same for every such line here, once."""

        def render(created: float, text: str, values: tuple[Any, ...]) -> str:
            fields = {**fixed, **dict(zip(names, values, strict=True))}
            return self.info_line(logger, created, text, fields)

        return render

    def lines_renderer(
        self, logger: str, fixed: dict[str, Any], names: tuple[str, ...]
    ) -> LinesRenderer:
        """`renderer`'s lines for several (time, message) pairs logged together with the same
        field values (an invocation's START, END and REPORT), joined by newlines. Formatters
        render the part the lines share once."""
        render = self.renderer(logger, fixed, names)

        def render_lines(lines: Sequence[tuple[float, str]], values: tuple[Any, ...]) -> str:
            return "\n".join([render(created, text, values) for created, text in lines])

        return render_lines


class JsonFormatter(LineFormatter):
    def format(self, record: logging.LogRecord) -> str:
        exc = self.formatException(record.exc_info) if record.exc_info else None
        level = record.levelname.lower()
        return _json_line(
            level, record.name, record.created, record.getMessage(), _fields(record), exc
        )

    def info_line(self, logger: str, created: float, text: str, fields: dict[str, Any]) -> str:
        return _json_line("info", logger, created, text, _masked(fields), None)

    def renderer(self, logger: str, fixed: dict[str, Any], names: tuple[str, ...]) -> Renderer:
        parts = self._parts(logger, fixed, names)
        if parts is None:
            return super().renderer(logger, fixed, names)  # keys that replace others
        head, fields = parts
        dumps = orjson.dumps

        def render(created: float, text: str, values: tuple[Any, ...]) -> str:
            return head(created) + dumps(text).decode() + fields(values)

        return render

    def lines_renderer(
        self, logger: str, fixed: dict[str, Any], names: tuple[str, ...]
    ) -> LinesRenderer:
        parts = self._parts(logger, fixed, names)
        if parts is None:
            return super().lines_renderer(logger, fixed, names)
        head, fields = parts
        dumps = orjson.dumps

        def render_lines(lines: Sequence[tuple[float, str]], values: tuple[Any, ...]) -> str:
            tail = fields(values)
            out = []
            shown = start = None
            for created, text in lines:
                if created != shown:  # END and REPORT share their time: one stamp for both
                    shown, start = created, head(created)
                out.append(f"{start}{dumps(text).decode()}{tail}")
            return "\n".join(out)

        return render_lines

    @staticmethod
    def _parts(
        logger: str, fixed: dict[str, Any], names: tuple[str, ...]
    ) -> tuple[Callable[[float], str], Callable[[tuple[Any, ...]], str]] | None:
        """The JSON object `info_line` makes, in two parts rendered from their constant text
        (the level, the logger, the fixed fields and each field's key, made once here): the
        start of the line up to the event's value, from the time; and the rest after it, from
        the field values. None when a field replaces another key (then only a dict gives the
        order `info_line` has)."""
        reserved = {"ts", "level", "logger", "event", "exc"}
        if (
            len(set(names)) < len(names)
            or reserved & (set(fixed) | set(names))
            or set(fixed) & set(names)
        ):
            return None
        dumps = orjson.dumps
        middle = '","level":"info","logger":' + dumps(logger).decode() + ',"event":'
        constant = dumps(_masked(fixed), default=str).decode()[1:-1]
        keys = tuple("," + dumps(name).decode() + ":" for name in names)  # after "event"
        secret = tuple(_is_secret(name) for name in names)
        tail = "," + constant if constant else ""
        clock = _Stamps()

        stamp = clock.iso_ms
        # The lines of one invocation give the same values (the same objects): the last ones
        # are kept rendered, when none of them could change in place.
        last: list[Any] = [None, ""]

        def head(created: float) -> str:
            return '{"ts":"' + stamp(created) + middle

        masked = any(secret)

        def fields(values: tuple[Any, ...]) -> str:
            prev = last[0]
            if prev is not None and len(prev) == len(values) and all(map(is_, prev, values)):
                return cast(str, last[1])
            if masked:
                out = [tail]
                for key, hidden, value in zip(keys, secret, values, strict=True):
                    out.append(key)
                    out.append('"***"' if hidden else dumps(value, default=str).decode())
                out.append("}")
                text = "".join(out)
            else:
                # One call for all the fields: the object orjson makes of them, without its
                # opening brace, is the same text as the fields rendered one by one.
                rendered = dumps(dict(zip(names, values, strict=True)), default=str).decode()
                text = tail + ("," + rendered[1:] if len(rendered) > 2 else "}")
            if _IMMUTABLE.issuperset(map(type, values)):
                last[0], last[1] = values, text
            return text

        return head, fields


#: Field value types a renderer may keep the rendering of (see `JsonFormatter._parts`).
_IMMUTABLE = frozenset({str, bool, int, float, type(None)})

#: ".000Z" to ".999Z": the milliseconds part of a timestamp.
_MILLIS = tuple(f".{n:03d}Z" for n in range(1000))


class _Stamps:
    """`iso_ms` for one renderer's lines, which mostly share their second: the second's text
    is kept, and only the milliseconds are looked up per line."""

    __slots__ = ("_second", "_text")

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def iso_ms(self, epoch: float) -> str:
        whole, millis = divmod(round(epoch * 1000), 1000)
        if whole != self._second:
            self._second = whole
            self._text = iso_ms(whole)[:-5]
        return self._text + _MILLIS[millis]


def _json_line(
    level: str, logger: str, created: float, text: str, fields: dict[str, Any], exc: str | None
) -> str:
    doc: dict[str, Any] = {"ts": iso_ms(created), "level": level, "logger": logger, "event": text}
    doc.update(fields)
    if exc:
        doc["exc"] = exc
    return orjson.dumps(doc, default=str).decode()


def indent_lines(text: str) -> str:
    """Lambda's `\r`-joined lines (a traceback) as lines, the later ones indented; a bare
    `\r` on a terminal would return the cursor and leave only the last fragment visible."""
    if "\r" not in text:
        return text
    first, *rest = text.replace("\r\n", "\r").rstrip("\r").split("\r")
    return "\n".join([first, *(f"    {line}" for line in rest)])


def syslog_priority(levelno: int) -> int:
    """The syslog priority of a logging level (3 = err, 4 = warning, 6 = info, 7 = debug)."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


class JournalFormatter(LineFormatter):
    """Prefixes every line of another formatter's output with the record's `<priority>`,
    which journald strips and stores as PRIORITY (each line is its own journal entry)."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return _prefixed(f"<{syslog_priority(record.levelno)}>", self.inner.format(record))

    def info_line(self, logger: str, created: float, text: str, fields: dict[str, Any]) -> str:
        if not isinstance(self.inner, LineFormatter):
            raise NotImplementedError
        return _prefixed("<6>", self.inner.info_line(logger, created, text, fields))

    def renderer(self, logger: str, fixed: dict[str, Any], names: tuple[str, ...]) -> Renderer:
        if not isinstance(self.inner, LineFormatter):
            raise NotImplementedError
        inner = self.inner.renderer(logger, fixed, names)

        def render(created: float, text: str, values: tuple[Any, ...]) -> str:
            return _prefixed("<6>", inner(created, text, values))

        return render

    def lines_renderer(
        self, logger: str, fixed: dict[str, Any], names: tuple[str, ...]
    ) -> LinesRenderer:
        if not isinstance(self.inner, LineFormatter):
            raise NotImplementedError
        inner = self.inner.lines_renderer(logger, fixed, names)

        def render_lines(lines: Sequence[tuple[float, str]], values: tuple[Any, ...]) -> str:
            return _prefixed("<6>", inner(lines, values))

        return render_lines


def _prefixed(prefix: str, text: str) -> str:
    if "\n" not in text:
        return prefix + text
    return "\n".join(prefix + line for line in text.split("\n"))


def stderr_is_journal(stream: TextIO, environ: Any = None) -> bool:
    """Whether `stream` is the journal: `JOURNAL_STREAM` ("device:inode", set by systemd for
    a unit whose output goes to the journal) matches the stream's file."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    device, sep, inode = value.partition(":")
    if not sep or not device.isdigit() or not inode.isdigit():
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return st.st_dev == int(device) and st.st_ino == int(inode)


class TextFormatter(LineFormatter):
    def format(self, record: logging.LogRecord) -> str:
        line = _text_line(record.levelname, record.created, record.getMessage(), _fields(record))
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line

    def info_line(self, logger: str, created: float, text: str, fields: dict[str, Any]) -> str:
        return _text_line("INFO", created, text, _masked(fields))


def _text_line(levelname: str, created: float, text: str, fields: dict[str, Any]) -> str:
    line = f"{iso_ms(created)} {levelname:<7} {indent_lines(text)}"
    if fields:
        line = f"{line}  {' '.join(f'{k}={v}' for k, v in fields.items())}"
    return line


class FunctionLogFormatter(LineFormatter):
    """Function output (START/END/REPORT and the handler's own lines) stays verbatim on a TTY."""

    def format(self, record: logging.LogRecord) -> str:
        return _function_line(record.getMessage(), _fields(record))

    def info_line(self, logger: str, created: float, text: str, fields: dict[str, Any]) -> str:
        return _function_line(text, _masked(fields))


def _function_line(text: str, fields: dict[str, Any]) -> str:
    fn = fields.get("function", "")
    message = indent_lines(text)
    # The backend's own events on this logger (backend.build with its pip line, a worker that
    # crashed...) keep their fields; the function's output lines carry none beyond those it
    # is labelled with.
    shown = " ".join(f"{k}={v}" for k, v in fields.items() if k not in _OUTPUT_LABELS)
    line = f"{fn}: {message}" if fn else message
    return f"{line}  {shown}" if shown else line


#: The fields function output lines are labelled with (FunctionLogFormatter leaves them out).
_OUTPUT_LABELS = frozenset({"function", "request_id", "stream", "platform"})


#: Loggers of the AWS SDK, whose DEBUG records hold whole request and response bodies.
AWS_SDK_LOGGERS = ("botocore", "aiobotocore", "boto3", "s3transfer")


def cap_aws_sdk_logs() -> None:
    """Keep the AWS SDK's loggers at INFO or above, whatever the daemon's level: their DEBUG
    records include response bodies, and STS AssumeRole answers hold credentials."""
    floor = max(logging.INFO, logging.getLogger().getEffectiveLevel())
    for name in AWS_SDK_LOGGERS:
        logging.getLogger(name).setLevel(floor)


#: Loggers of libraries that log an expected failure with its traceback (asyncpg's pool,
#: reconnecting while PostgreSQL refuses or cannot be reached): one line with the error.
ONE_LINE_LOGGERS = ("asyncpg.pool",)


class OneLineErrors(logging.Filter):
    """Replaces a record's traceback by its exception's text, in an `error` field."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info:
            exc = record.exc_info[1]
            if exc is not None and not hasattr(record, "error"):
                record.error = f"{type(exc).__name__}: {exc}"
            record.exc_info = None
            record.exc_text = None
        return True


def one_line_library_errors() -> None:
    """Install `OneLineErrors` on ONE_LINE_LOGGERS (once)."""
    for name in ONE_LINE_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, OneLineErrors) for f in logger.filters):
            logger.addFilter(OneLineErrors())


#: Lines held for the end of an event-loop iteration at most (a burst writes earlier).
BATCH_MAX_LINES = 512


class LineBatch:
    """Formatted lines for one stream, written together: the lines logged on the event loop's
    thread go out with one write (and one flush) at the end of the loop iteration, instead of
    one system call per line, and at most one such write per `interval_s` (under load a loop
    iteration lasts a few hundred microseconds: the lines of the iterations within the
    interval wait for its end and share one write). Lines logged with no running loop or from
    another thread, and warnings and errors, are written at once (after the lines held,
    keeping the order). The handlers of one stream share one batch, so their lines keep their
    order too. What is held is written on `flush` (logging's shutdown at exit calls it)."""

    #: The least time between two writes of held lines (seconds).
    interval_s = 0.02

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._lines: list[str] = []
        self._lock = threading.Lock()
        #: The loop of the last line held, and its thread: while that loop runs, a line from
        #: that thread is a line of that loop (one loop runs in a thread at a time), which
        #: spares `get_running_loop` (a getpid(2) on Python 3.11) on every line.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        #: The loop a flush of the lines held is scheduled on (None: none is).
        self._flush_loop: asyncio.AbstractEventLoop | None = None
        #: `time.monotonic()` of the last write.
        self._written_at = -math.inf

    def _running_loop(self) -> asyncio.AbstractEventLoop | None:
        loop = self._loop
        if loop is not None and loop.is_running() and threading.get_ident() == self._loop_thread:
            return loop
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        self._loop, self._loop_thread = loop, threading.get_ident()
        return loop

    def add(self, line: str, urgent: bool) -> None:
        loop = None if urgent else self._running_loop()
        with self._lock:
            lines = self._lines
            lines.append(line)
            if loop is None or len(lines) >= BATCH_MAX_LINES:
                self._write(lines)
            elif self._flush_loop is not loop:
                # The first line held on this loop: a flush at the end of this iteration, or
                # once `interval_s` has passed since the last write.
                self._flush_loop = loop
                wait = self._written_at + self.interval_s - time.monotonic()
                if wait > 0:
                    loop.call_later(wait, self.flush)
                else:
                    loop.call_soon(self.flush)

    def flush(self) -> None:
        with self._lock:
            if self._lines:
                self._write(self._lines)

    def _write(self, lines: list[str]) -> None:
        text = "\n".join(lines) + "\n"
        lines.clear()
        self._flush_loop = None
        self._written_at = time.monotonic()
        self.stream.write(text)
        self.stream.flush()


class BatchedStreamHandler(logging.Handler):
    """A stream handler whose lines go through a `LineBatch` (one write per loop iteration);
    `stream` is the stream, as on `logging.StreamHandler`."""

    def __init__(self, batch: LineBatch) -> None:
        super().__init__()
        self.batch = batch
        self.stream = batch.stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # logging's contract: report through handleError, never raise
            self.handleError(record)
            return
        self.batch.add(line, record.levelno >= logging.WARNING)

    def flush(self) -> None:
        self.batch.flush()


class LineLogger:
    """Cheap INFO lines with fixed fields on one logger, for lines logged by the thousand (a
    function's output and its START/END/REPORT lines), declared once: the fixed fields and the
    names of the fields each line gives (`info(text, *values)`).

    When the logger's lines reach only the handler `setup_logging` installed, each line is
    rendered straight into that handler's batch by a renderer its formatter made once for
    these fields (the same text `format` makes of a record, without a record). Otherwise (a
    test's capture handler, a filter, another thread) a record is built, from a template rather
    than by `Logger.makeRecord`, which looks up the caller's file, thread and process for every
    record, and goes through the logger's handlers and filters as any record does."""

    __slots__ = ("_fixed", "_names", "_render", "_render_lines", "_template", "_thread", "logger")

    def __init__(self, logger: logging.Logger, fixed: dict[str, Any], names: tuple[str, ...]):
        self.logger = logger
        record = logger.makeRecord(logger.name, logging.INFO, __file__, 0, "", (), None)
        self._template = vars(record)
        self._fixed = fixed
        self._names = names
        self._thread = record.thread
        self._render: tuple[LineFormatter, Renderer] | None = None
        self._render_lines: tuple[LineFormatter, LinesRenderer] | None = None

    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def info(self, text: str, *values: Any) -> None:
        """Log `text` verbatim (no %-formatting) at INFO with the fixed fields and `values`
        for the declared names (the caller checked `enabled`)."""
        logger = self.logger
        on_thread = threading.get_ident() == self._thread
        handler = _sole_handler(logger) if on_thread else None
        if handler is not None:
            formatter = cast(LineFormatter, handler.formatter)
            render = self._render
            if render is None or render[0] is not formatter:
                made = formatter.renderer(logger.name, self._fixed, self._names)
                render = self._render = (formatter, made)
            handler.batch.add(render[1](time.time(), text, values), False)
            return
        self._record(time.time(), text, values)

    def _record(self, created: float, text: str, values: tuple[Any, ...]) -> None:
        """A record of the line, through the logger's handlers and filters."""
        logger = self.logger
        extra = {**self._fixed, **dict(zip(self._names, values, strict=True))}
        if threading.get_ident() != self._thread:
            name = logger.name
            record = logger.makeRecord(name, logging.INFO, __file__, 0, text, (), None, None, extra)
            record.created = created
            record.msecs = int((created - int(created)) * 1000) + 0.0
            logger.handle(record)
            return
        template = self._template
        record = logging.LogRecord.__new__(logging.LogRecord)
        attrs = dict(template)
        attrs["msg"] = text
        attrs["created"] = created
        attrs["msecs"] = int((created - int(created)) * 1000) + 0.0
        relative = template["relativeCreated"] + (created - template["created"]) * 1000
        attrs["relativeCreated"] = relative
        attrs.update(extra)
        record.__dict__ = attrs
        logger.handle(record)

    def info_lines(
        self, lines: Sequence[tuple[float, str]], *values: Any, at_once: bool = False
    ) -> None:
        """`info` for each (time, text) of `lines` in order, logged together (an invocation's
        START, END and REPORT), each with its own time (`time.time()`'s: a line held back
        keeps the time it was logged at). On the fast path what the lines share is rendered
        once and they join the batch with one call, written with the batch's next write, or
        `at_once` (the START of an invocation still running); otherwise each is a record."""
        logger = self.logger
        handler = _sole_handler(logger) if threading.get_ident() == self._thread else None
        if handler is None:
            for created, text in lines:
                self._record(created, text, values)
            return
        formatter = cast(LineFormatter, handler.formatter)
        render = self._render_lines
        if render is None or render[0] is not formatter:
            made = formatter.lines_renderer(logger.name, self._fixed, self._names)
            render = self._render_lines = (formatter, made)
        handler.batch.add(render[1](lines, values), at_once)


def _sole_handler(logger: logging.Logger) -> BatchedStreamHandler | None:
    """The handler an INFO record of `logger` would reach, when it is the only one, a
    `BatchedStreamHandler` with a `LineFormatter`, and nothing filters on the way (no logger
    or handler filters, levels that let INFO through); else None."""
    if logger.filters or logger.disabled:
        return None
    found: BatchedStreamHandler | None = None
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if (
                found is not None
                or type(handler) is not BatchedStreamHandler
                or handler.filters
                or handler.level > logging.INFO
            ):
                return None
            found = handler
        if not current.propagate:
            break
        current = current.parent
    if found is None or not isinstance(found.formatter, LineFormatter):
        return None
    if isinstance(found.formatter, JournalFormatter) and not isinstance(
        found.formatter.inner, LineFormatter
    ):
        return None
    return found


def setup_logging(
    level: str = "INFO",
    fmt: Literal["auto", "json", "text"] = "auto",
    stream: TextIO | None = None,
) -> None:
    """Configure the root logger once, for the daemon and the CLI (on stderr by default)."""
    out = sys.stderr if stream is None else stream
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    journal = stderr_is_journal(out)

    def formatter(inner: logging.Formatter) -> logging.Formatter:
        return JournalFormatter(inner) if journal else inner

    batch = LineBatch(out)
    handler = BatchedStreamHandler(batch)
    handler.setFormatter(formatter(JsonFormatter() if use_json else TextFormatter()))
    root = logging.getLogger()
    for old in list(root.handlers):
        old.flush()
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    cap_aws_sdk_logs()
    one_line_library_errors()
    fn_logger = logging.getLogger("triggerd.function")
    for old in list(fn_logger.handlers):
        old.flush()
        fn_logger.removeHandler(old)
    if not use_json:
        fn_handler = BatchedStreamHandler(batch)
        fn_handler.setFormatter(formatter(FunctionLogFormatter()))
        fn_logger.addHandler(fn_handler)
        fn_logger.propagate = False
    else:
        fn_logger.propagate = True


def flush_logs() -> None:
    """Write the lines `setup_logging`'s handlers hold: a loop that ends (`asyncio.run`
    returning) drops the write scheduled for its lines held within `LineBatch.interval_s`,
    which would otherwise wait for the next line or the process's exit."""
    for name in ("", "triggerd.function"):
        for handler in logging.getLogger(name).handlers:
            handler.flush()
