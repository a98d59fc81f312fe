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
from aiohttp import WSMsgType, web

from ..errors import ClientError, invalid_payload
from ..client_requests import encodable
from ..outbox import Item
from ..session import Request, Services, Session
from .frames import abort_later, bound_send_buffer, dumps, text_frame, write_items

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
GOING_AWAY = 1001


def _live_price_frame(item: Item) -> bytes:
    # An update goes out as published, its frame (as a shared event's) built once for all its recipients.
    return text_frame(item) if type(item) is str else item.ws_frame  # type: ignore[union-attr,arg-type]


class WebSocketConnection:
    """A `/live-price` client as its session sees it."""

    transport = "websocket"

    def __init__(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        # Socket.IO sids never start with "ws-": one registry holds both.
        self.id = f"ws-{secrets.token_urlsafe(12)}"
        self._ws = ws
        self._transport = request.transport

    def backlog(self) -> int:
        transport = self._transport
        return transport.get_write_buffer_size() if transport is not None else 0

    def send(self, items: Collection[Item], limit: int | None) -> bool:
        transport = self._transport
        return True if transport is None else write_items(transport, items, limit, _live_price_frame)

    def encode_reply(self, request: Request, result: dict[str, Any]) -> list[str]:
        return [self._encode({"type": REPLY_TYPES[request.action], **result}, request)]

    def encode_error(self, error: ClientError, request: Request | None = None) -> str:
        return self._encode({"type": "error", **error.to_dict()}, request)

    def encode_event(self, name: str, body: dict[str, Any]) -> str:
        return dumps({"type": name, **body})

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
        # The cut is scheduled first: a client that stopped reading never
        # answers the closing handshake, and waiting for its socket to drain
        # (aiohttp's default) would never end.
        abort_later(self._transport)
        await self._ws.close(code=GOING_AWAY if going_away else POLICY_VIOLATION, drain=False)


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
        return Request("invalid", None, ack, invalid_payload(
            "the request holds text JSON cannot carry back (a lone surrogate)"))
    # The frame itself is the payload (symbol/symbols/since, history's fields),
    # except for authenticate, whose payload is the token.
    payload = message.get("token") if action == "authenticate" else message
    return Request(action, payload, ack)


class WebSocketTransport:
    def __init__(self, services: Services) -> None:
        self.services = services

    def attach(self, app: web.Application) -> None:
        app.router.add_get("/live-price", self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        settings = self.services.settings
        # Uncompressed: update frames are built once and shared by all clients.
        ws = web.WebSocketResponse(compress=False, max_msg_size=settings.max_message_bytes, autoping=True)
        await ws.prepare(request)
        bound_send_buffer(request.transport, settings.outbound_buffer_bytes)
        connection = WebSocketConnection(ws, request)
        identity = None
        token = request.query.get("token")
        try:
            if token is not None:
                identity = self.services.verifier.verify(token)
            session = Session(self.services, connection, identity)
        except ClientError as error:
            await ws.send_str(connection.encode_error(error))
            await ws.close(code=POLICY_VIOLATION)
            return ws
        log.info("live-price client connected peer=%s user=%s", request.remote, identity.user if identity else "-")
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    session.submit(parse_frame(message.data))
                elif message.type == WSMsgType.BINARY:
                    session.submit(Request("invalid", None, refused=invalid_payload("binary frames are not accepted; send JSON text")))
                elif message.type == WSMsgType.ERROR:
                    break
        finally:
            await session.closed_by_transport()
            log.info("live-price client disconnected peer=%s", request.remote)
        return ws
