"""A WebSocket client on a plain socket that reads only when asked: a client
that "stops reading" leaves the server's bytes queued in the kernel."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import time
from typing import Iterator

from .waiting import PROMPT

# Small receive buffer for the slow sockets: the kernel stops taking their data early.
SLOW_RCVBUF = 4096


class RawWebSocket:
    """Client side of RFC 6455 on a non-blocking socket; nothing is read unless
    read_frames() is called, so a client that "stops reading" leaves the server's
    bytes queued in the kernel."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.eof = False
        self.error: str | None = None

    @classmethod
    async def open(cls, host: str, port: int, path: str, rcvbuf: int | None = SLOW_RCVBUF) -> "RawWebSocket":
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.wait_for(loop.sock_connect(sock, (host, port)), PROMPT)
        key = base64.b64encode(os.urandom(16)).decode()
        await loop.sock_sendall(
            sock,
            (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode(),
        )
        client = cls(sock)
        while b"\r\n\r\n" not in client.buffer:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 4096), PROMPT)
            if not chunk:
                raise AssertionError(f"connection closed during the handshake: {client.buffer!r}")
            client.buffer += chunk
        head, client.buffer = client.buffer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head
        return client

    @property
    def local_port(self) -> int:
        return self.sock.getsockname()[1]

    async def send_frame(self, payload: bytes, opcode: int = 0x1, fin: bool = True) -> None:
        """One masked frame; `fin=False` (and opcode 0 for what follows) fragments a message."""
        mask = os.urandom(4)
        n = len(payload)
        first = (0x80 if fin else 0) | opcode
        if n < 126:
            header = struct.pack("!BB", first, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", first, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", first, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        await asyncio.get_running_loop().sock_sendall(self.sock, header + mask + masked)

    async def send_text(self, text: str) -> None:
        await self.send_frame(text.encode())

    async def read_some(self, timeout: float) -> bool:
        """Read what arrives within `timeout`; False once the peer has closed."""
        if self.eof:
            return False
        try:
            chunk = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(self.sock, 65536), timeout)
        except asyncio.TimeoutError:
            return True
        except OSError as exc:  # a reset: the server cut the connection
            self.eof, self.error = True, repr(exc)
            return False
        if not chunk:
            self.eof = True
            return False
        self.buffer += chunk
        return True

    def frames(self) -> Iterator[tuple[int, bytes]]:
        """Complete frames received so far (consumed from the buffer)."""
        while len(self.buffer) >= 2:
            first, second = self.buffer[0], self.buffer[1]
            n, offset = second & 0x7F, 2
            if n == 126:
                if len(self.buffer) < 4:
                    return
                n, offset = struct.unpack("!H", self.buffer[2:4])[0], 4
            elif n == 127:
                if len(self.buffer) < 10:
                    return
                n, offset = struct.unpack("!Q", self.buffer[2:10])[0], 10
            assert not second & 0x80, "server frames must not be masked"
            if len(self.buffer) < offset + n:
                return
            payload = self.buffer[offset : offset + n]
            self.buffer = self.buffer[offset + n :]
            yield first & 0x0F, payload

    async def next_text(self, timeout: float = PROMPT) -> str:
        deadline = time.monotonic() + timeout
        while True:
            for opcode, payload in self.frames():
                if opcode == 0x1:
                    return payload.decode()
            if time.monotonic() > deadline or not await self.read_some(0.2):
                raise AssertionError(f"no text frame within {timeout}s (eof={self.eof})")

    async def drain(self, timeout: float) -> list[tuple[int, bytes]]:
        """Read everything until the server closes (or `timeout`); all frames, in order."""
        frames: list[tuple[int, bytes]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            alive = await self.read_some(0.1)
            frames.extend(self.frames())
            if not alive:
                break
        return frames

    def close(self) -> None:
        self.sock.close()


async def open_socketio(host: str, port: int, rcvbuf: int | None = None) -> tuple[RawWebSocket, dict]:
    """A raw Engine.IO WebSocket joined to the Socket.IO namespace `/`, and
    the Engine.IO handshake (sid, pingInterval, pingTimeout, ...)."""
    ws = await RawWebSocket.open(host, port, "/socket.io/?EIO=4&transport=websocket", rcvbuf=rcvbuf)
    try:
        opened = await ws.next_text()
        assert opened.startswith("0{"), opened
        await ws.send_text("40")
        while not (await ws.next_text()).startswith("40"):
            pass
    except BaseException:
        ws.close()
        raise
    return ws, json.loads(opened[1:])
