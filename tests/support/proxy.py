"""A TCP proxy between a client and a server instance, to cut connections the
way a network does and send the reconnect to another instance."""

from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator


class SwitchProxy:
    """Forwards 127.0.0.1:port to `target`; `cut()` drops every open
    connection (both sides see the TCP connection end) and, while `refusing`,
    new ones are closed at once, as an unreachable network would.
    `cut(server_side=False)` drops only the client's side: the server's
    connection stays open and silent, as when a network fails without a
    reset reaching the server."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.refusing = False
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        # Server-side connections left open by a client-side-only cut.
        self._silent: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        pair = (writer, up_writer)
        self._pairs.add(pair)
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._pairs.discard(pair)
            writer.close()
            if up_writer not in self._silent:
                up_writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if writer in self._silent:
                    continue  # a client-side-only cut: the server's side hears nothing more
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if writer not in self._silent:
                writer.close()

    def cut(self, server_side: bool = True) -> None:
        for client_side, upstream in list(self._pairs):
            if not server_side:
                self._silent.add(upstream)
            for writer in (client_side, upstream) if server_side else (client_side,):
                transport = writer.transport
                if transport is not None:
                    transport.abort()

    async def close(self) -> None:
        self.cut()
        for writer in self._silent:
            if writer.transport is not None:
                writer.transport.abort()
        self._silent.clear()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@contextlib.asynccontextmanager
async def switch_proxy(target: int) -> AsyncIterator[SwitchProxy]:
    proxy = SwitchProxy(target)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
