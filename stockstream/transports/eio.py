"""Engine.IO under Socket.IO, with less held per connection than engineio's own.

engineio serves each WebSocket with three tasks besides aiohttp's handler: a
reader wrapped in `wait_for`, a writer waiting on the socket's queue, and a
ping task asleep for the ping interval; with their futures and timers that is
about a quarter of an idle connection's memory, and aiohttp's handler, request
and WebSocket objects as much again. Here a WebSocket is taken from aiohttp
once its handshake is answered (`.ws_protocol`): packets queued for the socket
are written as they are queued, packets received are handed to Engine.IO as
they come, and the next ping is a timer; an idle connection holds no task.
The protocol stays engineio's: handshake, long-polling, the upgrade, packets,
ping timeouts and closing.

The server plugs in through the hooks of `.socketio_internals.EngineIOHooks`,
where the engineio names it rests on are kept and checked.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import time
from typing import Any

import engineio
from aiohttp import web
from engineio import packet as eio_packet
from engineio.async_socket import AsyncSocket

from .frames import abort_later, binary_frame, text_frame
from .queue import SlimQueue
from .socketio_internals import EngineIOHooks
from .ws_protocol import GOING_AWAY, OpenConnections, WebSocketProtocol, serve

log = logging.getLogger("stockstream.socketio")


class EngineIOServer(EngineIOHooks):
    """engineio's server with WebSockets served by WebSocketDriver and pings on timers.

    `websockets` maps the id of each Engine.IO socket whose transport is a
    WebSocket to it; `send_buffer` bounds their kernel send buffers;
    `connections` holds them all, for the end of a shutdown.
    """

    def __init__(self, *, send_buffer: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.websockets: dict[str, WebSocketProtocol] = {}
        self.connections = OpenConnections()
        self.send_buffer = send_buffer

    def create_queue(self, *args: Any, **kwargs: Any) -> SlimQueue:
        return SlimQueue()

    def websocket_driver(self, socket: AsyncSocket) -> "WebSocketDriver":
        return WebSocketDriver(socket, self)

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
        if open_ws is not None:
            open_ws.close(GOING_AWAY)  # cut in a moment if the client does not answer
        await socket.close(wait=False, abort=True, reason=self.reason.SERVER_DISCONNECT)
        if open_ws is None:
            socket.queue.put_nowait(eio_packet.Packet(eio_packet.NOOP))


def _ping(socket: AsyncSocket) -> None:
    if not socket.closing and not socket.closed:
        socket.last_ping = time.time()
        socket.queue.put_nowait(eio_packet.Packet(eio_packet.PING))


def _write_packet(transport: asyncio.Transport, pkt: eio_packet.Packet | None) -> None:
    if pkt is None or transport.is_closing():
        return
    data = pkt.encode()
    transport.write(binary_frame(data) if isinstance(data, bytes) else text_frame(data))


# The stages of a WebSocket driven here.
PROBING, UPGRADING, OPEN, FAILED = range(4)
# Packets waiting for Engine.IO beyond this pause the reading of the
# connection until they are handled (TCP then slows the client down).
MAX_INBOX = 32


class WebSocketDriver:
    """Serves one Engine.IO socket over a WebSocket taken from aiohttp
    (`.ws_protocol`), without permessage-deflate (frames are built once for
    all recipients, so they cannot be compressed per socket). It registers the
    connection once it is the socket's transport, so the socket's session can
    write frames straight to it.

    Nothing waits while the connection is idle: packets are handed to Engine.IO
    by a task that exists only while some are waiting, and a pong (every ping
    interval) is handled at once.
    """

    __slots__ = ("_socket", "_server", "_ws", "_stage", "_timer", "_inbox", "_task", "_ended", "_paused")

    def __init__(self, socket: AsyncSocket, server: EngineIOServer) -> None:
        self._socket = socket
        self._server = server
        self._ws: WebSocketProtocol | None = None
        self._stage = OPEN
        self._timer: asyncio.TimerHandle | None = None
        self._inbox: collections.deque[eio_packet.Packet] | None = None
        self._task: asyncio.Task[None] | None = None
        self._ended = False
        self._paused = False

    async def __call__(self, environ: dict[str, Any]) -> web.StreamResponse:
        server = self._server
        protocol = WebSocketProtocol(self, server.connections, server.max_http_buffer_size)
        return serve(environ["aiohttp.request"], protocol, server.send_buffer)

    # -- Endpoint ------------------------------------------------------------

    def opened(self, ws: WebSocketProtocol) -> None:
        """Make this WebSocket the socket's transport: at once for a new
        socket; for one on long-polling, after the probe and the upgrade packet."""
        self._ws = ws
        socket = self._socket
        if not socket.connected:
            socket.connected = socket.upgraded = True
            self._attach()
            return
        socket.upgrading = True  # Engine.IO holds long-polling replies meanwhile
        self._stage = PROBING
        self._timer = asyncio.get_running_loop().call_later(
            self._server.ping_interval + self._server.ping_timeout, self._upgrade_failed, "timed out"
        )

    def received(self, message: str | bytes) -> None:
        try:
            pkt = eio_packet.Packet(encoded_packet=message)
        except ValueError:
            # A frame that is not an Engine.IO packet: a protocol violation.
            log.info("closing engine.io connection %s: malformed packet", self._socket.sid)
            self._close()
            return
        stage = self._stage
        if stage == OPEN:
            if pkt.packet_type == eio_packet.PONG and self._inbox is None:
                self._socket.schedule_ping()  # all Engine.IO does with a pong, and it never waits
            else:
                self._enqueue(pkt)
        elif stage == PROBING:
            if pkt.packet_type != eio_packet.PING or pkt.data != "probe":
                self._upgrade_failed("no probe")
                return
            self._write(eio_packet.Packet(eio_packet.PONG, data="probe"))
            self._socket.queue.put_nowait(eio_packet.Packet(eio_packet.NOOP))  # ends the pending long-poll
            self._stage = UPGRADING
        elif stage == UPGRADING:
            if pkt.packet_type != eio_packet.UPGRADE:
                self._upgrade_failed("no upgrade packet")
                return
            self._cancel_timer()
            self._socket.upgraded = True
            self._socket.upgrading = False
            self._stage = OPEN
            self._attach()

    def closed(self) -> None:
        self._cancel_timer()
        socket = self._socket
        if self._server.websockets.get(socket.sid) is self._ws:
            del self._server.websockets[socket.sid]
        if self._stage in (PROBING, UPGRADING):
            socket.upgrading = False  # the socket carries on over long-polling
        if self._stage != OPEN:
            return
        self._ended = True
        if self._task is None:
            self._task = self._ws.spawn(self._handle_packets())  # type: ignore[union-attr]  # set once opened

    # -- inside --------------------------------------------------------------

    def _attach(self) -> None:
        ws = self._ws
        assert ws is not None and ws.transport is not None
        self._socket.queue.attach(functools.partial(_write_packet, ws.transport))
        self._server.websockets[self._socket.sid] = ws

    def _write(self, pkt: eio_packet.Packet) -> None:
        if self._ws is not None and self._ws.transport is not None:
            _write_packet(self._ws.transport, pkt)

    def _upgrade_failed(self, why: str) -> None:
        log.info("%s: failed websocket upgrade: %s", self._socket.sid, why)
        self._cancel_timer()
        self._socket.upgrading = False
        self._stage = FAILED
        self._close()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _close(self) -> None:
        if self._ws is not None:
            self._ws.close()

    def _enqueue(self, pkt: eio_packet.Packet) -> None:
        if self._inbox is None:
            self._inbox = collections.deque()
        self._inbox.append(pkt)
        if len(self._inbox) > MAX_INBOX and not self._paused and self._ws is not None:
            self._paused = True
            self._ws.pause_reading()
        if self._task is None:
            self._task = self._ws.spawn(self._handle_packets())  # type: ignore[union-attr]  # set once opened

    async def _handle_packets(self) -> None:
        """Hand the waiting packets to Engine.IO in order; once the
        connection ended, close the socket."""
        socket = self._socket
        try:
            while self._inbox:
                pkt = self._inbox.popleft()
                if self._paused and len(self._inbox) <= MAX_INBOX // 2 and self._ws is not None:
                    self._paused = False
                    self._ws.resume_reading()
                try:
                    await socket.receive(pkt)
                except engineio.exceptions.UnknownPacketError:
                    pass
                except engineio.exceptions.SocketIsClosedError:
                    self._inbox.clear()
                    self._close()
                except Exception:  # as engineio does: one failed packet does not end the connection
                    log.exception("%s: error handling a packet", socket.sid)
            self._inbox = None
            if self._ended:
                # No read timeout (a timer per connection): a client that stops
                # answering pings is closed by Engine.IO's ping check, and its
                # connection then cut (EngineIOServer.socket_closed).
                await socket.close(wait=False, abort=True, reason=self._server.reason.TRANSPORT_CLOSE)
        finally:
            self._task = None
