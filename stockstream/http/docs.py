"""The API descriptions: `GET /openapi.json` (OpenAPI 3.1, the HTTP routes) and
`GET /asyncapi.json` (AsyncAPI 3.0, the Socket.IO events and `/live-price` frames).

Both documents share one set of JSON schemas (`SCHEMAS`), written in the subset
of JSON Schema that OpenAPI 3.1 (draft 2020-12) and AsyncAPI 3.0 (draft-07)
read alike. What the code enumerates, the documents take from the code, so they
cannot drift from what the server answers: error codes and their HTTP statuses
from the error catalogue, backend kinds from the brokers, the symbol pattern
from symbols.py, the heartbeat bounds from heartbeat.py, and the requests from
the one list a session answers (`Session.actions`, the Socket.IO events and the
/live-price reply types derived from it): a request added there appears in the
AsyncAPI document's messages and operations by itself.

The names that live above this module (the requests, the transports' event and
frame names, the backend kinds) come in as a `Vocabulary` built by the wiring
(`app.api_vocabulary`), so the document builder imports only the base and
`http.common` and stays a low floor of the import graph.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from .. import __version__
from ..candles import INTERVALS_MS, LIVE_INTERVALS_MS, MAX_SCANNED_UPDATES
from ..client_requests import MAX_HISTORY_LIMIT
from ..errors import HTTP_ONLY_CODES, HTTP_STATUS, ErrorCode
from ..config import MAX_HEARTBEAT_SECONDS
from ..heartbeat import HEARTBEAT_EVENT
from ..symbols import SYMBOL_PATTERN
from ..throttle import MAX_THROTTLE_MS, MIN_THROTTLE_MS
from ..updates import MAX_TIMESTAMP
from .common import PUBLISH_PATH, PayloadTooLarge

OPENAPI_PATH = "/openapi.json"
ASYNCAPI_PATH = "/asyncapi.json"


@dataclass(frozen=True)
class Vocabulary:
    """What the documents enumerate from the running code."""

    actions: Sequence[str]  # every request a session answers, in its table's order
    socketio_events: Collection[str]  # those of them Socket.IO takes as events
    reply_types: Mapping[str, str]  # the /live-price frame `type` of each reply, where not the action's name
    backends: Sequence[str]  # readiness's `backend`: the brokers' kinds


DOCUMENT_PATHS = (OPENAPI_PATH, ASYNCAPI_PATH)

TITLE = "stockstream"
SUMMARY = "Real-time stock prices over Socket.IO, a plain WebSocket and HTTP."


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(
    properties: dict[str, Any], required: list[str], description: str = "", additional: bool = False
) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": additional,
    }
    if description:
        schema["description"] = description
    return schema


def _array(items: dict[str, Any], description: str = "", **extra: Any) -> dict[str, Any]:
    schema = {"type": "array", "items": items, **extra}
    if description:
        schema["description"] = description
    return schema


def _error_codes(http: bool) -> list[str]:
    return [c.value for c in ErrorCode if http or c not in HTTP_ONLY_CODES]


MS = {"type": "integer", "minimum": 0, "maximum": MAX_TIMESTAMP, "description": "milliseconds since the Unix epoch"}
# Symbols are uppercased on input: what a client may send is the pattern with lower case too.
SYMBOL_TEXT = SYMBOL_PATTERN.pattern.replace("A-Z", "A-Za-z")
OK_TRUE = {"type": "boolean", "const": True}
OK_FALSE = {"type": "boolean", "const": False}
SYMBOL_LIST = _array(_ref("Symbol"))
RESUME = {"since": MS, "sinceSeq": {"type": "integer", "minimum": 0}}
HEARTBEAT = {
    "type": "integer",
    "minimum": 0,
    "maximum": MAX_HEARTBEAT_SECONDS,
    "description": f"ask for a heartbeat message every this many seconds (1-{MAX_HEARTBEAT_SECONDS}); "
    "0 stops them; absent leaves them as they are",
}
# A subscribe that only sets the heartbeat: no symbol nor symbols.
HEARTBEAT_ONLY = {
    **_object({"heartbeat": HEARTBEAT}, ["heartbeat"], "only sets the heartbeat", additional=True),
    "not": {"anyOf": [{"required": ["symbol"]}, {"required": ["symbols"]}]},
}
SUBSCRIPTION_LIST = _array(_ref("Subscription"))
THROTTLE = {
    "type": "integer",
    "minimum": MIN_THROTTLE_MS,
    "maximum": MAX_THROTTLE_MS,
    "description": "at most one update per symbol per this many ms: the latest, the last of a burst "
    "always; a later subscribe of the symbol with another value (or none) changes it",
}

SCHEMAS: dict[str, Any] = {
    "Symbol": {
        "type": "string",
        "pattern": f"^{SYMBOL_PATTERN.pattern}$",
        "description": "a symbol as the server writes it (uppercased)",
    },
    "Subscription": {
        "oneOf": [
            _ref("Symbol"),
            {"type": "string", "const": "*", "description": "every symbol (counts as one subscription)"},
        ]
    },
    "SymbolInput": {
        "type": "string",
        "pattern": f"^{SYMBOL_TEXT}$",
        "description": "a symbol, case-insensitive (AAPL, brk.b, ^GSPC, BTC-USD, EUR/USD, ES=F)",
    },
    "Update": _object(
        {
            "symbol": {"type": "string", "pattern": f"^{SYMBOL_TEXT}$"},
            "price": {"type": "number"},
            "timestamp": MS,
            "seq": {
                "type": "integer",
                "minimum": 1,
                "description": "per-symbol counter added by stockstream's own publishers (1, 2, 3, ...)",
            },
        },
        ["symbol", "price", "timestamp"],
        "a price update, exactly as published: other fields (volume, ...) pass through",
        additional=True,
    ),
    "UpdateInput": _object(
        {
            "symbol": _ref("SymbolInput"),
            "price": {"type": "number", "description": "a finite number"},
            "timestamp": {**MS, "description": "milliseconds since the Unix epoch; default: the server's clock"},
        },
        ["symbol", "price"],
        "an update to publish; other fields are passed through to clients",
        additional=True,
    ),
    "Error": _object(
        {
            "code": {"type": "string", "enum": _error_codes(http=True)},
            "message": {"type": "string", "description": "human-readable"},
            "symbols": _array({"type": "string"}, "the symbols the error is about"),
        },
        ["code", "message"],
        "an error from the catalogue, the same in acks, events, frames and HTTP bodies",
        additional=True,
    ),
    "HttpError": _object({"error": _ref("Error")}, ["error"]),
    "Health": _object({"status": {"type": "string", "const": "ok"}}, ["status"]),
    "Readiness": _object(
        {
            "status": {"type": "string", "enum": ["ready", "unavailable"]},
            "backend": {"type": "string", "description": "the backend's kind (enumerated from the brokers)"},
            "reason": {"type": "string"},
        },
        ["status"],
        additional=True,
    ),
    "Quotes": _object(
        {
            "quotes": {
                "type": "object",
                "additionalProperties": _ref("Update"),
                "description": "the latest update of each symbol that has one",
            },
            "missing": _array(_ref("Symbol"), "the symbols without a price"),
        },
        ["quotes", "missing"],
    ),
    "History": _object(
        {"symbol": _ref("Symbol"), "updates": _array(_ref("Update"), "oldest first")}, ["symbol", "updates"]
    ),
    "Candle": _object(
        {
            "start": MS,
            "open": {"type": "number"},
            "high": {"type": "number"},
            "low": {"type": "number"},
            "close": {"type": "number"},
            "count": {"type": "integer", "minimum": 1},
            "volume": {"type": "number", "description": "summed, when updates carry a volume"},
        },
        ["start", "open", "high", "low", "close", "count"],
    ),
    "Candles": _object(
        {
            "symbol": _ref("Symbol"),
            "interval": {"type": "string", "enum": list(INTERVALS_MS)},
            "candles": _array(_ref("Candle"), "oldest first; empty buckets are left out"),
            "updates": {"type": "integer", "minimum": 0, "description": "updates the candles were built from"},
            "limit": {"type": "integer", "const": MAX_SCANNED_UPDATES},
            "partial": {"type": "boolean", "description": "the oldest candle may be incomplete"},
            "next": {
                "oneOf": [{"type": "null"}, _object({"to": MS}, ["to"])],
                "description": "repeat with to=next.to for the earlier candles",
            },
        },
        ["symbol", "interval", "candles", "updates", "limit", "partial", "next"],
    ),
    "PublishRequest": {"oneOf": [_ref("UpdateInput"), _array(_ref("UpdateInput"), minItems=1)]},
    "Published": _object(
        {"published": _array(_ref("Update"), "each update as stored, with its seq, in request order")}, ["published"]
    ),
    # -- Socket.IO and /live-price ------------------------------------------------------
    "SubscribeRequest": {
        "oneOf": [
            _ref("SymbolInput"),
            _array({"type": "string"}, minItems=1),
            _object(
                {"symbol": {"type": "string"}, **RESUME, "heartbeat": HEARTBEAT, "throttle": THROTTLE},
                ["symbol"],
                additional=True,
            ),
            _object(
                {
                    "symbols": _array({"type": "string"}, minItems=1),
                    **RESUME,
                    "heartbeat": HEARTBEAT,
                    "throttle": THROTTLE,
                },
                ["symbols"],
                additional=True,
            ),
            HEARTBEAT_ONLY,
        ],
        "description": "one symbol, a list, or an object; `since` (ms) or `sinceSeq` resume from history; "
        "`heartbeat` asks for heartbeat messages; `throttle` (ms) slows the stream down; the "
        "symbol `*` is every symbol (throttled: `stockUpdates` lists)",
    },
    "SymbolsRequest": {
        "oneOf": [
            _ref("SymbolInput"),
            _array({"type": "string"}, minItems=1),
            _object({"symbol": {"type": "string"}, **RESUME}, ["symbol"], additional=True),
            _object({"symbols": _array({"type": "string"}, minItems=1), **RESUME}, ["symbols"], additional=True),
        ],
        "description": "one symbol, a list, or an object",
    },
    "UpdateList": _array(
        _ref("Update"),
        "the latest update of each symbol that changed in the period (or, "
        "first, of each priced symbol: the snapshots, in chunks)",
        minItems=1,
    ),
    "HistoryRequest": _object(
        {
            "symbol": {"type": "string"},
            "from": MS,
            "to": MS,
            "limit": {"type": "integer", "minimum": 1, "maximum": MAX_HISTORY_LIMIT},
        },
        ["symbol"],
        additional=True,
    ),
    "TokenRequest": {
        "oneOf": [{"type": "string", "description": "a JWT"}, _object({"token": {"type": "string"}}, ["token"])]
    },
    "Failed": _array(
        _object(
            {
                "symbol": {"type": "string"},
                "code": {
                    "type": "string",
                    "enum": [
                        ErrorCode.INVALID_SYMBOL.value,
                        ErrorCode.FORBIDDEN_SYMBOL.value,
                        ErrorCode.INVALID_INTERVAL.value,
                    ],
                },
            },
            ["symbol", "code"],
        ),
        "symbols of the request that were not taken",
    ),
    "Subscribed": _object(
        {
            "ok": OK_TRUE,
            "symbols": {**SUBSCRIPTION_LIST, "description": "the connection's whole subscription set, sorted"},
            "added": SUBSCRIPTION_LIST,
            "failed": _ref("Failed"),
            "recovered": {"type": "boolean", "description": "with since/sinceSeq: whether history reached back"},
            "throttle": {**THROTTLE, "description": "the request's throttle, echoed"},
        },
        ["ok", "symbols", "added", "failed"],
    ),
    "Unsubscribed": _object(
        {"ok": OK_TRUE, "symbols": SUBSCRIPTION_LIST, "removed": SUBSCRIPTION_LIST, "failed": _ref("Failed")},
        ["ok", "symbols", "removed", "failed"],
    ),
    "HistoryResult": _object(
        {"ok": OK_TRUE, "symbol": _ref("Symbol"), "updates": _array(_ref("Update"), "oldest first")},
        ["ok", "symbol", "updates"],
    ),
    "Authenticated": _object(
        {
            "ok": OK_TRUE,
            "user": {"type": "string", "description": "the token's sub"},
            "expiresAt": {"type": ["integer", "null"], "description": "ms since the epoch; null: never"},
            "revoked": _array(_ref("Symbol"), "subscriptions the new token no longer allows, now dropped"),
        },
        ["ok", "user", "expiresAt"],
    ),
    "AuthenticatedEvent": _object(
        {"user": {"type": "string"}, "expiresAt": {"type": ["integer", "null"]}}, ["user", "expiresAt"]
    ),
    "Refused": _object(
        {"ok": OK_FALSE, "error": _ref("StreamError")},
        ["ok", "error"],
        "a request that failed as a whole (the subscription set is unchanged)",
    ),
    "StreamError": {
        "allOf": [_ref("Error"), {"properties": {"code": {"enum": _error_codes(http=False)}}}],
        "description": "an error of the streaming transports (all codes but the HTTP-only ones)",
    },
    "Pong": _object({"ok": OK_TRUE}, ["ok"]),
    "Heartbeat": _object(
        {"seq": {"type": "integer", "minimum": 1, "description": "1, 2, 3, ... on each connection"}},
        ["seq"],
        "sent every `heartbeat` seconds while the connection asks for it",
    ),
    # -- live candles and token expiry ---------------------------------------------------
    "CandlesRequest": {
        "oneOf": [
            _object(
                {"symbol": {"type": "string"}, "interval": {"type": "string"}}, ["symbol", "interval"], additional=True
            ),
            _object(
                {"symbols": _array({"type": "string"}, minItems=1), "interval": {"type": "string"}},
                ["symbols", "interval"],
                additional=True,
            ),
        ],
        "description": "symbols and one interval (" + ", ".join(LIVE_INTERVALS_MS) + "); another interval fails "
        "every symbol with invalid_interval",
    },
    "CandlesSubscribed": _object(
        {
            "ok": OK_TRUE,
            "interval": {"type": "string"},
            "symbols": {**SYMBOL_LIST, "description": "every symbol followed at this interval, sorted"},
            "added": SYMBOL_LIST,
            "failed": _ref("Failed"),
        },
        ["ok", "interval", "symbols", "added", "failed"],
    ),
    "CandlesUnsubscribed": _object(
        {
            "ok": OK_TRUE,
            "interval": {"type": "string"},
            "symbols": SYMBOL_LIST,
            "removed": SYMBOL_LIST,
            "failed": _ref("Failed"),
        },
        ["ok", "interval", "symbols", "removed", "failed"],
    ),
    "LiveCandle": _object(
        {
            "symbol": _ref("Symbol"),
            "interval": {"type": "string", "enum": list(LIVE_INTERVALS_MS)},
            "start": MS,
            "open": {"type": "number"},
            "high": {"type": "number"},
            "low": {"type": "number"},
            "close": {"type": "number"},
            "count": {"type": "integer", "minimum": 1},
            "volume": {"type": ["number", "null"], "description": "summed volume; null when no update carried one"},
            "closed": {"type": "boolean", "description": "true once, when the period is over: the final candle"},
        },
        ["symbol", "interval", "start", "open", "high", "low", "close", "volume", "count", "closed"],
        "the current candle of a followed symbol and interval, the same as /api/candles' for its period",
    ),
    "TokenExpiring": _object(
        {
            "expiresAt": MS,
            "in": {"type": "integer", "minimum": 0, "description": "milliseconds left"},
        },
        ["expiresAt", "in"],
        "the token expires soon: authenticate again with a new one to stay connected",
    ),
}


def _frame(action: str, fields: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return _object(
        {"action": {"type": "string", "const": action}, "id": FRAME_ID, **fields},
        ["action", *required],
        additional=True,
    )


FRAME_ID = {"type": ["string", "integer"], "description": "the request's id, when it had one"}


def _reply(kind: str, result: str | dict[str, Any]) -> dict[str, Any]:
    """A /live-price reply: the Socket.IO ack's object with its `type` (and the request's `id`)."""
    schema = copy.deepcopy(SCHEMAS[result] if isinstance(result, str) else result)
    schema["properties"] = {"type": {"type": "string", "const": kind}, "id": FRAME_ID, **schema["properties"]}
    schema["required"] = ["type", *schema["required"]]
    return schema


LIVE_PRICE_SCHEMAS: dict[str, Any] = {
    "SubscribeFrame": {
        "allOf": [
            _frame("subscribe", {**RESUME, "heartbeat": HEARTBEAT, "throttle": THROTTLE}, []),
            {"oneOf": [_ref("FrameSymbols"), HEARTBEAT_ONLY]},
        ]
    },
    "UnsubscribeFrame": {"allOf": [_frame("unsubscribe", {}, []), _ref("FrameSymbols")]},
    "StockUpdatesFrame": _object(
        {"type": {"type": "string", "const": "stockUpdates"}, "updates": _ref("UpdateList")}, ["type", "updates"]
    ),
    "FrameSymbols": {
        "oneOf": [
            _object({"symbol": {"type": "string"}, "throttle": THROTTLE}, ["symbol"], additional=True),
            _object(
                {"symbols": _array({"type": "string"}, minItems=1), "throttle": THROTTLE}, ["symbols"], additional=True
            ),
        ]
    },
    "HistoryFrame": _frame(
        "history",
        {
            "symbol": {"type": "string"},
            "from": MS,
            "to": MS,
            "limit": {"type": "integer", "minimum": 1, "maximum": MAX_HISTORY_LIMIT},
        },
        ["symbol"],
    ),
    "AuthenticateFrame": _frame("authenticate", {"token": {"type": "string"}}, ["token"]),
    "PingFrame": _frame("ping", {}, []),
    "HeartbeatFrame": _object(
        {"type": {"type": "string", "const": HEARTBEAT_EVENT}, "seq": {"type": "integer", "minimum": 1}},
        ["type", "seq"],
        "sent every `heartbeat` seconds while the connection asks for it",
    ),
    "SubscribeCandlesFrame": {"allOf": [_frame("subscribeCandles", {}, []), _ref("CandlesRequest")]},
    "UnsubscribeCandlesFrame": {"allOf": [_frame("unsubscribeCandles", {}, []), _ref("CandlesRequest")]},
    "CandleFrame": _reply("candle", "LiveCandle"),
    "TokenExpiringFrame": _reply("tokenExpiring", "TokenExpiring"),
    "ErrorFrame": {
        "allOf": [
            _object({"type": {"type": "string", "const": "error"}, "id": FRAME_ID}, ["type"], additional=True),
            _ref("StreamError"),
        ]
    },
}

# -- OpenAPI ------------------------------------------------------------------------------

READ_ERRORS = [
    ErrorCode.INVALID_PAYLOAD,
    ErrorCode.INVALID_SYMBOL,
    ErrorCode.AUTH_REQUIRED,
    ErrorCode.AUTH_FAILED,
    ErrorCode.FORBIDDEN_SYMBOL,
    ErrorCode.NOT_FOUND,
    ErrorCode.UNAVAILABLE,
    ErrorCode.INTERNAL,
]
PUBLISH_ERRORS = [
    ErrorCode.INVALID_PAYLOAD,
    ErrorCode.INVALID_SYMBOL,
    ErrorCode.AUTH_REQUIRED,
    ErrorCode.AUTH_FAILED,
    ErrorCode.FORBIDDEN,
    ErrorCode.UNAVAILABLE,
    ErrorCode.INTERNAL,
]
READ_SECURITY: list[dict[str, list[str]]] = [{}, {"bearer": []}, {"tokenQuery": []}]


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(codes: list[ErrorCode], extra: dict[int, str] | None = None) -> dict[str, Any]:
    """Error responses by HTTP status, each naming the codes it carries."""
    by_status: dict[int, list[str]] = {}
    for code in codes:
        by_status.setdefault(HTTP_STATUS[code], []).append(code.value)
    responses = {
        str(status): _json(_ref("HttpError"), "error: " + ", ".join(names))
        for status, names in sorted(by_status.items())
    }
    for status, description in (extra or {}).items():
        responses[str(status)] = _json(_ref("HttpError"), description)
    return responses


def _param(name: str, where: str, schema: dict[str, Any], description: str, required: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": required or where == "path",
        "schema": schema,
        "description": description,
    }


SYMBOL_PARAM = _param("symbol", "path", _ref("SymbolInput"), "the symbol")
FROM_PARAM = _param("from", "query", MS, "only updates with a timestamp at or after this (ms)")
TO_PARAM = _param("to", "query", MS, "only updates with a timestamp at or before this (ms)")


def _get(
    summary: str,
    ok: dict[str, Any],
    errors: dict[str, Any] | None = None,
    parameters: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, **extra}
    if parameters:
        operation["parameters"] = parameters
    operation["responses"] = {"200": ok, **(errors or {})}
    return {"get": operation}


def _page(content_type: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {content_type: {"schema": {"type": "string"}}}}


def _schemas(vocabulary: Vocabulary) -> dict[str, Any]:
    """The shared schemas, with what only the running code can enumerate."""
    schemas = copy.deepcopy(SCHEMAS)
    schemas["Readiness"]["properties"]["backend"]["enum"] = list(vocabulary.backends)
    return schemas


def openapi_document(vocabulary: Vocabulary) -> dict[str, Any]:
    """The OpenAPI 3.1 description of every HTTP route."""
    too_large = PayloadTooLarge(0)
    paths: dict[str, Any] = {
        "/healthz": _get(
            "Liveness: 200 while the process serves", _json(_ref("Health"), "serving"), operationId="healthz"
        ),
        "/readyz": _get(
            "Readiness: backend reachable and listener subscribed",
            _json(_ref("Readiness"), "ready"),
            {"503": _json(_ref("Readiness"), "not ready (backend unreachable, or shutting down)")},
            operationId="readyz",
        ),
        "/metrics": _get("Prometheus metrics", _page("text/plain", "Prometheus text format"), operationId="metrics"),
        "/api/quotes": _get(
            "The latest update of several symbols",
            _json(_ref("Quotes"), "the prices found and the symbols without"),
            _errors(READ_ERRORS),
            [_param("symbols", "query", {"type": "string"}, "comma-separated symbols", True)],
            operationId="getQuotes",
            security=READ_SECURITY,
        ),
        "/api/quotes/{symbol}": _get(
            "The latest update of a symbol",
            _json(_ref("Update"), "the latest update"),
            _errors(READ_ERRORS),
            [SYMBOL_PARAM],
            operationId="getQuote",
            security=READ_SECURITY,
        ),
        "/api/history/{symbol}": _get(
            "Stored updates, oldest first",
            _json(_ref("History"), "the newest matching updates, oldest first"),
            _errors(READ_ERRORS),
            [
                SYMBOL_PARAM,
                FROM_PARAM,
                TO_PARAM,
                _param(
                    "limit",
                    "query",
                    {"type": "integer", "minimum": 1, "maximum": MAX_HISTORY_LIMIT, "default": 1000},
                    "at most this many (the newest)",
                ),
            ],
            operationId="getHistory",
            security=READ_SECURITY,
        ),
        "/api/candles/{symbol}": _get(
            "OHLC candles built from history",
            _json(_ref("Candles"), "candles, oldest first"),
            _errors(READ_ERRORS),
            [
                SYMBOL_PARAM,
                _param(
                    "interval",
                    "query",
                    {"type": "string", "enum": list(INTERVALS_MS), "default": "1m"},
                    "bucket size (UTC-aligned)",
                ),
                FROM_PARAM,
                TO_PARAM,
            ],
            operationId="getCandles",
            security=READ_SECURITY,
        ),
        PUBLISH_PATH: {
            "post": {
                "summary": "Publish one update or a list of updates",
                "description": 'Needs a token whose `publish` claim is true, "*" or a list of symbols. Every update '
                "is checked before any is published; a refused request publishes nothing. A backend "
                "failure in the middle of a list answers 503 with `published` in the error: the "
                "updates that went out before it.",
                "operationId": "publish",
                "security": [{"bearer": []}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("PublishRequest")}}},
                "responses": {
                    "200": _json(_ref("Published"), "published, in request order"),
                    **_errors(
                        PUBLISH_ERRORS,
                        {too_large.http_status: "error: invalid_payload (the body is over MAX_MESSAGE_BYTES)"},
                    ),
                },
            }
        },
        "/": _get("The live demo page", _page("text/html", "the page"), operationId="demoPage"),
        "/static/{name}": _get(
            "The demo page's files",
            _page("application/octet-stream", "the file"),
            _errors([ErrorCode.NOT_FOUND]),
            [
                _param(
                    "name",
                    "path",
                    {"type": "string"},
                    "the file's path under the page's folder, e.g. app.js or "
                    "vendor/lightweight-charts.standalone.production.js",
                )
            ],
            operationId="demoFile",
        ),
        "/live-price": _get(
            "The plain WebSocket endpoint (see /asyncapi.json)",
            _page("text/plain", "not a WebSocket request"),
            {"101": {"description": "switched to the WebSocket protocol"}},
            [_param("token", "query", {"type": "string"}, "a JWT, instead of an authenticate frame")],
            operationId="livePrice",
        ),
        "/socket.io/": {
            m: {
                "summary": f"The Socket.IO endpoint, Engine.IO v4 (see /asyncapi.json); {m.upper()} "
                "is a long-polling request",
                "operationId": f"socketio{m.capitalize()}",
                "responses": {
                    "200": _page("text/plain", "Engine.IO packets"),
                    "101": {"description": "switched to the WebSocket protocol"},
                    "400": {"description": "a bad Engine.IO request"},
                },
            }
            for m in ("get", "post")
        },
        OPENAPI_PATH: _get("This document", _page("application/json", "OpenAPI 3.1"), operationId="openapi"),
        ASYNCAPI_PATH: _get(
            "The Socket.IO and /live-price description",
            _page("application/json", "AsyncAPI 3.0"),
            operationId="asyncapi",
        ),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": TITLE,
            "version": __version__,
            "summary": SUMMARY,
            "description": 'Errors are `{"error": {"code", "message"}}`; codes: '
            + ", ".join(_error_codes(http=True))
            + ".",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": _schemas(vocabulary),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "tokenQuery": {"type": "apiKey", "in": "query", "name": "token"},
            },
        },
    }


# -- AsyncAPI -----------------------------------------------------------------------------


def _message(name: str, payload: dict[str, Any], summary: str) -> dict[str, Any]:
    return {"name": name, "title": name, "summary": summary, "contentType": "application/json", "payload": payload}


@dataclass(frozen=True)
class RequestDoc:
    """How one request of Session.actions is described: its Socket.IO payload,
    its /live-price frame, and the result its ack (or reply frame) carries."""

    summary: str
    payload: dict[str, Any]
    frame: dict[str, Any]
    result: dict[str, Any]


# The requests described in detail, in the documents' order. A request of
# Session.actions that is not here is still listed, with a generic description.
REQUEST_DOCS = {
    "subscribe": RequestDoc(
        "subscribe to symbols, and set the connection's heartbeat",
        _ref("SubscribeRequest"),
        _ref("SubscribeFrame"),
        _ref("Subscribed"),
    ),
    "unsubscribe": RequestDoc(
        "unsubscribe from symbols", _ref("SymbolsRequest"), _ref("UnsubscribeFrame"), _ref("Unsubscribed")
    ),
    "history": RequestDoc(
        "stored updates of a symbol", _ref("HistoryRequest"), _ref("HistoryFrame"), _ref("HistoryResult")
    ),
    "authenticate": RequestDoc(
        "authenticate with a JWT", _ref("TokenRequest"), _ref("AuthenticateFrame"), _ref("Authenticated")
    ),
    "ping": RequestDoc("answered with pong", {}, _ref("PingFrame"), _ref("Pong")),
    "subscribeCandles": RequestDoc(
        "follow live candles; the current candle of each symbol added follows the reply",
        _ref("CandlesRequest"),
        _ref("SubscribeCandlesFrame"),
        _ref("CandlesSubscribed"),
    ),
    "unsubscribeCandles": RequestDoc(
        "stop following live candles",
        _ref("CandlesRequest"),
        _ref("UnsubscribeCandlesFrame"),
        _ref("CandlesUnsubscribed"),
    ),
}

CANDLE_SUMMARY = "the current candle: at most every CANDLE_MIN_INTERVAL_MS while it changes, and once closed at its end"
TOKEN_EXPIRING_SUMMARY = "sent TOKEN_EXPIRY_WARNING seconds before the token's exp"


def _generic_doc(action: str) -> RequestDoc:
    return RequestDoc(
        f"the {action} request",
        {"description": f"the {action} request's payload"},
        _frame(action, {}, []),
        _object({"ok": OK_TRUE}, ["ok"], additional=True),
    )


def requests(vocabulary: Vocabulary) -> list[tuple[str, RequestDoc]]:
    """Every request a session answers, with its description: the detailed ones
    first, then any other in name order."""
    actions = vocabulary.actions
    names = [a for a in REQUEST_DOCS if a in actions] + sorted(a for a in actions if a not in REQUEST_DOCS)
    return [(a, REQUEST_DOCS.get(a) or _generic_doc(a)) for a in names]


def _reply_message(vocabulary: Vocabulary, action: str) -> str:
    """The /live-price message name of a request's reply: its frame type, unless
    that is the request's own name (`history`)."""
    kind = vocabulary.reply_types.get(action, action)
    return f"{action}Reply" if kind == action else kind


