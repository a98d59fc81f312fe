"""The plain WebSocket endpoint `/live-price`, as in the original README.

Text frames carry JSON requests `{"action": ...}`; price updates go out as the
bare update objects, everything else carries a `type`. Requests share the
Session with Socket.IO, so both transports behave the same.
"""

from __future__ import annotations

import json
import logging
import secrets
from typing import Any, Collection

import orjson
from aiohttp import web

from ..errors import ClientError, invalid_payload
from ..client_requests import encodable
from ..outbox import Item
from ..session import Request, Services, Session
from .aiohttp_internals import Detached, take_over
from .frames import bound_send_buffer, dumps, text_frame, write_items
from .ws_protocol import GOING_AWAY, OpenConnections, Pings, WebSocketProtocol, handshake_response

log = logging.getLogger("stockstream.websocket")

# The frame `type` of each request's reply (the requests are Session.actions).
REPLY_TYPES = {
    "subscribe": "subscribed",
    "unsubscribe": "unsubscribed",
    "authenticate": "authenticated",
    "history": "history",
    "ping": "pong",
    "subscribeCandles": "candlesSubscribed",
    "unsubscribeCandles": "candlesUnsubscribed",
}
POLICY_VIOLATION = 1008


def _live_price_frame(item: Item) -> bytes:
    # An update goes out as published, its frame (as a shared event's) built once for all its recipients.
    return text_frame(item) if isinstance(item, str) else item.ws_frame


class WebSocketConnection:
    """A `/live-price` client as its session sees it, and its WebSocket's endpoint."""

    transport = "websocket"
    recovery = None  # /live-price has no connection state recovery: a resume names `since`/`sinceSeq`
    __slots__ = ("id", "_ws", "session", "_peer")

    def __init__(self, peer: str | None) -> None:
        # Socket.IO sids never start with "ws-": one registry holds both.
        self.id = f"ws-{secrets.token_urlsafe(12)}"
        self._ws: WebSocketProtocol | None = None
        self.session: Session | None = None
        self._peer = peer

    # -- Endpoint ------------------------------------------------------------

    def opened(self, ws: WebSocketProtocol) -> None:
        self._ws = ws

    def received(self, message: str | bytes) -> None:
        session = self.session
        if session is None:
            return
        if type(message) is str:
            session.submit(parse_frame(message))
        else:
            session.submit(
                Request("invalid", None, refused=invalid_payload("binary frames are not accepted; send JSON text"))
            )

    def closed(self) -> None:
        session, self.session = self.session, None
        if session is not None and self._ws is not None:
            self._ws.spawn(self._release(session))

    async def _release(self, session: Session) -> None:
        await session.closed_by_transport()
        log.info("live-price client disconnected peer=%s", self._peer)

    # -- Sink ------------------------------------------------------------------

    def backlog(self) -> int:
        ws = self._ws
        return 0 if ws is None else ws.backlog()

    def send(self, items: Collection[Item], limit: int | None) -> bool:
        ws = self._ws
        transport = None if ws is None else ws.transport
        return True if transport is None else write_items(transport, items, limit, _live_price_frame)

    def encode_reply(self, request: Request, result: dict[str, Any]) -> list[str]:
        return [self._encode({"type": REPLY_TYPES[request.action], **result}, request)]

    def encode_error(self, error: ClientError, request: Request | None = None) -> str:
        return self._encode({"type": "error", **error.to_dict()}, request)

    def encode_event(self, name: str, payload: dict[str, Any]) -> str:
        return dumps({"type": name, **payload})

    @staticmethod
    def _encode(message: dict[str, Any], request: Request | None) -> str:
        if request is not None and request.ack is not None:
            message["id"] = request.ack
        return dumps(message)

    def joined(self, symbols: list[str]) -> None:
        pass  # plain WebSocket clients are not in python-socketio's rooms

    def left(self, symbols: list[str]) -> None:
        pass

    async def disconnect(self, going_away: bool = False) -> None:
        # A client that stopped reading never answers the closing handshake:
        # the connection is cut in a moment if it does not close by itself.
        if self._ws is not None:
            self._ws.close(GOING_AWAY if going_away else POLICY_VIOLATION)


def parse_frame(data: str) -> Request:
    """A text frame as a request; an unusable one becomes a refused request."""
    unwritable = False
    try:
        message = orjson.loads(data)
    except orjson.JSONDecodeError:
        # orjson refuses lone surrogate escapes, which JSON allows: such a frame
        # is read again only to answer it with its id.
        try:
            message = json.loads(data)
        except (ValueError, RecursionError):
            message = None
        unwritable = message is not None
    if not isinstance(message, dict):
        return Request("invalid", None, refused=invalid_payload("expected a JSON object with an action"))
    ack = message.get("id")
    if not isinstance(ack, (str, int)) or isinstance(ack, bool) or not encodable(ack):
        # An id the reply could not carry back (a lone surrogate, an integer
        # beyond 64 bits) is not an id.
        ack = None
    action = message.get("action")
    if not isinstance(action, str) or action not in Session.actions:
        return Request("invalid", None, ack, invalid_payload(f"unknown action {str(action)[:40]!r}"))
    if unwritable:
        return Request(
            "invalid", None, ack, invalid_payload("the request holds text JSON cannot carry back (a lone surrogate)")
        )
    # The frame itself is the payload (symbol/symbols/since, history's fields),
    # except for authenticate, whose payload is the token.
    payload = message.get("token") if action == "authenticate" else message
    return Request(action, payload, ack)


class WebSocketTransport:
    def __init__(self, services: Services) -> None:
        self.services = services
        settings = services.settings
        # Protocol-level pings with Socket.IO's interval and timeout: one
        # liveness policy for every client of the server.
        self._pings = Pings(settings.ping_interval, settings.ping_timeout)
        self.connections = OpenConnections()

    def attach(self, app: web.Application) -> None:
        app.router.add_get("/live-price", self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        settings = self.services.settings
        head = handshake_response(request)
        connection = WebSocketConnection(request.remote)
        identity = None
        refused = None
        token = request.query.get("token")
        try:
            if token is not None:
                identity = self.services.verifier.verify(token)
            connection.session = Session(self.services, connection, identity)
        except ClientError as error:
            refused = error
        # Uncompressed: update frames are built once and shared by all clients.
        ws = WebSocketProtocol(
            connection, self.connections, settings.max_message_bytes, None if refused else self._pings
        )
        try:
            take_over(request, ws, head)
        except ConnectionError:
            if connection.session is not None:
                await connection.session.closed_by_transport()
            raise
        bound_send_buffer(ws.transport, settings.outbound_buffer_bytes)
        if refused is not None:
            ws.send_text(connection.encode_error(refused))
            ws.close(POLICY_VIOLATION)
        else:
            log.info("live-price client connected peer=%s user=%s", request.remote, identity.user if identity else "-")
        return Detached()

    def shutdown(self) -> None:
        """Cut the connections still open (their sessions were closed before)."""
        self.connections.close_all()
