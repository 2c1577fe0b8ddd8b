"""Structured log lines: fixed keys, extra fields, secrets masked, timestamps."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest

from triggerd.telemetry.logs import (
    FunctionLogFormatter,
    JournalFormatter,
    JsonFormatter,
    LineBatch,
    LineFormatter,
    LineLogger,
    TextFormatter,
    indent_lines,
    setup_logging,
    syslog_priority,
)


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


TRACEBACK = (
    "[ERROR] ValueError: bad value\rTraceback (most recent call last):\r"
    '  File "/var/task/app.py", line 3, in handler\r    raise ValueError("bad value")'
)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root, fn = logging.getLogger(), logging.getLogger("triggerd.function")
    saved = (list(root.handlers), root.level, list(fn.handlers), fn.propagate)
    yield
    for logger in (root, fn):
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
    root.handlers[:], root.level, fn.handlers[:], fn.propagate = saved


def log_through_setup(
    path: Path, fmt: Literal["json", "text"], journal: str | None, mp: pytest.MonkeyPatch
) -> list[str]:
    """Configure logging onto the file `path` (with JOURNAL_STREAM as given), log an error,
    an info line and a function's traceback, and return the lines written."""
    with path.open("w") as stream:
        st = os.fstat(stream.fileno())
        if journal == "match":
            mp.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        elif journal == "other":
            mp.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + 1}")
        else:
            mp.delenv("JOURNAL_STREAM", raising=False)
        setup_logging("INFO", fmt, stream=stream)
        logging.getLogger("triggerd.daemon").error("state.write_failed", extra={"n": 1})
        logging.getLogger("triggerd.daemon").info("daemon.ready")
        logging.getLogger("triggerd.function").warning(TRACEBACK, extra={"function": "f"})
    return path.read_text().split("\n")[:-1]


def test_each_json_line_carries_its_syslog_priority_when_stderr_is_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_logging: None
) -> None:
    lines = log_through_setup(tmp_path / "out", "json", "match", monkeypatch)
    assert [line[:3] for line in lines] == ["<3>", "<6>", "<4>"]
    docs = [json.loads(line[3:]) for line in lines]
    assert docs[0]["event"] == "state.write_failed"
    # The function's traceback is one JSON field, its \r separators kept.
    assert docs[2]["event"] == TRACEBACK


def test_every_text_line_is_prefixed_on_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_logging: None
) -> None:
    lines = log_through_setup(tmp_path / "out", "text", "match", monkeypatch)
    assert len(lines) == 2 + 4  # the traceback's four lines are four journal entries
    assert lines[0].startswith("<3>") and lines[1].startswith("<6>")
    assert all(line.startswith("<4>") for line in lines[2:])


@pytest.mark.parametrize("journal", [None, "other"])
def test_no_prefix_unless_stderr_is_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_logging: None, journal: str | None
) -> None:
    lines = log_through_setup(tmp_path / "out", "json", journal, monkeypatch)
    assert len(lines) == 3 and all(line.startswith("{") for line in lines)


def test_a_functions_traceback_is_shown_as_indented_lines_as_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_logging: None
) -> None:
    lines = log_through_setup(tmp_path / "out", "text", None, monkeypatch)
    assert "\r" not in "".join(lines)
    assert lines[2:] == [
        "f: [ERROR] ValueError: bad value",
        "    Traceback (most recent call last):",
        '      File "/var/task/app.py", line 3, in handler',
        '        raise ValueError("bad value")',
    ]


def test_text_formatter_indents_carriage_return_lines() -> None:
    assert indent_lines("a\rb\r\nc\r") == "a\n    b\n    c"
    assert indent_lines("plain") == "plain"
    assert [syslog_priority(n) for n in (50, 40, 30, 20, 10)] == [2, 3, 4, 6, 7]


def test_function_logger_text_keeps_the_backends_event_fields_but_labels_output_plainly() -> None:
    fmt = FunctionLogFormatter()
    step = record(function="f", step="Collecting reqpkg==1.0")
    step.msg = "backend.build"
    assert fmt.format(step) == "f: backend.build  step=Collecting reqpkg==1.0"
    output = record(function="f", request_id="r1", stream="stdout")
    output.msg = "hello from the handler"
    assert fmt.format(output) == "f: hello from the handler"


