"""Memory of a runtime process, read from /proc (Linux), for `memory_mb` and REPORT lines.

No cgroups are needed: the backend samples the resident set of each busy environment (the
runtime process and its descendants) every few milliseconds from one task and kills the
environment when it goes over the function's memory size, as Lambda's OOM killer would.
Reads are cheap: `statm` is one short line (about 2 us), `status` (for the kernel's own
high-water mark, VmHWM) about 10 us, so it is read only after invocations long enough for
the sampler to have missed a peak.
"""

from __future__ import annotations

import contextlib
import os

_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024 if hasattr(os, "sysconf") else 4
#: How many descendants of a runtime are followed (a fork bomb must not stall the sampler).
MAX_DESCENDANTS = 64


def _read(path: str) -> bytes:
    try:
        with open(path, "rb", buffering=0) as f:
            return f.read(4096)
    except OSError:
        return b""


def _pread(fd: int | None, size: int) -> bytes:
    """The start of a /proc file kept open (b"" when it was not opened or is gone)."""
    if fd is None:
        return b""
    try:
        return os.pread(fd, size, 0)
    except OSError:
        return b""


def statm_rss_kb(data: bytes) -> int:
    """Resident set in KB from the text of /proc/<pid>/statm (0 when unreadable)."""
    fields = data.split()
    if len(fields) < 2 or not fields[1].isdigit():
        return 0
    return int(fields[1]) * _PAGE_KB


def status_hwm_kb(data: bytes) -> int:
    """VmHWM (peak resident set) in KB from the text of /proc/<pid>/status (0 when absent)."""
    start = data.find(b"VmHWM:")
    if start < 0:
        return 0
    end = data.find(b"\n", start)
    fields = data[start : end if end >= 0 else None].split()
    return int(fields[1]) if len(fields) >= 2 and fields[1].isdigit() else 0


class MemoryProbe:
    """Reads one process's memory through file descriptors kept open for its lifetime."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._statm: int | None = None
        self._status: int | None = None
        self._children_fd: int | None = None
        self._clear_refs: int | None = None
        with contextlib.suppress(OSError):
            self._statm = os.open(f"/proc/{pid}/statm", os.O_RDONLY | os.O_CLOEXEC)
            self._status = os.open(f"/proc/{pid}/status", os.O_RDONLY | os.O_CLOEXEC)
            self._children_fd = os.open(
                f"/proc/{pid}/task/{pid}/children", os.O_RDONLY | os.O_CLOEXEC
            )
        with contextlib.suppress(OSError):
            self._clear_refs = os.open(f"/proc/{pid}/clear_refs", os.O_WRONLY | os.O_CLOEXEC)

    def rss_kb(self) -> int:
        """The process's resident set now."""
        return statm_rss_kb(_pread(self._statm, 256))

    def hwm_kb(self) -> int:
        """The process's peak resident set so far (kept by the kernel)."""
        return status_hwm_kb(_pread(self._status, 4096))

    def reset_hwm(self) -> bool:
        """Reset the peak resident set to the resident set now (Linux 4.0+, about 1 us), so
        that a later `hwm_kb` holds only what came after; False when it cannot be."""
        if self._clear_refs is None:
            return False
        try:
            os.write(self._clear_refs, b"5")
        except OSError:
            return False
        return True

    def tree_rss_kb(self) -> int:
        """Resident set of the process plus its descendants (a shell's children, say)."""
        total = self.rss_kb()
        pending = self._own_children()
        seen = 0
        while pending and seen < MAX_DESCENDANTS:
            pid = pending.pop()
            seen += 1
            total += statm_rss_kb(_read(f"/proc/{pid}/statm"))
            pending.extend(self._children(pid))
        return total

    def _own_children(self) -> list[int]:
        """The process's children, read through the descriptor kept open (the sampler asks
        every few ms: an open and a close fewer each time)."""
        if self._children_fd is None:
            return self._children(self.pid)
        data = _pread(self._children_fd, 4096)
        return [int(p) for p in data.split() if p.isdigit()]

    @staticmethod
    def _children(pid: int) -> list[int]:
        data = _read(f"/proc/{pid}/task/{pid}/children")
        return [int(p) for p in data.split() if p.isdigit()]

    def close(self) -> None:
        for fd in (self._statm, self._status, self._children_fd, self._clear_refs):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._statm = self._status = self._children_fd = self._clear_refs = None