def socketio_messages(vocabulary: Vocabulary) -> dict[str, Any]:
    """Each Socket.IO event and ack, from the events the transport takes."""
    messages: dict[str, Any] = {}
    for action, doc in requests(vocabulary):
        if action not in vocabulary.socketio_events:
            continue
        messages[action] = _message(action, copy.deepcopy(doc.payload), doc.summary + " (with an ack callback)")
        messages[action + "Ack"] = _message(
            f"{action} ack", {"oneOf": [copy.deepcopy(doc.result), _ref("Refused")]}, f"the ack of {action}"
        )
    messages.update(
        {
            "authenticated": _message(
                "authenticated", _ref("AuthenticatedEvent"), "sent after a successful authenticate"
            ),
            "stockUpdate": _message(
                "stockUpdate",
                _ref("Update"),
                "one update, exactly as published; with connection state recovery an opaque "
                "string offset follows as a second argument",
            ),
            HEARTBEAT_EVENT: _message(
                HEARTBEAT_EVENT, _ref("Heartbeat"), "every `heartbeat` seconds, after a subscribe that asked for it"
            ),
            "stockUpdates": _message(
                "stockUpdates", _ref("UpdateList"), "`*` with a throttle: one event per period (a market overview)"
            ),
            "candle": _message("candle", _ref("LiveCandle"), CANDLE_SUMMARY),
            "tokenExpiring": _message("tokenExpiring", _ref("TokenExpiring"), TOKEN_EXPIRING_SUMMARY),
            "error": _message(
                "error",
                _ref("StreamError"),
                "a request failed and gave no ack callback, or the "
                "server ends the connection (auth_failed, slow_client, "
                "server_shutdown); forbidden_symbol with `symbols` after "
                "a new token that no longer allows them",
            ),
        }
    )
    return messages


