"""sd_notify for `Type=notify` units: READY, STOPPING and WATCHDOG pings, without libsystemd."""

from __future__ import annotations

import asyncio
import os
import socket
from dataclasses import dataclass


@dataclass
class Notifier:
    address: str | None
    watchdog_s: float | None

    @classmethod
    def from_env(cls) -> Notifier:
        address = os.environ.get("NOTIFY_SOCKET") or None
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        watchdog = None
        if usec and usec.isdigit() and (not pid or pid == str(os.getpid())):
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
                sock.connect(target)
                sock.sendall(message.encode())
        except OSError:
            return False
        return True

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
