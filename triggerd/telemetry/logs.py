"""Structured logging: one JSON object per line when not on a terminal, readable text otherwise.

Under systemd, when stderr is the journal (`JOURNAL_STREAM` names stderr's device and inode),
every line starts with its syslog priority (`<3>` for errors, as sd-daemon(3) describes), so
`journalctl -p err` finds them. A function's multi-line output arrives as Lambda writes it,
lines joined with `\r` (one CloudWatch event): on a terminal it is shown as indented lines;
in JSON it stays one field.

Log calls use a stable event name as the message and pass fields through `extra`:
`log.info("batch.invoked", extra={"trigger": t, "function": f, "request_id": r})`.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from typing import Any, Literal, TextIO

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


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": iso_ms(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        doc.update(_fields(record))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
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


class JournalFormatter(logging.Formatter):
    """Prefixes every line of another formatter's output with the record's `<priority>`,
    which journald strips and stores as PRIORITY (each line is its own journal entry)."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in self.inner.format(record).split("\n"))


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


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        message = indent_lines(record.getMessage())
        line = f"{iso_ms(record.created)} {record.levelname:<7} {message}"
        if fields:
            line = f"{line}  {fields}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


class FunctionLogFormatter(logging.Formatter):
    """Function output (START/END/REPORT and the handler's own lines) stays verbatim on a TTY."""

    def format(self, record: logging.LogRecord) -> str:
        fn = getattr(record, "function", "")
        message = indent_lines(record.getMessage())
        # The backend's own events on this logger (backend.build with its pip line, a worker
        # that crashed...) keep their fields; the function's output lines carry none beyond
        # those it is labelled with.
        fields = " ".join(f"{k}={v}" for k, v in _fields(record).items() if k not in _OUTPUT_LABELS)
        line = f"{fn}: {message}" if fn else message
        return f"{line}  {fields}" if fields else line


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

    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter(JsonFormatter() if use_json else TextFormatter()))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    cap_aws_sdk_logs()
    fn_logger = logging.getLogger("triggerd.function")
    for old in list(fn_logger.handlers):
        fn_logger.removeHandler(old)
    if not use_json:
        fn_handler = logging.StreamHandler(out)
        fn_handler.setFormatter(formatter(FunctionLogFormatter()))
        fn_logger.addHandler(fn_handler)
        fn_logger.propagate = False
    else:
        fn_logger.propagate = True
