"""Structured logging: one JSON object per line when not on a terminal, readable text otherwise.

Log calls use a stable event name as the message and pass fields through `extra`:
`log.info("batch.invoked", extra={"trigger": t, "function": f, "request_id": r})`.
"""

from __future__ import annotations

import functools
import logging
import sys
from typing import Any, Literal

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


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        line = f"{iso_ms(record.created)} {record.levelname:<7} {record.getMessage()}"
        if fields:
            line = f"{line}  {fields}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


class FunctionLogFormatter(logging.Formatter):
    """Function output (START/END/REPORT and the handler's own lines) stays verbatim on a TTY."""

    def format(self, record: logging.LogRecord) -> str:
        fn = getattr(record, "function", "")
        return f"{fn}: {record.getMessage()}" if fn else record.getMessage()


#: Loggers of the AWS SDK, whose DEBUG records hold whole request and response bodies.
AWS_SDK_LOGGERS = ("botocore", "aiobotocore", "boto3", "s3transfer")


def cap_aws_sdk_logs() -> None:
    """Keep the AWS SDK's loggers at INFO or above, whatever the daemon's level: their DEBUG
    records include response bodies, and STS AssumeRole answers hold credentials."""
    floor = max(logging.INFO, logging.getLogger().getEffectiveLevel())
    for name in AWS_SDK_LOGGERS:
        logging.getLogger(name).setLevel(floor)


def setup_logging(level: str = "INFO", fmt: Literal["auto", "json", "text"] = "auto") -> None:
    """Configure the root logger once, for the daemon and the CLI."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
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
        fn_handler = logging.StreamHandler(sys.stderr)
        fn_handler.setFormatter(FunctionLogFormatter())
        fn_logger.addHandler(fn_handler)
        fn_logger.propagate = False
    else:
        fn_logger.propagate = True
