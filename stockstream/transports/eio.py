"""Engine.IO under Socket.IO, with less held per connection than engineio's own.

engineio serves each WebSocket with three tasks besides aiohttp's handler: a
reader wrapped in `wait_for`, a writer waiting on the socket's queue, and a
ping task asleep for the ping interval; with their futures and timers that is
about a quarter of an idle connection's memory. Here a connection is its aiohttp
handler alone: it reads, packets queued for the socket are written as they are
queued, and the next ping is a timer. The protocol stays engineio's: handshake,
long-polling, the upgrade, packets, ping timeouts and closing.

The server plugs in through the hooks of `.socketio_internals.EngineIOHooks`,
where the engineio names it rests on are kept and checked.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any, cast

import engineio
from aiohttp import WSCloseCode, WSMsgType, web
from engineio import packet as eio_packet
from engineio.async_socket import AsyncSocket

from .frames import abort_later, binary_frame, bound_send_buffer, text_frame
from .queue import SlimQueue
from .socketio_internals import EngineIOHooks

log = logging.getLogger("stockstream.socketio")


class EngineIOServer(EngineIOHooks):
    """engineio's server with WebSockets served by WebSocketDriver and pings on timers.

    `websockets` maps the id of each Engine.IO socket whose transport is a
    WebSocket to it; `send_buffer` bounds their kernel send buffers.
    """

    def __init__(self, *, send_buffer: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.websockets: dict[str, OpenWebSocket] = {}
        self._send_buffer = send_buffer

    def create_queue(self, *args: Any, **kwargs: Any) -> SlimQueue:
        return SlimQueue()

    def websocket_driver(self, socket: AsyncSocket) -> "WebSocketDriver":
        return WebSocketDriver(socket, self, self.websockets, self._send_buffer)

    def socket_closed(self, sid: str) -> None:
        # Whatever closed the socket (the client, the server, a missed pong),
        # its WebSocket gets a moment to close by itself, then is cut:
        # Engine.IO itself leaves it open.
        open_ws = self.websockets.get(sid)
        if open_ws is not None:
            abort_later(open_ws.transport)

    def schedule_ping(self, socket: AsyncSocket) -> bool:
        # Asked for after every pong: a timer, not a task asleep for the ping
        # interval on every connection.
        asyncio.get_running_loop().call_later(self.ping_interval, _ping, socket)
        return True

    async def close_going_away(self, sid: str) -> None:
        """Close a socket so that its client reconnects by itself.

        python-engineio's client (checked with python-engineio 4.15) takes an
        Engine.IO CLOSE packet from the server as final and does not
        reconnect; it reconnects when the transport fails. So no CLOSE packet:
        a WebSocket is closed with a WebSocket close frame (1001, going away),
        and a long-polling client's pending poll is answered with a NOOP, so
        that its next poll finds no session and fails (400).
        """
        socket = self.sockets.get(sid)
        if socket is None:
            return
        open_ws = self.websockets.get(sid)
        await socket.close(wait=False, abort=True, reason=self.reason.SERVER_DISCONNECT)
        if open_ws is not None:
            # Bounded: the disconnect above scheduled the cut of the connection.
            await open_ws.ws.close(code=WSCloseCode.GOING_AWAY, drain=False)
        else:
            socket.queue.put_nowait(eio_packet.Packet(eio_packet.NOOP))


class OpenWebSocket:
    """An Engine.IO socket's WebSocket, once it is the socket's transport."""

    __slots__ = ("transport", "ws")

    def __init__(self, transport: asyncio.Transport, ws: web.WebSocketResponse) -> None:
        self.transport = transport
        self.ws = ws


def _ping(socket: AsyncSocket) -> None:
    if not socket.closing and not socket.closed:
        socket.last_ping = time.time()
        socket.queue.put_nowait(eio_packet.Packet(eio_packet.PING))


def _write_packet(transport: asyncio.Transport, pkt: eio_packet.Packet | None) -> None:
    if pkt is None or transport.is_closing():
        return
    data = pkt.encode()
    transport.write(binary_frame(data) if isinstance(data, bytes) else text_frame(data))


class WebSocketDriver:
    """Serves one Engine.IO socket over an aiohttp WebSocket, without
    permessage-deflate (frames are built once for all recipients, so they
    cannot be compressed per socket), and registers the connection once it is
    the socket's transport so its session can write frames straight to it."""

    def __init__(self, socket: AsyncSocket, server: engineio.AsyncServer,
                 websockets: dict[str, OpenWebSocket], send_buffer: int) -> None:
        self._socket = socket
        self._server = server
        self._websockets = websockets
        self._send_buffer = send_buffer
        self._upgrade_timeout = server.ping_interval + server.ping_timeout

    async def __call__(self, environ: dict[str, Any]) -> web.WebSocketResponse:
        request: web.Request = environ["aiohttp.request"]
        socket = self._socket
        ws = web.WebSocketResponse(max_msg_size=self._server.max_http_buffer_size, compress=False)
        await ws.prepare(request)
        # A prepared WebSocket response has its connection's transport.
        transport = cast(asyncio.Transport, request.transport)
        bound_send_buffer(transport, self._send_buffer)
        try:
            if not await self._open(ws):
                return ws
            socket.queue.attach(functools.partial(_write_packet, transport))
            self._websockets[socket.sid] = OpenWebSocket(transport, ws)
            await self._serve(ws)
        except ValueError:
            # A frame that is not an Engine.IO packet: a protocol violation.
            log.info("closing engine.io connection %s: malformed packet", socket.sid)
        finally:
            self._websockets.pop(socket.sid, None)
        await socket.close(wait=False, abort=True, reason=self._server.reason.TRANSPORT_CLOSE)
        await ws.close()
        return ws

    async def _open(self, ws: web.WebSocketResponse) -> bool:
        """Make this WebSocket the socket's transport: at once for a new
        socket; for one on long-polling, after the probe and the upgrade packet."""
        socket = self._socket
        if not socket.connected:
            socket.connected = socket.upgraded = True
            return True
        socket.upgrading = True  # Engine.IO holds long-polling replies meanwhile
        try:
            probe = await self._receive(ws, self._upgrade_timeout)
            if probe is None or probe.packet_type != eio_packet.PING or probe.data != "probe":
                log.info("%s: failed websocket upgrade: no probe", socket.sid)
                return False
            await ws.send_str(eio_packet.Packet(eio_packet.PONG, data="probe").encode())
            socket.queue.put_nowait(eio_packet.Packet(eio_packet.NOOP))  # ends the pending long-poll
            upgrade = await self._receive(ws, self._upgrade_timeout)
            if upgrade is None or upgrade.packet_type != eio_packet.UPGRADE:
                log.info("%s: failed websocket upgrade: no upgrade packet", socket.sid)
                return False
            socket.upgraded = True
            return True
        finally:
            socket.upgrading = False

    async def _serve(self, ws: web.WebSocketResponse) -> None:
        # No read timeout (a timer per connection): a client that stops
        # answering pings is closed by Engine.IO's ping check, and its
        # connection then cut (see EngineIOServer._trigger_event).
        socket = self._socket
        while (pkt := await self._receive(ws)) is not None:
            try:
                await socket.receive(pkt)
            except engineio.exceptions.UnknownPacketError:
                pass
            except engineio.exceptions.SocketIsClosedError:
                return
            except Exception:  # as engineio does: one failed packet does not end the connection
                log.exception("%s: error handling a packet", socket.sid)

    async def _receive(self, ws: web.WebSocketResponse, timeout: float | None = None) -> eio_packet.Packet | None:
        """The next packet; None once the connection closed, a frame was over
        the size limit, or `timeout` passed."""
        try:
            message = await ws.receive(timeout)
        except asyncio.TimeoutError:
            return None
        if message.type is not WSMsgType.TEXT and message.type is not WSMsgType.BINARY:
            return None
        return eio_packet.Packet(encoded_packet=message.data)
