"""One place that opens test clients and closes all of them when the test ends."""

from __future__ import annotations

import asyncio
from typing import Any

from .node import NodeSioClient, ReadmeClient
from .sio import PySioClient, SioClientBase
from .ws import WsClient

SIO_KINDS = ("python", "node")
# Every client kind a streaming test can open: the two Socket.IO libraries and a raw /live-price WebSocket.
CLIENT_KINDS = (*SIO_KINDS, "ws")


def http_to_ws(url: str) -> str:
    if url.startswith("ws"):
        return url
    return url.replace("http://", "ws://", 1).rstrip("/") + "/live-price"


class ClientPool:
    def __init__(self) -> None:
        self._open: list[Any] = []

    async def sio(self, url: str, *, kind: str = "python", connect: bool = True, **kwargs: Any) -> SioClientBase:
        """A Socket.IO client ("python": python-socketio, "node": socket.io-client@4)."""
        if kind == "python":
            client: SioClientBase = PySioClient(url, **kwargs)
        elif kind == "node":
            client = NodeSioClient(url, **kwargs)
        else:
            raise ValueError(f"unknown Socket.IO client kind {kind!r}")
        self._open.append(client)
        if connect:
            await client.connect()
        return client

    async def ws(self, url: str, **kwargs: Any) -> WsClient:
        """A /live-price client; url may be the server's http:// base or the ws:// endpoint."""
        client = WsClient(http_to_ws(url), **kwargs)
        self._open.append(client)
        await client.connect()
        return client

    async def readme(self, url: str) -> ReadmeClient:
        client = ReadmeClient(http_to_ws(url))
        self._open.append(client)
        return await client.start()

    async def close_all(self) -> None:
        async def close(client: Any) -> None:
            try:
                if isinstance(client, ReadmeClient):
                    await client.stop()
                else:
                    await client.close()
            except Exception:
                pass

        await asyncio.gather(*(close(c) for c in self._open))
        self._open.clear()