# --------------------------------------------------------------------------------------------
# The function log's fast path: LineLogger, renderers, batched writes


RID = "9dec4ade-8b8c-4ab1-88bd-192952ebd655"
LINES = [
    f"START RequestId: {RID} Version: $LATEST",
    'printed "quoted" \\ text\twith a tab',
    TRACEBACK,
    f"REPORT RequestId: {RID}\tDuration: 0.41 ms\tBilled Duration: 1 ms\t",
]


def function_record(text: str, created: float, **fields: object) -> logging.LogRecord:
    rec = logging.LogRecord("triggerd.function", logging.INFO, __file__, 1, text, None, None)
    rec.created = created
    for key, value in fields.items():
        setattr(rec, key, value)
    return rec


@pytest.mark.parametrize(
    "formatter",
    [
        JsonFormatter(),
        TextFormatter(),
        FunctionLogFormatter(),
        JournalFormatter(JsonFormatter()),
        JournalFormatter(FunctionLogFormatter()),
    ],
    ids=["json", "text", "function", "journal-json", "journal-function"],
)
@pytest.mark.parametrize("created", [1714564800.5, 1714564800.9996, 1714564801.0004])
def test_a_renderer_writes_what_the_formatter_makes_of_the_record(
    formatter: LineFormatter, created: float
) -> None:
    render = formatter.renderer("triggerd.function", {"function": "f"}, ("request_id", "platform"))
    for text in LINES:
        expected = formatter.format(
            function_record(text, created, function="f", request_id=RID, platform=True)
        )
        assert render(created, text, (RID, True)) == expected


@pytest.mark.parametrize(
    "formatter",
    [
        JsonFormatter(),
        TextFormatter(),
        FunctionLogFormatter(),
        JournalFormatter(JsonFormatter()),
        JournalFormatter(FunctionLogFormatter()),
    ],
    ids=["json", "text", "function", "journal-json", "journal-function"],
)
def test_a_lines_renderer_writes_each_line_as_the_formatter_makes_its_record(
    formatter: LineFormatter,
) -> None:
    created = 1714564800.9996
    render = formatter.lines_renderer(
        "triggerd.function", {"function": "f"}, ("request_id", "platform")
    )
    expected = [
        formatter.format(function_record(t, created, function="f", request_id=RID, platform=True))
        for t in LINES
    ]
    assert render([(created, t) for t in LINES], (RID, True)) == "\n".join(expected)
    # Other values after the same ones: rendered anew, not the last line's fields.
    other = formatter.format(
        function_record("x", created, function="f", request_id="r2", platform=1)
    )
    assert render([(created, "x")], ("r2", 1)) == other


def test_a_json_renderer_renders_a_value_changed_in_place_anew() -> None:
    render = JsonFormatter().renderer("x", {}, ("tags",))
    tags = ["a"]
    first = render(1.0, "m", (tags,))
    tags.append("b")
    assert json.loads(first)["tags"] == ["a"]
    assert json.loads(render(1.0, "m", (tags,)))["tags"] == ["a", "b"]


def test_a_renderer_masks_secret_looking_fields_and_keeps_replaced_keys_as_a_dict_does() -> None:
    fmt = JsonFormatter()
    line = fmt.renderer("x", {"api_token": "abc"}, ("password",))(1.0, "m", ("hunter2",))
    assert json.loads(line) == {
        "ts": "1970-01-01T00:00:01.000Z",
        "level": "info",
        "logger": "x",
        "event": "m",
        "api_token": "***",
        "password": "***",
    }
    # A field named like a fixed key replaces its value, in the fixed key's place.
    line = fmt.renderer("x", {"event": "e"}, ("level",))(1.0, "m", ("warn",))
    assert json.loads(line)["event"] == "e" and json.loads(line)["level"] == "warn"


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, s: str) -> int:
        self.writes += 1
        return super().write(s)


