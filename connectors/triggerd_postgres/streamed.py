"""Streamed in-progress transactions (pgoutput protocol v2, `streaming = true`).

The server sends a large transaction's changes in chunks (Stream Start ... Stream Stop) before
it commits, interleaved with other transactions, then a Stream Commit or a Stream Abort (of
the whole transaction, or of one of its subtransactions). Nothing may be delivered before the
commit, so each transaction's changes go to a temporary file, tagged with the subtransaction
that made them; at the commit they are read back in order, without the aborted
subtransactions' changes, a page at a time: memory stays bounded however large it is.
"""

from __future__ import annotations

import struct
import tempfile
from collections.abc import Iterator
from typing import BinaryIO

__all__ = ["Spill", "StreamedTransactions"]

_HEAD = struct.Struct("!II")  # subtransaction id, message length
_XID = struct.Struct("!I")


class Spill:
    """One streamed transaction's changes on disk."""

    def __init__(self, xid: int) -> None:
        self.xid = xid
        self.file: BinaryIO = tempfile.TemporaryFile(prefix="triggerd-stream-")  # noqa: SIM115
        self.aborted: set[int] = set()
        self.changes = 0

    def write(self, data: bytes) -> None:
        """A change message from inside a chunk (its subtransaction id follows the tag)."""
        (subxid,) = _XID.unpack_from(data, 1)
        self.file.write(_HEAD.pack(subxid, len(data)))
        self.file.write(data)
        self.changes += 1

    def replay(self) -> Iterator[bytes]:
        """The change messages in order, without those of aborted subtransactions."""
        self.file.flush()
        self.file.seek(0)
        while True:
            head = self.file.read(_HEAD.size)
            if len(head) < _HEAD.size:
                return
            subxid, length = _HEAD.unpack(head)
            data = self.file.read(length)
            if subxid not in self.aborted:
                yield data

    def close(self) -> None:
        self.file.close()


class StreamedTransactions:
    """The open streamed transactions of one peek."""

    def __init__(self) -> None:
        self._spills: dict[int, Spill] = {}
        self._current: Spill | None = None

    def start(self, xid: int) -> None:
        spill = self._spills.get(xid)
        if spill is None:
            spill = self._spills[xid] = Spill(xid)
        self._current = spill

    def stop(self) -> None:
        self._current = None

    def add(self, data: bytes) -> None:
        if self._current is None:
            raise RuntimeError("a streamed change outside Stream Start / Stop")
        self._current.write(data)

    def abort(self, xid: int, subxid: int) -> None:
        spill = self._spills.get(xid)
        if spill is None:
            return
        if subxid == xid:
            del self._spills[xid]
            spill.close()
        else:
            spill.aborted.add(subxid)

    def commit(self, xid: int) -> Spill | None:
        """The committed transaction's spill (the caller replays and closes it)."""
        return self._spills.pop(xid, None)

    def close(self) -> None:
        for spill in self._spills.values():
            spill.close()
        self._spills.clear()
        self._current = None

    def __len__(self) -> int:
        return len(self._spills)
