"""The catalogue of client-facing errors.

Every error a client can see is a ClientError with a code from ErrorCode; it
renders to the same dict for Socket.IO acks and events, WebSocket frames and
HTTP bodies, so clients handle one shape everywhere.
"""

from __future__ import annotations

import enum
from typing import Any


class ErrorCode(str, enum.Enum):
    INVALID_PAYLOAD = "invalid_payload"
    INVALID_SYMBOL = "invalid_symbol"
    INVALID_INTERVAL = "invalid_interval"
    AUTH_REQUIRED = "auth_required"
    AUTH_FAILED = "auth_failed"
    FORBIDDEN_SYMBOL = "forbidden_symbol"
    TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
    RATE_LIMITED = "rate_limited"
    SLOW_CLIENT = "slow_client"
    SERVER_SHUTDOWN = "server_shutdown"
    UNAVAILABLE = "unavailable"
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    INTERNAL = "internal"


# The HTTP status each code maps to when it answers an HTTP request.
HTTP_STATUS = {
    ErrorCode.INVALID_PAYLOAD: 400,
    ErrorCode.INVALID_SYMBOL: 400,
    ErrorCode.INVALID_INTERVAL: 400,
    ErrorCode.AUTH_REQUIRED: 401,
    ErrorCode.AUTH_FAILED: 401,
    ErrorCode.FORBIDDEN_SYMBOL: 403,
    ErrorCode.TOO_MANY_SUBSCRIPTIONS: 400,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.SLOW_CLIENT: 400,
    ErrorCode.SERVER_SHUTDOWN: 503,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.INTERNAL: 500,
}

# Codes only HTTP answers carry; the streaming transports use the others.
HTTP_ONLY_CODES = frozenset({ErrorCode.NOT_FOUND, ErrorCode.FORBIDDEN})


class ClientError(Exception):
    """An error meant for the client: a code, a human message, extra fields."""

    def __init__(self, code: ErrorCode, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code.value, "message": self.message, **self.extra}

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

    def __repr__(self) -> str:
        return f"ClientError({self.code.value!r}, {self.message!r})"


def invalid_payload(message: str) -> ClientError:
    return ClientError(ErrorCode.INVALID_PAYLOAD, message)


INTERNAL_ERROR = ClientError(ErrorCode.INTERNAL, "the server could not handle this request")
