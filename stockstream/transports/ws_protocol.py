"""WebSocket connections served by a small asyncio Protocol of ours, after aiohttp's handshake.

aiohttp routes the upgrade request; its handler answers the handshake
(`handshake_response`) and hands the connection over (`serve`), then returns
at once: aiohttp's request, headers, handler task, parser, reader and writer
are all released. What stays per connection is this protocol object, a
wsproto connection (RFC 6455 framing, sans-I/O: fragmentation, UTF-8
checks, control frames, the closing handshake) and, on `/live-price`, one
timer for the protocol-level pings.

Frames going out are written to the transport directly (frames built once per
update for all recipients, see .frames); the transport's write buffer is the
backlog the outbox measures. What comes in is handed to the connection's
`Endpoint` one message at a time, in order.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
from typing import Any, Coroutine, Protocol

from aiohttp import web
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import ProtocolError

from .aiohttp_internals import Detached, take_over
from .frames import abort_later, bound_send_buffer, text_frame

log = logging.getLogger("stockstream.websocket")

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MESSAGE_TOO_BIG = 1009
GOING_AWAY = 1001
# `websockets` and browsers' servers alike close a connection whose pong never came with 1011.
PING_TIMEOUT_CODE = 1011
PING_FRAME = b"\x89\x00"  # an empty ping; server frames are not masked


class Endpoint(Protocol):
    """What serves one WebSocket's messages."""

    def opened(self, connection: "WebSocketProtocol") -> None:
        """The handshake is done; `connection` carries the messages."""

    def received(self, message: str | bytes) -> None:
        """One whole message, in order."""

    def closed(self) -> None:
        """The connection is gone (closed by either side, or cut)."""


class HandshakeError(web.HTTPBadRequest):
    pass


def handshake_response(request: web.BaseRequest) -> bytes:
    """The 101 answer to a WebSocket upgrade request (RFC 6455 §4.2), without
    extensions or subprotocols; HTTP 400 for a request that is not one."""
    headers = request.headers
    connection = [token.strip().lower() for token in headers.get("Connection", "").split(",")]
    if request.method != "GET" or headers.get("Upgrade", "").lower() != "websocket" or "upgrade" not in connection:
        raise HandshakeError(text="expected a WebSocket upgrade request (GET with Upgrade: websocket)")
    if headers.get("Sec-WebSocket-Version") != "13":
        raise HandshakeError(
            text="unsupported WebSocket version: 13 is supported", headers={"Sec-WebSocket-Version": "13"}
        )
    key = headers.get("Sec-WebSocket-Key", "")
    try:
        valid_key = len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        valid_key = False
    if not valid_key:
        raise HandshakeError(text="invalid Sec-WebSocket-Key")
    accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest())
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )


class OpenConnections:
    """The connections taken from aiohttp, which aiohttp's shutdown no longer sees."""

    def __init__(self) -> None:
        self.open: set[WebSocketProtocol] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run `work` (a connection's closing, its waiting messages) in a task kept until it ends."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def close_all(self) -> None:
        """Cut every connection still open (at the very end of a shutdown)."""
        for connection in list(self.open):
            connection.abort()


class Pings:
    """Protocol-level pings: every `interval` seconds, closed `timeout` seconds
    after a ping without a pong. One timer per connection, no task."""

    __slots__ = ("interval", "timeout")

    def __init__(self, interval: float, timeout: float) -> None:
        self.interval = interval
        self.timeout = timeout


class WebSocketProtocol(asyncio.Protocol):
    """One WebSocket after its handshake: frames in through wsproto to the
    endpoint, frames out straight to the transport, pings on a timer."""

    __slots__ = (
        "transport",
        "_ws",
        "_endpoint",
        "_max_size",
        "_parts",
        "_size",
        "_pings",
        "_timer",
        "_waiting_pong",
        "_registry",
        "_closing",
    )

    def __init__(
        self, endpoint: Endpoint, registry: OpenConnections, max_size: int, pings: Pings | None = None
    ) -> None:
        self.transport: asyncio.Transport | None = None
        self._ws = Connection(ConnectionType.SERVER)
        self._endpoint = endpoint
        self._registry = registry
        self._max_size = max_size
        self._parts: list[Any] | None = None  # a fragmented message's parts so far
        self._size = 0
        self._pings = pings
        self._timer: asyncio.TimerHandle | None = None  # the next ping, or the end of the wait for a pong
        self._waiting_pong = False
        self._closing = False

    # -- asyncio.Protocol --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio subclasses
        self._registry.open.add(self)
        if self._pings is not None:
            self._timer = asyncio.get_running_loop().call_later(self._pings.interval, self._ping)
        self._endpoint.opened(self)

    def data_received(self, data: bytes) -> None:
        ws = self._ws
        if ws.state is ConnectionState.CLOSED:
            return  # after the closing handshake: nothing more is read
        try:
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, CloseConnection):
                    self._closed_by_peer(event)
                    return
                if self._closing:
                    continue  # closing: only the client's close frame matters
                if isinstance(event, (TextMessage, BytesMessage)):
                    self._message_part(event.data, event.message_finished)
                elif isinstance(event, Ping):
                    self._write(ws.send(event.response()))
                elif isinstance(event, Pong):
                    self._pong()
        except ProtocolError as error:
            # wsproto reports broken framing as a close event; this is what it
            # refuses outright (frames in a state that allows none).
            log.info("closing a WebSocket: %s", error)
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._registry.open.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._closing = True
        self._endpoint.closed()

    # -- what endpoints and sessions call ------------------------------------

    def backlog(self) -> int:
        transport = self.transport
        return 0 if transport is None else transport.get_write_buffer_size()

    def is_closing(self) -> bool:
        return self._closing or self.transport is None or self.transport.is_closing()

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake: the client answers, then the
        connection ends; one that does not answer is cut in a moment."""
        if self._closing:
            return
        self._closing = True
        if self._ws.state is ConnectionState.OPEN:
            self._write(self._ws.send(CloseConnection(code=code, reason=reason)))
        abort_later(self.transport)

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        return self._registry.spawn(work)

    def send_text(self, text: str) -> None:
        self._write(text_frame(text))

    def pause_reading(self) -> None:
        if not self.is_closing():
            self.transport.pause_reading()  # type: ignore[union-attr]  # is_closing checked it is there

    def resume_reading(self) -> None:
        if not self.is_closing():
            self.transport.resume_reading()  # type: ignore[union-attr]  # is_closing checked it is there

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- incoming --------------------------------------------------------------

    def _message_part(self, part: str | bytes | bytearray, finished: bool) -> None:
        data = bytes(part) if isinstance(part, bytearray) else part
        size = len(data)
        if isinstance(data, str) and size * 4 > self._max_size:
            size = len(data.encode(errors="surrogatepass"))  # the limit counts bytes, as they came
        if finished and self._parts is None:
            if size > self._max_size:
                self._too_big()
                return
            self._endpoint.received(data)
            return
        if self._parts is None:
            self._parts, self._size = [], 0
        self._parts.append(data)
        self._size += size
        if self._size > self._max_size:
            self._too_big()
            return
        if finished:
            parts, self._parts = self._parts, None
            self._endpoint.received(("" if isinstance(data, str) else b"").join(parts))

    def _too_big(self) -> None:
        self._parts = None
        log.info("closing a WebSocket: a message over %d bytes", self._max_size)
        self.close(MESSAGE_TOO_BIG, "message too big")

    def _closed_by_peer(self, event: CloseConnection) -> None:
        ws = self._ws
        if ws.state is ConnectionState.REMOTE_CLOSING:
            self._write(ws.send(event.response()))
        elif ws.state is ConnectionState.OPEN:
            # A protocol violation wsproto reported as a close: say why, then end.
            self._write(ws.send(CloseConnection(code=event.code or CloseReason.PROTOCOL_ERROR)))
        self._closing = True
        if self.transport is not None:
            self.transport.close()
            abort_later(self.transport)

    # -- pings -----------------------------------------------------------------

    def _ping(self) -> None:
        pings = self._pings
        if self._closing or pings is None:
            self._timer = None
            return
        self._write(PING_FRAME)
        self._waiting_pong = True
        self._timer = asyncio.get_running_loop().call_later(pings.timeout, self._pong_missing)

    def _pong(self) -> None:
        pings = self._pings
        if pings is None or not self._waiting_pong:
            return  # an unsolicited pong: allowed, and nothing waits for it
        self._waiting_pong = False
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(pings.interval, self._ping)

    def _pong_missing(self) -> None:
        self._timer = None
        self._waiting_pong = False
        log.info("closing a WebSocket: no pong within %gs", self._pings.timeout if self._pings else 0)
        self.close(PING_TIMEOUT_CODE, "ping timeout")
        if self.transport is not None:
            # The client is gone or stuck: no closing handshake to wait for.
            self.transport.close()

    def _write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)


def serve(request: web.BaseRequest, protocol: WebSocketProtocol, send_buffer: int) -> web.StreamResponse:
    """Answer the handshake and hand `request`'s connection to `protocol`;
    the handler returns what this returns. Raises HTTP 400 for a request that
    is not a WebSocket upgrade."""
    head = handshake_response(request)
    transport = take_over(request, protocol, head)
    bound_send_buffer(transport, send_buffer)
    return Detached()
