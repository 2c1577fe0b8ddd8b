"""The built-in `file` on-failure destination and read_jsonl."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from pathlib import Path

import orjson
import pydantic
import pytest

from triggerd.delivery.destinations import (
    FileDestination,
    FileDestinationConfig,
    file_plugin,
    read_jsonl,
    rotated_paths,
)
from triggerd.types import DestinationContext, SystemClock


def ctx() -> DestinationContext:
    return DestinationContext(
        trigger="t1", clock=SystemClock(), log=logging.getLogger("test.destinations")
    )


def make(path: Path, **options: object) -> FileDestination:
    config = FileDestinationConfig.model_validate({"path": str(path), **options})
    return FileDestination(config, ctx())


async def test_records_round_trip_as_lines(tmp_path: Path) -> None:
    path = tmp_path / "dlq.jsonl"
    dest = make(path)
    records: list[dict[str, object]] = [
        {"n": 1, "s": "é\n"},
        {"nested": {"a": [1, None, True]}},
        {},
    ]
    await dest.start()
    for record in records:
        await dest.send(record)
    await dest.stop()
    assert read_jsonl(path) == records
    raw = path.read_bytes()
    assert raw.endswith(b"\n")
    assert raw.count(b"\n") == 3


async def test_send_creates_parent_directories(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "dlq.jsonl"
    await make(path).send({"x": 1})
    assert read_jsonl(path) == [{"x": 1}]


async def test_send_appends_to_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "dlq.jsonl"
    path.write_bytes(b'{"old":1}\n')
    await make(path).send({"new": 2})
    assert read_jsonl(path) == [{"old": 1}, {"new": 2}]


async def test_every_send_is_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "dlq.jsonl"
    path.touch()
    calls: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        calls.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    dest = make(path)
    for n in range(3):
        await dest.send({"n": n})
    assert len(calls) == 3


async def test_fsync_off_never_fsyncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(os, "fsync", calls.append)
    dest = make(tmp_path / "new" / "dlq.jsonl", fsync=False)
    for n in range(3):
        await dest.send({"n": n})
    assert calls == []


async def test_concurrent_sends_produce_intact_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write

    def short_write(fd: int, data: bytes | memoryview) -> int:
        # Short writes that yield the GIL: lines would interleave if sends were not serialised.
        written = real_write(fd, bytes(data[:1000]))
        time.sleep(0)
        return written

    monkeypatch.setattr(os, "write", short_write)
    path = tmp_path / "dlq.jsonl"
    dest = make(path, fsync=False)
    blob = "x" * 20_000
    async with asyncio.TaskGroup() as tg:
        for n in range(100):
            tg.create_task(dest.send({"n": n, "blob": blob}))
    records = read_jsonl(path)
    assert len(records) == 100
    assert sorted(r["n"] for r in records) == list(range(100))
    assert all(r["blob"] == blob for r in records)


def test_read_jsonl_skips_truncated_last_line(tmp_path: Path) -> None:
    path = tmp_path / "dlq.jsonl"
    path.write_bytes(b'{"a":1}\n{"b":2}\n{"c":')
    assert read_jsonl(path) == [{"a": 1}, {"b": 2}]


def test_read_jsonl_skips_unterminated_last_line_even_if_it_parses(tmp_path: Path) -> None:
    path = tmp_path / "dlq.jsonl"
    path.write_bytes(b'{"a":1}\n{"b":2}')
    assert read_jsonl(path) == [{"a": 1}]


def test_read_jsonl_skips_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "dlq.jsonl"
    path.write_bytes(b'{"a":1}\n\n{"b":2}\n')
    assert read_jsonl(path) == [{"a": 1}, {"b": 2}]


@pytest.mark.parametrize("bad", [b"{oops\n", b"[1,2]\n"])
def test_read_jsonl_rejects_corrupt_middle_line(tmp_path: Path, bad: bytes) -> None:
    path = tmp_path / "dlq.jsonl"
    path.write_bytes(b'{"a":1}\n' + bad + b'{"b":2}\n')
    with pytest.raises(ValueError, match=":2:"):
        read_jsonl(path)


async def test_send_after_crash_mid_write_removes_partial_line(tmp_path: Path) -> None:
    path = tmp_path / "dlq.jsonl"
    path.write_bytes(b'{"a":1}\n{"b":2}\n{"c":3,"tru')
    await make(path).send({"d": 4})
    assert path.read_bytes() == b'{"a":1}\n{"b":2}\n{"d":4}\n'


async def test_send_after_partial_only_file_starts_fresh(tmp_path: Path) -> None:
    path = tmp_path / "dlq.jsonl"
    path.write_bytes(b'{"c":3,"tru')
    await make(path).send({"d": 4})
    assert read_jsonl(path) == [{"d": 4}]


async def test_failed_write_raises_and_keeps_earlier_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "dlq.jsonl"
    dest = make(path)
    await dest.send({"a": 1})
    real_write = os.write

    def half_then_full(fd: int, data: bytes | memoryview) -> int:
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(OSError, match="No space"):
        await dest.send({"b": "lost" * 100})
    monkeypatch.setattr(os, "write", real_write)
    assert read_jsonl(path) == [{"a": 1}]
    await dest.send({"c": 3})
    assert read_jsonl(path) == [{"a": 1}, {"c": 3}]


async def test_unwritable_path_raises_oserror(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("file")
    with pytest.raises(OSError):
        await make(blocker / "dlq.jsonl").send({"a": 1})


async def test_path_that_is_a_directory_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        await make(tmp_path).send({"a": 1})


async def test_rotation_keeps_every_record_in_order(tmp_path: Path) -> None:
    path = tmp_path / "dlq.jsonl"
    dest = make(path, max_bytes=40, fsync=False)
    for n in range(6):
        await dest.send({"n": n, "pad": "xxxxxxxx"})  # 26 bytes a line: one line per file
    files = rotated_paths(path)
    assert [f.name for f in files] == [f"dlq.jsonl.{i}" for i in range(1, 6)] + ["dlq.jsonl"]
    records = [r for f in files for r in read_jsonl(f)]
    assert [r["n"] for r in records] == list(range(6))
    assert all(f.stat().st_size <= 40 for f in files)


async def test_rotation_never_leaves_a_file_empty_for_an_oversize_record(tmp_path: Path) -> None:
    path = tmp_path / "dlq.jsonl"
    dest = make(path, max_bytes=10, fsync=False)
    await dest.send({"big": "y" * 50})
    assert rotated_paths(path) == [path]
    assert read_jsonl(path) == [{"big": "y" * 50}]


def test_rotated_paths_of_missing_file_is_empty(tmp_path: Path) -> None:
    assert rotated_paths(tmp_path / "nothing.jsonl") == []


def test_config_defaults_and_validation() -> None:
    config = FileDestinationConfig(path="dlq.jsonl")
    assert (config.type, config.fsync, config.max_bytes) == ("file", True, None)
    with pytest.raises(pydantic.ValidationError):
        FileDestinationConfig.model_validate({"path": "x", "unknown": 1})
    with pytest.raises(pydantic.ValidationError):
        FileDestinationConfig(path="x", max_bytes=0)
    with pytest.raises(pydantic.ValidationError):
        FileDestinationConfig.model_validate({"type": "sqs", "path": "x"})


async def test_plugin_creates_a_working_destination(tmp_path: Path) -> None:
    config = file_plugin.config_model.model_validate({"path": str(tmp_path / "d.jsonl")})
    dest = file_plugin.create(config, ctx())
    await dest.start()
    await dest.send({"ok": True})
    await dest.stop()
    assert orjson.loads((tmp_path / "d.jsonl").read_bytes()) == {"ok": True}


def test_plugin_refuses_another_plugins_config() -> None:
    from tests.fakes import MemDestConfig

    with pytest.raises(TypeError, match="expected FileDestinationConfig, got MemDestConfig"):
        file_plugin.create(MemDestConfig(), ctx())


async def test_files_are_created_for_the_owner_only_or_with_the_configured_mode(
    tmp_path: Path,
) -> None:
    old = os.umask(0o022)
    try:
        await make(tmp_path / "default.jsonl").send({"n": 1})
        await make(tmp_path / "shared.jsonl", file_mode="0640").send({"n": 1})
        await make(tmp_path / "rotating.jsonl", max_bytes=10).send({"n": 1})
        await make(tmp_path / "rotating.jsonl", max_bytes=10).send({"n": 2})
    finally:
        os.umask(old)
    assert (tmp_path / "default.jsonl").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "shared.jsonl").stat().st_mode & 0o777 == 0o640
    for name in ("rotating.jsonl", "rotating.jsonl.1"):
        assert os.stat(tmp_path / name).st_mode & 0o777 == 0o600, name
    with pytest.raises(pydantic.ValidationError):
        FileDestinationConfig.model_validate({"path": "x", "file_mode": "rw-"})
