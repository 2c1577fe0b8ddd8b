"""The built-in `file` on-failure destination: one JSON record per line, fsynced before `send`
returns, and `read_jsonl` to read such a file back (used by `triggerd dlq`).

Durability: the file is opened in append mode for every record, so a crash mid-write can only
leave a partial last line. Readers skip it; the next `send` cuts it off before appending (it was
never acknowledged, so the pipeline sends it again). With `max_bytes`, a full file is renamed to
the next free `<path>.<n>` (`.1` is the oldest) before the record that would overflow it; no
rotated file is ever deleted.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import orjson
from pydantic import Field

from triggerd.types import (
    Destination,
    DestinationConfig,
    DestinationPlugin,
    JSONDict,
    OutputFile,
    plugin_config,
)

if TYPE_CHECKING:
    from triggerd.types import DestinationContext

__all__ = [
    "FileDestination",
    "FileDestinationConfig",
    "file_plugin",
    "read_jsonl",
    "rotated_paths",
]

_CHUNK = 64 * 1024


class FileDestinationConfig(DestinationConfig):
    """Append failed records to a JSON Lines file."""

    type: Literal["file"] = "file"
    path: OutputFile = Field(description="JSON Lines file; relative to the config file")
    fsync: bool = Field(default=True, description="fsync every record before acknowledging it")
    max_bytes: int | None = Field(
        default=None, gt=0, description="rotate to <path>.<n> when the file would exceed this"
    )
    file_mode: str = Field(
        default="0600",
        pattern=r"^0?[0-7]{3}$",
        description="permissions (octal) of the files it creates; records carry whole events",
    )


class FileDestination:
    """Writes each record as one line; concurrent sends never interleave."""

    def __init__(self, config: FileDestinationConfig, ctx: DestinationContext) -> None:
        # Here, not at the top: `triggerd validate` imports this module for the config
        # model, and needs no event loop (asyncio and ssl are about a tenth of its start-up).
        import asyncio

        self._config = config
        self._ctx = ctx
        self._path = Path(config.path)
        self._lock = asyncio.Lock()
        # Guards the file itself, even if a cancelled send leaves its thread still writing.
        self._file_lock = threading.Lock()

    async def start(self) -> None:
        return None

    async def send(self, record: JSONDict) -> None:
        """Append `record`; returns once it is written (and fsynced). OSError on failure."""
        from asyncio import to_thread  # imported already (__init__)

        line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        async with self._lock:
            await to_thread(self._append, line)

    async def stop(self) -> None:
        async with self._lock:  # let an in-flight write finish
            return None

    # -- in a worker thread ------------------------------------------------------------------

    def _append(self, line: bytes) -> None:
        with self._file_lock:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            if self._config.max_bytes is not None:
                self._maybe_rotate(len(line), self._config.max_bytes)
            created = not self._path.exists()
            mode = int(self._config.file_mode, 8)
            fd = os.open(self._path, os.O_RDWR | os.O_APPEND | os.O_CREAT, mode)
            try:
                if created:
                    os.fchmod(fd, mode)  # exactly the configured mode, whatever the umask
                self._cut_partial_line(fd)
                _write_all(fd, line)
                if self._config.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            if created and self._config.fsync:
                _fsync_dir(self._path.parent)

    def _cut_partial_line(self, fd: int) -> None:
        size = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return
        keep = _end_of_last_line(fd, size)
        os.ftruncate(fd, keep)
        self._ctx.log.warning(
            "destination.file.partial_line_removed",
            extra={"trigger": self._ctx.trigger, "path": str(self._path), "bytes": size - keep},
        )

    def _maybe_rotate(self, incoming: int, max_bytes: int) -> None:
        try:
            size = self._path.stat().st_size
        except FileNotFoundError:
            return
        if size == 0 or size + incoming <= max_bytes:
            return
        target = self._path.with_name(f"{self._path.name}.{_next_index(self._path)}")
        self._path.rename(target)
        if self._config.fsync:
            _fsync_dir(self._path.parent)
        self._ctx.log.info(
            "destination.file.rotated",
            extra={"trigger": self._ctx.trigger, "path": str(self._path), "to": str(target)},
        )


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _end_of_last_line(fd: int, size: int) -> int:
    """Offset just after the last newline in the file (0 when there is none)."""
    end = size
    while end > 0:
        start = max(0, end - _CHUNK)
        chunk = os.pread(fd, end - start, start)
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        end = start
    return 0


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):  # some filesystems refuse fsync on directories
            os.fsync(fd)
    finally:
        os.close(fd)


def _rotation_indexes(path: Path) -> list[int]:
    pattern = re.compile(re.escape(path.name) + r"\.([1-9][0-9]*)")
    indexes: list[int] = []
    with contextlib.suppress(FileNotFoundError):
        for entry in path.parent.iterdir():
            match = pattern.fullmatch(entry.name)
            if match:
                indexes.append(int(match.group(1)))
    return sorted(indexes)


def _next_index(path: Path) -> int:
    indexes = _rotation_indexes(path)
    return indexes[-1] + 1 if indexes else 1


def rotated_paths(path: str | os.PathLike[str]) -> list[Path]:
    """Every file of a `file` destination, oldest first: `<path>.1`, `<path>.2`, ..., `<path>`."""
    live = Path(path)
    files = [live.with_name(f"{live.name}.{n}") for n in _rotation_indexes(live)]
    if live.exists():
        files.append(live)
    return files


def read_jsonl(path: str | os.PathLike[str]) -> list[JSONDict]:
    """The records of one JSON Lines file, skipping blank lines and a partial last line.

    A partial last line (no newline) is what a crash mid-write leaves; its `send` never
    returned, so it is not a stored record. Any other line that is not a JSON object raises
    ValueError naming the line.
    """
    data = Path(path).read_bytes()
    lines = data.split(b"\n")
    lines.pop()  # after the last newline: empty, or the partial line
    records: list[JSONDict] = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not valid JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise ValueError(f"{path}:{number}: not a JSON object")
        records.append(value)
    return records


def _create(config: Any, ctx: DestinationContext) -> Destination:
    return FileDestination(plugin_config(config, FileDestinationConfig), ctx)


file_plugin = DestinationPlugin(config_model=FileDestinationConfig, create=_create)
