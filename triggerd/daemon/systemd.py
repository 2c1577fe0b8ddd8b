"""sd_notify for `Type=notify` units: READY, RELOADING, STATUS, STOPPING and WATCHDOG pings,
without libsystemd (the protocol is one datagram of `KEY=value` lines on `$NOTIFY_SOCKET`;
no maintained pure-Python library is in the dependency table, and this is a dozen lines).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, as `RELOADING=1` wants it in `MONOTONIC_USEC=`."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


@dataclass
class Notifier:
    address: str | None
    watchdog_s: float | None
    #: The last STATUS= sent, so `status` sends only changes.
    _status: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls) -> Notifier:
        address = os.environ.get("NOTIFY_SOCKET") or None
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        watchdog = None
        if usec and usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            watchdog = int(usec) / 1_000_000
        return cls(address, watchdog)

    def notify(self, message: str) -> bool:
        """Send one notification; False when not under systemd or the socket is gone."""
        if not self.address:
            return False
        target = self.address
        if target.startswith("@"):
            target = "\0" + target[1:]
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                # Never block the event loop: a full socket loses this message instead.
                sock.setblocking(False)
                sock.connect(target)
                sock.sendall(message.encode())
        except OSError:
            return False
        return True

    def ready(self, status: str) -> None:
        """READY=1 with the one-line summary (at start and when a reload is done)."""
        self._status = status
        self.notify(f"READY=1\nSTATUS={status}")

    def reloading(self) -> None:
        """RELOADING=1 with the CLOCK_MONOTONIC time it began (systemd 253+ checks it)."""
        self.notify(f"RELOADING=1\nMONOTONIC_USEC={monotonic_usec()}")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def status(self, status: str) -> None:
        """STATUS= when the summary differs from the last one sent."""
        if status != self._status:
            self._status = status
            self.notify(f"STATUS={status}")

    async def watchdog(self, stop: asyncio.Event) -> None:
        """Ping WATCHDOG=1 at half the configured interval until stopped."""
        if not self.watchdog_s:
            return
        while not stop.is_set():
            self.notify("WATCHDOG=1")
            try:
                await asyncio.wait_for(stop.wait(), self.watchdog_s / 2)
            except TimeoutError:
                continue

    async def follow_status(
        self, summary: Callable[[], str], stop: asyncio.Event, every_s: float = 1.0
    ) -> None:
        """Send STATUS= whenever `summary()` changes (a trigger failing or recovering)."""
        if not self.address:
            return
        while not stop.is_set():
            self.status(summary())
            try:
                await asyncio.wait_for(stop.wait(), every_s)
            except TimeoutError:
                continue
