"""File selection (globs), directory scans, stats and hashing. Blocking: call in a thread."""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

#: (mtime_ns, size) of a regular file.
FileStat = tuple[int, int]
#: What a stat of a path found: a file's (mtime_ns, size), "dir", "other" (fifo, socket, ...)
#: or None (the path does not exist).
PathState = FileStat | Literal["dir", "other"] | None

_TEMP_SUFFIXES = (".tmp", ".swp", ".swx", ".part", ".crdownload", "~")
_CHUNK = 1024 * 1024


class StopFlag(Protocol):
    """What a scan looks at between directories (an asyncio.Event's `is_set` only reads
    a flag, so a scan's thread may call it)."""

    def is_set(self) -> bool: ...


class ScanStopped(Exception):
    """A scan given up because its source is stopping (its result would be incomplete)."""


def _translate_segment(segment: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(segment):
        c = segment[i]
        if c == "*":
            out.append("[^/]*")
            while i + 1 < len(segment) and segment[i + 1] == "*":
                i += 1
        elif c == "?":
            out.append("[^/]")
        elif c == "[" and "]" in segment[i + 2 :]:
            end = segment.index("]", i + 2)
            body = segment[i + 1 : end]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Compile a glob on POSIX relative paths: `*` and `?` stay within one path segment,
    `**` as a whole segment matches any number of segments (including none), `[abc]` and
    `[!abc]` are character classes."""
    parts = pattern.strip("/").split("/")
    out: list[str] = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            out.append(".*" if last else "(?:.*/)?")
        else:
            out.append(_translate_segment(part) + ("" if last else "/"))
    return re.compile("".join(out) + r"\Z", re.DOTALL)


class _Glob:
    __slots__ = ("basename_only", "regex")

    def __init__(self, pattern: str) -> None:
        self.basename_only = "/" not in pattern.strip("/")
        self.regex = glob_to_regex(pattern)

    def matches(self, rel: str) -> bool:
        subject = rel.rpartition("/")[2] if self.basename_only else rel
        return self.regex.match(subject) is not None


def is_temporary(rel: str) -> bool:
    """Hidden (any segment starting with `.`) or an editor/download temporary file."""
    if rel.startswith(".") or "/." in rel:
        return True
    name = rel.rpartition("/")[2]
    return name.endswith(_TEMP_SUFFIXES) or (len(name) > 1 and name[0] == name[-1] == "#")


class PathFilter:
    """Which files (relative POSIX paths) the source reports."""

    def __init__(
        self,
        include: Sequence[str] = ("**",),
        exclude: Sequence[str] = (),
        *,
        ignore_temporary: bool = True,
        recursive: bool = True,
    ) -> None:
        self._include = [_Glob(p) for p in include]
        #: `**` selects every path: no pattern to match then.
        self._include_all = any(p.strip("/") == "**" for p in include)
        self._exclude = [_Glob(p) for p in exclude]
        self._ignore_temporary = ignore_temporary
        self.recursive = recursive

    def matches(self, rel: str) -> bool:
        if not self.recursive and "/" in rel:
            return False
        if self._ignore_temporary and is_temporary(rel):
            return False
        if not self._include_all and not any(g.matches(rel) for g in self._include):
            return False
        return not any(g.matches(rel) for g in self._exclude)

    def descend(self, rel_dir: str) -> bool:
        """Whether a scan goes into this directory at all."""
        if not self.recursive:
            return False
        return not (self._ignore_temporary and rel_dir.rpartition("/")[2].startswith("."))


def _join(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


def scan_tree(
    root: str, path_filter: PathFilter, under: str = "", stop: StopFlag | None = None
) -> dict[str, FileStat]:
    """Every selected regular file below `root` (or below `root/under`): rel path -> stat.

    Symlinked files are followed; symlinked directories are not entered (no loops). Entries
    that vanish during the scan are skipped. Once `stop` is set, the scan raises ScanStopped
    before its next directory: a thread cannot be cancelled, and the process's exit waits
    for it (seconds on a tree of a million files).
    """
    found: dict[str, FileStat] = {}
    pending = [under]
    while pending:
        if stop is not None and stop.is_set():
            raise ScanStopped(root)
        rel_dir = pending.pop()
        try:
            with os.scandir(os.path.join(root, rel_dir) if rel_dir else root) as it:
                entries = list(it)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        for entry in entries:
            rel = _join(rel_dir, entry.name)
            try:
                if entry.is_dir(follow_symlinks=False):
                    if path_filter.descend(rel):
                        pending.append(rel)
                    continue
                if not path_filter.matches(rel):
                    continue
                st = entry.stat()
            except (FileNotFoundError, PermissionError):
                continue
            if stat.S_ISREG(st.st_mode):
                found[rel] = (st.st_mtime_ns, st.st_size)
    return found


def stat_path(root: str, rel: str) -> PathState:
    return _path_state(os.path.join(root, rel))


def _path_state(path: str) -> PathState:
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        return "other"
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    if stat.S_ISREG(st.st_mode):
        return (st.st_mtime_ns, st.st_size)
    return "other"


@dataclass(frozen=True, slots=True)
class Hashed:
    etag: str
    #: The file's stat after hashing: if it differs from the stat before, the file changed.
    after: PathState


#: What `examine_many` found for one path: its state now, and the file's hash when asked for
#: and the state was the expected one (an OSError when reading it failed), else None.
Examined = tuple[PathState, Hashed | OSError | None]


def examine_many(
    root: str, items: Sequence[tuple[str, PathState, bool]], budget_bytes: int
) -> dict[str, Examined]:
    """Stat each `(rel, expected, want_hash)` and, when `want_hash` and the path still has
    the `expected` state, hash it in the same pass: one thread hand-off confirms a batch of
    settled paths and hashes them, rather than one to stat them and others to hash.

    Stops once `budget_bytes` have been hashed (so a hand-off serves many small files but a
    huge one does not hold up the rest for long): paths not reached are absent from the
    result. A file that vanished while being hashed is given its state after."""
    out: dict[str, Examined] = {}
    read = 0
    buf = bytearray(_CHUNK)
    base = _base(root)
    for rel, expected, want_hash in items:
        if out and read >= budget_bytes:
            break
        path = base + rel
        state = _path_state(path)
        if not (want_hash and isinstance(state, tuple) and state == expected):
            out[rel] = (state, None)
            continue
        try:
            hashed = _hash(path, buf, state[1])
        except OSError as exc:
            out[rel] = (state, exc)
            continue
        if hashed is None:
            out[rel] = (_path_state(path), None)
            continue
        out[rel] = (state, hashed)
        read += state[1]
    return out


#: A changed path to look at for the first time: `(rel, min_ctime_ns, known)`. With a
#: `min_ctime_ns`, a regular file whose state differs from `known` (what consumers were told,
#: or None) and whose ctime lies between it and `observe_many`'s `max_ctime_ns` is hashed at
#: once; None: only stat it.
Probe = tuple[str, int | None, FileStat | None]
#: What the first look found: the path's state, a regular file's ctime (`st_ctime_ns` as
#: `latest_change_ns` reads it, else None), and as in `Examined` the hash when it was taken.
Observed = tuple[PathState, int | None, Hashed | OSError | None]


_SECOND_NS = 1_000_000_000
#: The coarsest ctime stamp of a common filesystem (FAT's two seconds).
_COARSE_STAMP_NS = 2 * _SECOND_NS


def latest_change_ns(ctime_ns: int) -> int:
    """The latest time a file's last change may have happened, by its ctime: a whole-second
    ctime may be a filesystem's coarse stamp (whole seconds on ext4 with 128-byte inodes,
    HFS+, many FUSE filesystems; two seconds on FAT), which rounds the change down by up to
    two seconds; taken at its word, it made a file written in pieces less than `stable_s`
    apart look settled after the first. (On filesystems with finer stamps, a change stamped
    on a whole second then waits up to two seconds more.)"""
    if ctime_ns % _SECOND_NS == 0:
        return ctime_ns + _COARSE_STAMP_NS - 1
    return ctime_ns


def observe_many(
    root: str,
    probes: Sequence[Probe],
    max_ctime_ns: int,
    budget_bytes: int,
    max_hashed: int,
) -> dict[str, Observed]:
    """Stat each path, keeping a regular file's status change time: the kernel sets it on
    every write, truncate, rename or metadata change, and no call sets it to an arbitrary
    value (unlike the mtime, which `utime` and so `cp -p`, tar and rsync set), so it says how
    long a file has been left alone before we first looked. A file left alone long enough
    (ctime at most `max_ctime_ns`) is hashed in the same pass, at most `max_hashed` files and
    about `budget_bytes`, rather than stat-ed again and hashed in a later hand-off."""
    out: dict[str, Observed] = {}
    read = hashed_count = 0
    buf = bytearray(_CHUNK)
    base = _base(root)
    for rel, min_ctime_ns, known in probes:
        path = base + rel
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            out[rel] = (None, None, None)
            continue
        except OSError:
            out[rel] = ("other", None, None)
            continue
        if not stat.S_ISREG(st.st_mode):
            out[rel] = ("dir" if stat.S_ISDIR(st.st_mode) else "other", None, None)
            continue
        state: FileStat = (st.st_mtime_ns, st.st_size)
        ctime_ns = latest_change_ns(st.st_ctime_ns)
        if (
            min_ctime_ns is None
            or not min_ctime_ns <= ctime_ns <= max_ctime_ns
            or state == known
            or hashed_count >= max_hashed
            or read >= budget_bytes
        ):
            out[rel] = (state, ctime_ns, None)
            continue
        hashed_count += 1
        try:
            hashed = _hash(path, buf, state[1])
        except OSError as exc:
            out[rel] = (state, ctime_ns, exc)
            continue
        if hashed is None:  # vanished meanwhile
            out[rel] = (_path_state(path), None, None)
            continue
        out[rel] = (state, ctime_ns, hashed)
        read += state[1]
    return out


def hash_file(
    root: str, rel: str, buf: bytearray | None = None, size: int | None = None
) -> Hashed | None:
    """MD5 hex of the file's content, read in chunks into `buf` (reused across the files of
    an `examine_many`); None if the file vanished or is a directory. `size`: the file's size
    by the stat before, which saves the read that would find the end.

    Plain `os.open`/`os.readv`: a buffered `open()` and `read(1 MiB)` allocated a 1 MiB
    result per read and cost twice as much per small file."""
    return _hash(os.path.join(root, rel), bytearray(_CHUNK) if buf is None else buf, size)


def _base(root: str) -> str:
    """`root` ending in a separator: `_base(root) + rel` is `os.path.join(root, rel)` for a
    relative `rel`, without its cost (pure Python, a tenth of a stat) three times a file."""
    return os.path.join(root, "")


def _hash(path: str, buf: bytearray, size: int | None) -> Hashed | None:
    view = memoryview(buf)
    digest = hashlib.md5(usedforsecurity=False)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    total = 0
    try:
        while count := os.readv(fd, [buf]):
            digest.update(view[:count])
            total += count
            if count < len(buf) and total == size:
                # All the bytes the stat said, in a short read: no read to see the end
                # (most files are smaller than one buffer). Had the file grown meanwhile,
                # the stat after the hash differs and the file is looked at again.
                break
    except IsADirectoryError:  # opening a directory read-only succeeds; reading it fails
        return None
    finally:
        os.close(fd)
    return Hashed(digest.hexdigest(), _path_state(path))
