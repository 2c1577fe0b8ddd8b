"""A TCP relay to a real server that a test starts, cuts and starts again on the same port."""

from __future__ import annotations

import asyncio
import contextlib


class Relay:
    """A TCP relay on a fixed loopback port to a real server (moto, PostgreSQL), started when
    a test says so: before that the port refuses connections, as an endpoint that is not up
    yet. `stop` cuts it: every connection closed, new ones refused, until `start` again."""

    def __init__(self, port: int, target: str) -> None:
        self.port = port
        host_port = target.split("//", 1)[-1]
        self.host, _, port_text = host_port.partition(":")
        self.target_port = int(port_text)
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for w in list(self.writers):
                w.close()
            await self.server.wait_closed()
            self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.host, self.target_port)
        self.writers |= {writer, up_writer}

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            w.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.writers -= {writer, up_writer}