def live_price_messages(vocabulary: Vocabulary) -> dict[str, Any]:
    """Each /live-price frame, from the requests a session answers."""
    messages: dict[str, Any] = {}
    replies: dict[str, Any] = {}
    for action, doc in requests(vocabulary):
        messages[action] = _message(action, copy.deepcopy(doc.frame), doc.summary)
        kind = vocabulary.reply_types.get(action, action)
        # The reply is the ack's object with a `type`: the schema itself, not a reference to it.
        result = doc.result["$ref"].rsplit("/", 1)[1] if "$ref" in doc.result else doc.result
        replies[_reply_message(vocabulary, action)] = _message(kind, _reply(kind, result), f"the reply to {action}")
    messages["update"] = _message("update", _ref("Update"), "a price update, bare (no type key), exactly as published")
    messages["stockUpdates"] = _message(
        "stockUpdates", _ref("StockUpdatesFrame"), "`*` with a throttle: one frame per period (a market overview)"
    )
    messages.update(replies)
    messages[HEARTBEAT_EVENT] = _message(
        HEARTBEAT_EVENT,
        _ref("HeartbeatFrame"),
        "every `heartbeat` seconds, after a subscribe that asked for it (or LIVE_PRICE_HEARTBEAT)",
    )
    messages["candle"] = _message("candle", _ref("CandleFrame"), CANDLE_SUMMARY)
    messages["tokenExpiring"] = _message("tokenExpiring", _ref("TokenExpiringFrame"), TOKEN_EXPIRING_SUMMARY)
    messages["error"] = _message(
        "error",
        _ref("ErrorFrame"),
        "a refused request or frame; auth_failed and slow_client close the socket (1008), server_shutdown too (1001)",
    )
    return messages


