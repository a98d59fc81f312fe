"""What every HTTP route shares: JSON answers, the bearer token, errors in the catalogue's shape."""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable

import orjson
from aiohttp import web

from ..broker import BackendUnavailable
from ..errors import INTERNAL_ERROR, ClientError, ErrorCode

log = logging.getLogger("stockstream.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PUBLISH_PATH = "/api/publish"


class PayloadTooLarge(ClientError):
    """A body over MAX_MESSAGE_BYTES: `invalid_payload`, answered with 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            ErrorCode.INVALID_PAYLOAD, f"body too large: at most {limit} bytes (MAX_MESSAGE_BYTES)", limit=limit
        )

    @property
    def http_status(self) -> int:
        return 413


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def error_response(error: ClientError) -> web.Response:
    return json_response({"error": error.to_dict()}, error.http_status)


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure answers the error catalogue's JSON, never a stack trace."""
    try:
        return await handler(request)
    except ClientError as error:
        return error_response(error)
    except BackendUnavailable:
        return error_response(ClientError(ErrorCode.UNAVAILABLE, "the price backend is unavailable"))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: ErrorCode.NOT_FOUND, 403: ErrorCode.FORBIDDEN}.get(exc.status, ErrorCode.INVALID_PAYLOAD)
        return json_response({"error": {"code": code.value, "message": exc.reason}}, exc.status)
    except Exception:  # a bug answers 500 in the catalogue's shape, logged here
        if request.headers.get("Upgrade"):
            raise  # a WebSocket's response has started: nothing can be sent in its place
        log.exception("%s %s failed", request.method, request.path)
        return error_response(INTERNAL_ERROR)


def bearer_token(request: web.Request) -> str | None:
    """The token of an `Authorization: Bearer <jwt>` header."""
    header = request.headers.get("Authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None
