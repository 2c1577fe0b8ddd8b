"""Structured log lines: fixed keys, extra fields, secrets masked, timestamps."""

from __future__ import annotations

import json
import logging

from triggerd.telemetry.logs import JsonFormatter, TextFormatter


def record(**extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("triggerd.test", logging.INFO, __file__, 1, "batch.invoked", None, None)
    rec.created = 1714564800.5
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_json_line_has_fixed_keys_and_the_extra_fields() -> None:
    line = JsonFormatter().format(record(trigger="t", function="f", request_id="r"))
    assert json.loads(line) == {
        "ts": "2024-05-01T12:00:00.500Z",
        "level": "info",
        "logger": "triggerd.test",
        "event": "batch.invoked",
        "trigger": "t",
        "function": "f",
        "request_id": "r",
    }


def test_secret_looking_fields_are_masked_in_both_formats() -> None:
    rec = record(password="hunter2", auth_token="abc", secret_key="k")
    for formatter in (JsonFormatter(), TextFormatter()):
        out = formatter.format(rec)
        assert "hunter2" not in out and "abc" not in out and "=k" not in out