def _operation(action: str, channel: str, message: str, summary: str, reply: str | None = None) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "action": action,
        "summary": summary,
        "channel": {"$ref": f"#/channels/{channel}"},
        "messages": [{"$ref": f"#/channels/{channel}/messages/{message}"}],
    }
    if reply is not None:
        operation["reply"] = {
            "channel": {"$ref": f"#/channels/{channel}"},
            "messages": [{"$ref": f"#/channels/{channel}/messages/{reply}"}],
        }
    return operation


def asyncapi_document(vocabulary: Vocabulary, host: str = "localhost:5000") -> dict[str, Any]:
    """The AsyncAPI 3.0 description of the Socket.IO events and `/live-price` frames,
    from the server's point of view (it receives requests and sends updates)."""
    schemas = {**_schemas(vocabulary), **copy.deepcopy(LIVE_PRICE_SCHEMAS)}
    operations: dict[str, Any] = {}
    for action, doc in requests(vocabulary):
        name = action[:1].upper() + action[1:]
        if action in vocabulary.socketio_events:
            operations[f"socketio{name}"] = _operation("receive", "socketio", action, doc.summary, action + "Ack")
        operations[f"livePrice{name}"] = _operation(
            "receive", "livePrice", action, doc.summary, _reply_message(vocabulary, action)
        )
    operations.update(
        {
            "socketioAuthenticated": _operation("send", "socketio", "authenticated", "authenticated"),
            "socketioStockUpdate": _operation("send", "socketio", "stockUpdate", "price updates of subscribed symbols"),
            "socketioHeartbeat": _operation("send", "socketio", HEARTBEAT_EVENT, "heartbeats, when asked for"),
            "socketioStockUpdates": _operation(
                "send", "socketio", "stockUpdates", "throttled `*`: changed symbols per period"
            ),
            "socketioError": _operation("send", "socketio", "error", "errors"),
            "socketioCandle": _operation("send", "socketio", "candle", "live candles of followed symbols"),
            "socketioTokenExpiring": _operation("send", "socketio", "tokenExpiring", "the token expires soon"),
            "livePriceUpdate": _operation("send", "livePrice", "update", "price updates of subscribed symbols"),
            "livePriceHeartbeat": _operation("send", "livePrice", HEARTBEAT_EVENT, "heartbeats, when asked for"),
            "livePriceStockUpdates": _operation(
                "send", "livePrice", "stockUpdates", "throttled `*`: changed symbols per period"
            ),
            "livePriceError": _operation("send", "livePrice", "error", "errors"),
            "livePriceCandle": _operation("send", "livePrice", "candle", "live candles of followed symbols"),
            "livePriceTokenExpiring": _operation("send", "livePrice", "tokenExpiring", "the token expires soon"),
        }
    )
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": TITLE,
            "version": __version__,
            "description": SUMMARY + " Error codes of both transports: " + ", ".join(_error_codes(http=False)) + ".",
        },
        "defaultContentType": "application/json",
        "servers": {
            "socketio": {
                "host": host,
                "protocol": "ws",
                "pathname": "/socket.io/",
                "description": "Socket.IO v5 over Engine.IO v4 (long-polling and WebSocket), namespace /; "
                "a token may come in the handshake's auth as {token}. With connection "
                "state recovery on (RECOVERY_WINDOW > 0) the CONNECT reply carries a pid, "
                "and a client reconnecting with {pid, offset} in its auth gets its "
                "subscriptions and missed updates back (socket.io-client >= 4.6 does this "
                "by itself)",
            },
            "livePrice": {
                "host": host,
                "protocol": "ws",
                "pathname": "/live-price",
                "description": "plain WebSocket, JSON text frames; a token may come as ?token=",
            },
        },
        "channels": {
            "socketio": {
                "address": "/",
                "title": "Socket.IO namespace /",
                "servers": [{"$ref": "#/servers/socketio"}],
                "messages": socketio_messages(vocabulary),
            },
            "livePrice": {
                "address": "/live-price",
                "title": "/live-price",
                "servers": [{"$ref": "#/servers/livePrice"}],
                "messages": live_price_messages(vocabulary),
            },
        },
        "operations": operations,
        "components": {"schemas": schemas},
    }


class ApiDocs:
    """Serves both documents; AsyncAPI's servers name the host the client asked."""

    def __init__(self, vocabulary: Vocabulary) -> None:
        self._vocabulary = vocabulary
        self._openapi = orjson.dumps(openapi_document(vocabulary))

    def attach(self, app: web.Application) -> None:
        app.router.add_get(OPENAPI_PATH, self.openapi)
        app.router.add_get(ASYNCAPI_PATH, self.asyncapi)

    async def openapi(self, request: web.Request) -> web.Response:
        return web.Response(body=self._openapi, content_type="application/json")

    async def asyncapi(self, request: web.Request) -> web.Response:
        return web.Response(
            body=orjson.dumps(asyncapi_document(self._vocabulary, request.host)), content_type="application/json"
        )
