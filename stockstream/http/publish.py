"""`POST /api/publish`: prices published over HTTP by holders of a token with the `publish` claim.

A request is checked whole before anything is published: the token, the body
(one update or a list), every update's fields and the token's right to publish
each symbol. Only then are its updates published, in order, each through the
broker's atomic step (snapshot, seq, history, fan-out).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from ..broker import BackendUnavailable
from ..errors import ClientError, ErrorCode, invalid_payload
from ..publisher import checked_update
from ..symbols import SymbolError
from ..updates import CheckedUpdate, InvalidUpdate, Update
from .common import PUBLISH_PATH, PayloadTooLarge, bearer_token, json_response

if TYPE_CHECKING:
    from ..auth import Identity
    from ..node import Node


async def read_bounded(request: web.Request, limit: int) -> bytes:
    """The request body, refused as soon as it is known to exceed `limit` bytes:
    from Content-Length before reading, or while reading a chunked body."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(limit)
    body = bytearray()
    while True:
        chunk = await request.content.readany()
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(limit)


def parse_updates(body: bytes) -> list[CheckedUpdate]:
    """Every update of a body holding one update object or a list of them, checked."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise invalid_payload("the body must be JSON: one update object or a list of them") from None
    if isinstance(data, dict):
        return [_checked(data, None)]
    if not isinstance(data, list) or not data:
        raise invalid_payload("the body must be one update object or a non-empty list of them")
    return [_checked(item, index) for index, item in enumerate(data)]


def _checked(data: Any, index: int | None) -> CheckedUpdate:
    where = "" if index is None else f"update {index}: "
    if isinstance(data, dict) and isinstance(data.get("symbol"), str):
        try:
            return checked_update(data)
        except SymbolError as exc:
            raise ClientError(ErrorCode.INVALID_SYMBOL, where + str(exc), symbols=[data["symbol"][:64]]) from None
        except InvalidUpdate as exc:
            raise invalid_payload(where + str(exc)) from None
    if not isinstance(data, dict):
        raise invalid_payload(where + "an update is a JSON object")
    raise invalid_payload(where + "symbol must be a string")


class PublishRoute:
    def __init__(self, node: Node) -> None:
        self.node = node

    def attach(self, app: web.Application) -> None:
        app.router.add_post(PUBLISH_PATH, self.publish)

    def _publisher(self, request: web.Request) -> Identity:
        token = bearer_token(request)
        if token is None:
            raise ClientError(ErrorCode.AUTH_REQUIRED, "publishing needs a token: Authorization: Bearer <jwt>")
        return self.node.services.verifier.verify(token)

    async def publish(self, request: web.Request) -> web.Response:
        identity = self._publisher(request)
        updates = parse_updates(await read_bounded(request, self.node.settings.max_message_bytes))
        refused = list(dict.fromkeys(u.symbol for u in updates if not identity.may_publish(u.symbol)))
        if refused:
            raise ClientError(
                ErrorCode.FORBIDDEN,
                f"this token may not publish {', '.join(refused)} (its publish claim)",
                symbols=refused,
            )
        published: list[Update] = []
        try:
            for update in updates:
                published.append(await self.node.publisher.publish_checked(update))
        except BackendUnavailable:
            if not published:
                raise
            # Each update is atomic on its own: say which ones went out before the failure.
            raise ClientError(
                ErrorCode.UNAVAILABLE,
                "the price backend became unavailable during the request",
                published=[orjson.Fragment(u.raw) for u in published],
            ) from None
        return json_response({"published": [orjson.Fragment(u.raw) for u in published]})