async def test_lines_of_one_loop_iteration_are_written_with_one_write(
    restore_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    stream = CountingStream()
    setup_logging("INFO", "json", stream=stream)
    lines = LineLogger(logging.getLogger("triggerd.function"), {"function": "f"}, ("request_id",))
    for text in LINES:
        lines.info(text, RID)
    logging.getLogger("triggerd.daemon").info("daemon.ready")
    assert stream.writes == 0  # held until the loop iteration ends
    await asyncio.sleep(0)
    assert stream.writes == 1
    docs = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [d["event"] for d in docs] == [*LINES, "daemon.ready"]
    assert all(d["request_id"] == RID and d["function"] == "f" for d in docs[:4])


def test_a_later_loop_in_the_same_thread_batches_its_lines_too(
    restore_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch remembers the loop of its lines; a loop that ran and stopped is not taken
    for the running one: the next loop's lines wait for the end of its own iteration."""
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.setattr(LineBatch, "interval_s", 0.0)  # a write at every iteration's end
    stream = CountingStream()
    setup_logging("INFO", "json", stream=stream)
    lines = LineLogger(logging.getLogger("triggerd.function"), {"function": "f"}, ("request_id",))

    async def two_lines() -> tuple[int, int]:
        before = stream.writes
        lines.info("a", RID)
        lines.info("b", RID)
        held = stream.writes - before
        await asyncio.sleep(0)
        return held, stream.writes - before

    assert asyncio.run(two_lines()) == (0, 1)
    assert asyncio.run(two_lines()) == (0, 1)
    lines.info("c", RID)  # no loop running any more: written at once
    assert stream.writes == 3
    assert [json.loads(x)["event"] for x in stream.getvalue().splitlines()] == [
        "a",
        "b",
        "a",
        "b",
        "c",
    ]


async def test_the_lines_of_iterations_within_the_interval_share_one_write(
    restore_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a write, the lines of the next loop iterations wait until `interval_s` has passed
    (one write for them all, in order), unless a warning writes them first."""
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.setattr(LineBatch, "interval_s", 3600.0)
    stream = CountingStream()
    setup_logging("INFO", "json", stream=stream)
    lines = LineLogger(logging.getLogger("triggerd.function"), {"function": "f"}, ("request_id",))
    lines.info("a", RID)
    await asyncio.sleep(0)
    assert stream.writes == 1  # the first write: at the end of its iteration
    for text in ("b", "c"):
        lines.info(text, RID)
        await asyncio.sleep(0)
    assert stream.writes == 1  # within the interval: held
    logging.getLogger("triggerd.daemon").warning("state.slow")
    assert stream.writes == 2
    assert [json.loads(x)["event"] for x in stream.getvalue().splitlines()] == [
        "a",
        "b",
        "c",
        "state.slow",
    ]


async def test_lines_held_for_the_interval_are_written_once_it_has_passed(
    restore_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.setattr(LineBatch, "interval_s", 0.05)
    stream = CountingStream()
    setup_logging("INFO", "json", stream=stream)
    lines = LineLogger(logging.getLogger("triggerd.function"), {"function": "f"}, ("request_id",))
    lines.info("a", RID)
    await asyncio.sleep(0)
    lines.info("b", RID)  # right after a write: waits for the interval's end, not for a line
    async with asyncio.timeout(10):
        while stream.writes < 2:
            await asyncio.sleep(0.01)
    assert [json.loads(x)["event"] for x in stream.getvalue().splitlines()] == ["a", "b"]


async def test_lines_logged_at_once_are_written_at_once_after_those_held(
    restore_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long invocation's START (`at_once`) does not wait for the batch's next write."""
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.setattr(LineBatch, "interval_s", 3600.0)
    stream = CountingStream()
    setup_logging("INFO", "json", stream=stream)
    lines = LineLogger(logging.getLogger("triggerd.function"), {"function": "f"}, ("request_id",))
    lines.info("held", RID)
    lines.info_lines([(time.time(), "START")], RID, at_once=True)
    assert stream.writes == 1
    assert [json.loads(x)["event"] for x in stream.getvalue().splitlines()] == ["held", "START"]


async def test_a_warning_is_written_at_once_after_the_lines_held_before_it(
    restore_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    stream = CountingStream()
    setup_logging("INFO", "text", stream=stream)
    lines = LineLogger(logging.getLogger("triggerd.function"), {"function": "f"}, ("request_id",))
    lines.info("first", RID)
    logging.getLogger("triggerd.daemon").warning("state.slow")
    assert stream.writes == 1
    out = stream.getvalue().splitlines()
    assert out[0] == "f: first" and "state.slow" in out[1]


def test_without_a_running_loop_each_line_is_written_at_once(
    restore_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    stream = CountingStream()
    setup_logging("INFO", "text", stream=stream)
    LineLogger(logging.getLogger("triggerd.function"), {"function": "f"}, ("request_id",)).info(
        "hello", RID
    )
    assert stream.getvalue() == "f: hello\n"


async def test_another_handler_gets_records_with_the_fields(
    restore_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    stream = CountingStream()
    setup_logging("INFO", "json", stream=stream)
    seen: list[logging.LogRecord] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    logger = logging.getLogger("triggerd.function")
    logger.addHandler(Capture())
    lines = LineLogger(logger, {"function": "f"}, ("request_id", "platform"))
    lines.info("100% done %s", RID, True)  # verbatim: no %-formatting
    await asyncio.sleep(0)
    assert [(r.getMessage(), r.function, r.request_id, r.platform) for r in seen] == [  # type: ignore[attr-defined]
        ("100% done %s", "f", RID, True)
    ]
    assert json.loads(stream.getvalue())["event"] == "100% done %s"


async def test_lines_logged_together_keep_their_order_on_both_paths(
    restore_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    stream = CountingStream()
    setup_logging("INFO", "json", stream=stream)
    logger = logging.getLogger("triggerd.function")
    lines = LineLogger(logger, {"function": "f"}, ("request_id", "platform"))
    lines.info(LINES[0], RID, True)
    lines.info_lines([(time.time(), t) for t in LINES[1:]], RID, True)
    await asyncio.sleep(0)
    assert stream.writes == 1
    assert [json.loads(x)["event"] for x in stream.getvalue().splitlines()] == LINES

    seen: list[logging.LogRecord] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    logger.addHandler(Capture())  # no longer the sole handler: one record per line
    lines.info_lines([(1.5, LINES[0]), *((time.time(), t) for t in LINES[1:])], RID, True)
    assert [(r.getMessage(), r.request_id) for r in seen] == [(t, RID) for t in LINES]  # type: ignore[attr-defined]
    assert seen[0].created == 1.5 and seen[1].created > 1.5


def test_asyncpg_pool_reconnect_failures_are_one_line_without_a_traceback(
    restore_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """asyncpg's pool logs each failed reconnection with exc_info: the daemon keeps the
    error's text, not the traceback."""
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    stream = io.StringIO()
    setup_logging("INFO", "json", stream=stream)
    try:
        raise ConnectionRefusedError("role x is not permitted to log in")
    except ConnectionRefusedError:
        logging.getLogger("asyncpg.pool").warning("Failed to restore", exc_info=True)
    logging.getLogger().handlers[0].flush()
    [doc] = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert doc["event"] == "Failed to restore"
    assert doc["error"] == "ConnectionRefusedError: role x is not permitted to log in"
    assert "exc" not in doc and "Traceback" not in stream.getvalue()


def test_lines_held_when_a_commands_loop_ends_are_written_before_it_returns(
    restore_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write scheduled for lines held within the interval is dropped with the loop when
    `asyncio.run` returns: they waited for the next line or the process's exit (a command's
    last lines after its output, or a prompt)."""
    from triggerd.cli.main import _run_async

    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.setattr(LineBatch, "interval_s", 3600.0)
    stream = CountingStream()
    setup_logging("INFO", "json", stream=stream)

    async def command() -> int:
        log = logging.getLogger("triggerd.cli")
        log.info("first")
        await asyncio.sleep(0)
        log.info("last")  # within the interval after the first write: held
        return 0

    assert _run_async(command()) == 0
    assert [json.loads(x)["event"] for x in stream.getvalue().splitlines()] == ["first", "last"]
