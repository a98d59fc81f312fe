"""Socket.IO (Engine.IO v4 / Socket.IO v5) on aiohttp, with python-socketio.

python-socketio runs the protocol: handshake, both transports and the upgrade,
pings, namespaces, and the Redis manager that shares emits between instances
(its WebSockets are served by `.eio`, which holds less per connection).
Two things are done differently, both for the contract and for speed, through
the hooks of `.socketio_internals.SocketIOHooks`:
- events go to the connection's Session in arrival order (python-socketio
  would run each in its own task, and its handlers cannot tell whether the
  client asked for an ack);
- everything the session sends leaves through the session's Outbox: on a
  WebSocket, frames are written straight to the socket, built once per update
  and coalesced per flush; on long-polling they join Engine.IO's queue.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Collection

import socketio
from aiohttp import web
from engineio import packet as eio_packet

from ..errors import ClientError, invalid_payload
from ..outbox import Item
from ..session import Request, Services, Session
from ..updates import Update
from .eio import EngineIOServer
from .frames import dumps, failed_by_code, text_frame, write_items
from ..recovery import RecoveryState
from .sio_recovery import PidInConnectReply, RecoveryStats, forget, recover, save
from .socketio_internals import SocketIOHooks, close_manager

log = logging.getLogger("stockstream.socketio")

# The session's requests but `ping`: Socket.IO has a heartbeat of its own.
EVENTS = Session.actions - {"ping"}
# What one queued long-polling packet is assumed to weigh, to compare a
# polling client's backlog with the byte limit.
POLLING_PACKET_BYTES = 128


class SocketIOServer(PidInConnectReply, SocketIOHooks):
    """python-socketio's server, handing events to sessions in order."""

    engineio_server_class = EngineIOServer

    def __init__(self, transport: "SocketIOTransport", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._transport = transport

    def recovery_state(self, sid: str) -> RecoveryState | None:
        session = self._transport.sessions.get(sid)
        return session.connection.recovery if session is not None else None

    async def malformed_packet(self, eio_sid: str) -> None:
        # Not a Socket.IO packet: a protocol violation, not a server error.
        log.info("closing engine.io connection %s: malformed Socket.IO packet", eio_sid)
        await self.eio.disconnect(eio_sid)

    async def main_event(self, eio_sid: str, id: int | None, data: Any) -> None:
        sid = self.manager.sid_from_eio_sid(eio_sid, "/")
        session = self._transport.sessions.get(sid)
        if session is None or not isinstance(data, list) or not data:
            return
        event = data[0]
        payload = data[1] if len(data) > 1 else None
        # Any JSON value can stand where the event name goes: a list or an
        # object is not hashable, so it is checked to be a string first.
        if isinstance(event, str) and event in EVENTS:
            session.submit(Request(event, payload, id))
        elif id is not None:  # unknown events without an ack are ignored
            name = str(event)[:40]
            session.submit(Request(name, payload, id, refused=invalid_payload(f"unknown event {name!r}")))


def _socketio_frame(item: Item) -> bytes:
    # An update's (or shared event's) frame is built once for all its
    # recipients; other messages are Socket.IO packet texts.
    return text_frame("4" + item) if isinstance(item, str) else item.sio_frame


def _recoverable_frame(item: Item) -> bytes:
    # The same, each update carrying its offset (connection state recovery).
    return item.sio_recoverable()[1] if type(item) is Update else _socketio_frame(item)


class SocketIOConnection:
    """A Socket.IO client as its session sees it."""

    transport = "socketio"
    __slots__ = ("_server", "id", "_eio_sid", "_direct", "recovery")

    def __init__(self, server: SocketIOServer, sid: str, eio_sid: str, recovery: RecoveryState | None) -> None:
        self._server = server
        self.id = sid
        self._eio_sid = eio_sid
        self._direct: asyncio.Transport | None = None
        # Given when connection state recovery is on (RECOVERY_WINDOW > 0).
        self.recovery = recovery

    # -- Sink ----------------------------------------------------------------

    def _direct_transport(self) -> asyncio.Transport | None:
        """The socket to write frames to directly: registered once the
        WebSocket is the Engine.IO socket's transport and what was queued
        before has been written, so nothing overtakes it; from then on, always."""
        if self._direct is None:
            open_ws = self._server.eio.websockets.get(self._eio_sid)
            if open_ws is not None:
                self._direct = open_ws.transport
        return self._direct

    def backlog(self) -> int:
        transport = self._direct_transport()
        if transport is not None:
            return transport.get_write_buffer_size()
        eio_socket = self._server.eio.sockets.get(self._eio_sid)
        return 0 if eio_socket is None else eio_socket.queue.qsize() * POLLING_PACKET_BYTES

    def send(self, items: Collection[Item], limit: int | None) -> bool:
        if self.recovery is not None and self.recovery.frozen:
            return True  # saved for recovery: what was not sent yet is replayed from history
        transport = self._direct or self._direct_transport()
        if transport is None:
            eio_socket = self._server.eio.sockets.get(self._eio_sid)
            if eio_socket is None or eio_socket.closed:
                return True
            sent = self._send_polling(eio_socket.queue, items, limit)
        else:
            sent = write_items(
                transport, items, limit, _socketio_frame if self.recovery is None else _recoverable_frame
            )
        if sent and self.recovery is not None:
            record = self.recovery.sent.record
            for item in items:
                if type(item) is Update:
                    record(item)
        return sent

    def _send_polling(self, queue: Any, items: Collection[Item], limit: int | None) -> bool:
        if limit is not None and queue.qsize() * POLLING_PACKET_BYTES > limit:
            return False
        recoverable = self.recovery is not None
        for item in items:
            if isinstance(item, str):
                text = item
            elif type(item) is Update:
                text = item.sio_recoverable()[0] if recoverable else item.sio_payload
            else:
                text = item.sio_payload
            queue.put_nowait(eio_packet.Packet(eio_packet.MESSAGE, text))
        return True

    # -- encoding (the session queues what these return) ---------------------

    def encode_reply(self, request: Request, result: dict[str, Any]) -> list[str]:
        texts = []
        if request.ack is not None:
            texts.append(f"3{request.ack}" + dumps([result]))
        elif result.get("failed"):
            texts += ["2" + dumps(["error", error.to_dict()]) for error in failed_by_code(result["failed"])]
        if request.action == "authenticate":
            texts.append("2" + dumps(["authenticated", {"user": result["user"], "expiresAt": result["expiresAt"]}]))
        return texts

    def encode_error(self, error: ClientError, request: Request | None = None) -> str:
        if request is not None and request.ack is not None:
            return f"3{request.ack}" + dumps([{"ok": False, "error": error.to_dict()}])
        return "2" + dumps(["error", error.to_dict()])

    def encode_event(self, name: str, payload: dict[str, Any]) -> str:
        return "2" + dumps([name, payload])

    def joined(self, symbols: list[str]) -> None:
        # Mirrored into python-socketio's rooms so emits from other instances
        # or external emitters addressed to a symbol's room reach this client.
        for symbol in symbols:
            self._server.manager.basic_enter_room(self.id, "/", symbol)

    def left(self, symbols: list[str]) -> None:
        for symbol in symbols:
            self._server.manager.basic_leave_room(self.id, "/", symbol)

    async def disconnect(self, going_away: bool = False) -> None:
        if going_away:
            transport = self._server._transport
            session = transport.sessions.get(self.id)
            if self.recovery is not None and session is not None:
                await save(session, self.recovery, transport.recovery_window, transport.recovery_stats)
            # No Socket.IO DISCONNECT nor Engine.IO CLOSE, both of which tell
            # clients not to reconnect: the transport just ends, and clients
            # reconnect, through the load balancer.
            await self._server.eio.close_going_away(self._eio_sid)
            return
        eio_socket = self._server.eio.sockets.get(self._eio_sid)
        await self._server.disconnect(self.id)
        if eio_socket is not None:
            # Not waiting for the queue: a long-polling client may never come
            # back for it. A WebSocket is cut if it does not close in time.
            await eio_socket.close(wait=False, reason=self._server.eio.reason.SERVER_DISCONNECT)


def refusal(error: ClientError) -> socketio.exceptions.ConnectionRefusedError:
    """A refused handshake that both client libraries can read: socket.io-client
    builds its connect_error Error from the packet's `message` and exposes its
    `data` as `err.data` (the error object); python-socketio passes the whole
    payload to its handler, which finds `code` and `message` at the top."""
    body = error.to_dict()
    refused = socketio.exceptions.ConnectionRefusedError()
    refused.error_args = {**body, "data": body}
    return refused


# What is kept of the environ python-socketio holds for each connection's life
# (`get_environ`, the Admin UI); the rest (every request header, the cookie,
# and the aiohttp request of the connection's first HTTP request) goes.
KEPT_ENVIRON = frozenset(
    {
        "REQUEST_METHOD",
        "PATH_INFO",
        "QUERY_STRING",
        "REMOTE_ADDR",
        "HTTP_ORIGIN",
        "HTTP_USER_AGENT",
        "HTTP_X_FORWARDED_FOR",
    }
)


def slim_environ(environ: dict[str, Any]) -> None:
    """Drop from a connection's environ, in place, what nothing reads once it is connected."""
    for key in [key for key in environ if key not in KEPT_ENVIRON]:
        del environ[key]


class SocketIOTransport:
    def __init__(self, services: Services) -> None:
        settings = services.settings
        self.services = services
        self.sessions = services.sessions
        self.recovery_window = settings.recovery_window
        self.recovery_stats = RecoveryStats()
        manager = None
        if settings.backend_url and settings.redis_cluster:
            # python-socketio's Redis manager speaks to one Redis only.
            from .cluster_manager import AsyncRedisClusterManager

            manager = AsyncRedisClusterManager(settings.backend_url, channel=settings.socketio_channel)
        elif settings.backend_url:
            manager = socketio.AsyncRedisManager(settings.backend_url, channel=settings.socketio_channel)
        cors: Any = "*" if "*" in settings.cors_origins else list(settings.cors_origins)
        self.server = SocketIOServer(
            self,
            async_mode="aiohttp",
            client_manager=manager,
            cors_allowed_origins=cors,
            max_http_buffer_size=settings.max_message_bytes,
            ping_interval=settings.ping_interval,
            ping_timeout=settings.ping_timeout,
            logger=False,
            engineio_logger=False,
            send_buffer=settings.outbound_buffer_bytes,
        )
        self.server.on("connect", self._on_connect)
        self.server.on("disconnect", self._on_disconnect)

    def attach(self, app: web.Application) -> None:
        self.server.attach(app)

    async def _on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        slim_environ(environ)
        identity = None
        token = auth.get("token") if isinstance(auth, dict) else None
        try:
            if token is not None:
                identity = self.services.verifier.verify(token)
            eio_sid = self.server.manager.eio_sid_from_sid(sid, "/")
            recovery = RecoveryState() if self.recovery_window > 0 else None
            connection = SocketIOConnection(self.server, sid, eio_sid, recovery)
            session = Session(self.services, connection, identity)
        except ClientError as error:
            raise refusal(error) from None
        if recovery is not None:
            await recover(session, recovery, auth, self.recovery_stats, self._release)
        log.info("socket.io client connected sid=%s user=%s", sid, identity.user if identity else "-")

    async def _on_disconnect(self, sid: str, reason: Any = None) -> None:
        session = self.sessions.get(sid)
        recovery = session.connection.recovery if session is not None else None
        if session is not None and recovery is not None and reason != self.server.reason.CLIENT_DISCONNECT:
            await save(session, recovery, self.recovery_window, self.recovery_stats)
        elif session is not None and recovery is not None:
            await forget(session, recovery)
        if session is not None:
            await session.closed_by_transport()
            log.info("socket.io client disconnected sid=%s reason=%s", sid, reason)

    async def _release(self, sid: str) -> None:
        """Disconnect `sid` on whichever instance holds it (through the client
        manager's channel when it is not here): its session is then saved."""
        await self.server.disconnect(sid, namespace="/")

    async def shutdown(self) -> None:
        await self.server.shutdown()
        await close_manager(self.server.manager)
        # Taken from aiohttp, so not closed by its shutdown.
        self.server.eio.connections.close_all()
