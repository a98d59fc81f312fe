"""The API descriptions: `GET /openapi.json` (OpenAPI 3.1, the HTTP routes) and
`GET /asyncapi.json` (AsyncAPI 3.0, the Socket.IO events and `/live-price` frames).

Both documents share one set of JSON schemas (`SCHEMAS`), written in the subset
of JSON Schema that OpenAPI 3.1 (draft 2020-12) and AsyncAPI 3.0 (draft-07)
read alike. Error codes and their HTTP statuses come from the error catalogue,
so the documents cannot drift from what the server answers.
"""
from __future__ import annotations

import copy
from typing import Any

import orjson
from aiohttp import web

from . import __version__
from .candles import INTERVALS_MS, MAX_SCANNED_UPDATES
from .errors import HTTP_ONLY_CODES, HTTP_STATUS, ErrorCode
from .http_publish import PUBLISH_PATH, PayloadTooLarge
from .client_requests import MAX_HISTORY_LIMIT
from .throttle import MAX_THROTTLE_MS, MIN_THROTTLE_MS
from .updates import MAX_TIMESTAMP

OPENAPI_PATH = "/openapi.json"
ASYNCAPI_PATH = "/asyncapi.json"
DOCUMENT_PATHS = (OPENAPI_PATH, ASYNCAPI_PATH)

TITLE = "stockstream"
SUMMARY = "Real-time stock prices over Socket.IO, a plain WebSocket and HTTP."


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: dict[str, Any], required: list[str], description: str = "",
            additional: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, "required": required,
                              "additionalProperties": additional}
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
SYMBOL_TEXT = "[A-Za-z0-9^][A-Za-z0-9.\\-_/:=^]{0,31}"
OK_TRUE = {"type": "boolean", "const": True}
OK_FALSE = {"type": "boolean", "const": False}
SYMBOL_LIST = _array(_ref("Symbol"))
SUBSCRIPTION_LIST = _array(_ref("Subscription"))
THROTTLE = {"type": "integer", "minimum": MIN_THROTTLE_MS, "maximum": MAX_THROTTLE_MS,
            "description": "at most one update per symbol per this many ms: the latest, the last of a burst "
                           "always; a later subscribe of the symbol with another value (or none) changes it"}

SCHEMAS: dict[str, Any] = {
    "Symbol": {"type": "string", "pattern": "^[A-Z0-9^][A-Z0-9.\\-_/:=^]{0,31}$",
               "description": "a symbol as the server writes it (uppercased)"},
    "Subscription": {"oneOf": [_ref("Symbol"), {"type": "string", "const": "*",
                                                 "description": "every symbol (counts as one subscription)"}]},
    "SymbolInput": {"type": "string", "pattern": f"^{SYMBOL_TEXT}$",
                    "description": "a symbol, case-insensitive (AAPL, brk.b, ^GSPC, BTC-USD, EUR/USD, ES=F)"},
    "Update": _object({
        "symbol": {"type": "string", "pattern": f"^{SYMBOL_TEXT}$"},
        "price": {"type": "number"},
        "timestamp": MS,
        "seq": {"type": "integer", "minimum": 1,
                "description": "per-symbol counter added by stockstream's own publishers (1, 2, 3, ...)"},
    }, ["symbol", "price", "timestamp"],
        "a price update, exactly as published: other fields (volume, ...) pass through", additional=True),
    "UpdateInput": _object({
        "symbol": _ref("SymbolInput"),
        "price": {"type": "number", "description": "a finite number"},
        "timestamp": {**MS, "description": "milliseconds since the Unix epoch; default: the server's clock"},
    }, ["symbol", "price"], "an update to publish; other fields are passed through to clients", additional=True),
    "Error": _object({
        "code": {"type": "string", "enum": _error_codes(http=True)},
        "message": {"type": "string", "description": "human-readable"},
        "symbols": _array({"type": "string"}, "the symbols the error is about"),
    }, ["code", "message"], "an error from the catalogue, the same in acks, events, frames and HTTP bodies",
        additional=True),
    "HttpError": _object({"error": _ref("Error")}, ["error"]),
    "Health": _object({"status": {"type": "string", "const": "ok"}}, ["status"]),
    "Readiness": _object({
        "status": {"type": "string", "enum": ["ready", "unavailable"]},
        "backend": {"type": "string", "enum": ["memory", "redis"]},
        "reason": {"type": "string"},
    }, ["status"], additional=True),
    "Quotes": _object({
        "quotes": {"type": "object", "additionalProperties": _ref("Update"),
                   "description": "the latest update of each symbol that has one"},
        "missing": _array(_ref("Symbol"), "the symbols without a price"),
    }, ["quotes", "missing"]),
    "History": _object({"symbol": _ref("Symbol"), "updates": _array(_ref("Update"), "oldest first")},
                       ["symbol", "updates"]),
    "Candle": _object({
        "start": MS, "open": {"type": "number"}, "high": {"type": "number"}, "low": {"type": "number"},
        "close": {"type": "number"}, "count": {"type": "integer", "minimum": 1},
        "volume": {"type": "number", "description": "summed, when updates carry a volume"},
    }, ["start", "open", "high", "low", "close", "count"]),
    "Candles": _object({
        "symbol": _ref("Symbol"),
        "interval": {"type": "string", "enum": list(INTERVALS_MS)},
        "candles": _array(_ref("Candle"), "oldest first; empty buckets are left out"),
        "updates": {"type": "integer", "minimum": 0, "description": "updates the candles were built from"},
        "limit": {"type": "integer", "const": MAX_SCANNED_UPDATES},
        "partial": {"type": "boolean", "description": "the oldest candle may be incomplete"},
        "next": {"oneOf": [{"type": "null"}, _object({"to": MS}, ["to"])],
                 "description": "repeat with to=next.to for the earlier candles"},
    }, ["symbol", "interval", "candles", "updates", "limit", "partial", "next"]),
    "PublishRequest": {"oneOf": [_ref("UpdateInput"), _array(_ref("UpdateInput"), minItems=1)]},
    "Published": _object({"published": _array(_ref("Update"), "each update as stored, with its seq, in request order")},
                         ["published"]),
    # -- Socket.IO and /live-price ------------------------------------------------------
    "SymbolsRequest": {"oneOf": [
        _ref("SymbolInput"),
        _array({"type": "string"}, minItems=1),
        _object({"symbol": {"type": "string"}, "since": MS, "sinceSeq": {"type": "integer", "minimum": 0},
                 "throttle": THROTTLE}, ["symbol"], additional=True),
        _object({"symbols": _array({"type": "string"}, minItems=1), "since": MS,
                 "sinceSeq": {"type": "integer", "minimum": 0}, "throttle": THROTTLE}, ["symbols"], additional=True),
    ], "description": "one symbol, a list, or an object; `since` (ms) or `sinceSeq` resume from history; "
                      "`throttle` (ms) slows the stream down; the symbol `*` is every symbol (throttled: "
                      "`stockUpdates` lists)"},
    "UpdateList": _array(_ref("Update"), "the latest update of each symbol that changed in the period (or, "
                                         "first, of each priced symbol: the snapshots, in chunks)", minItems=1),
    "HistoryRequest": _object({"symbol": {"type": "string"}, "from": MS, "to": MS,
                               "limit": {"type": "integer", "minimum": 1, "maximum": MAX_HISTORY_LIMIT}},
                              ["symbol"], additional=True),
    "TokenRequest": {"oneOf": [{"type": "string", "description": "a JWT"},
                               _object({"token": {"type": "string"}}, ["token"])]},
    "Failed": _array(_object({"symbol": {"type": "string"},
                              "code": {"type": "string", "enum": [ErrorCode.INVALID_SYMBOL.value,
                                                                  ErrorCode.FORBIDDEN_SYMBOL.value]}},
                             ["symbol", "code"]), "symbols of the request that were not taken"),
    "Subscribed": _object({
        "ok": OK_TRUE, "symbols": {**SUBSCRIPTION_LIST, "description": "the connection's whole subscription set, sorted"},
        "added": SUBSCRIPTION_LIST, "failed": _ref("Failed"),
        "recovered": {"type": "boolean", "description": "with since/sinceSeq: whether history reached back"},
        "throttle": {**THROTTLE, "description": "the request's throttle, echoed"},
    }, ["ok", "symbols", "added", "failed"]),
    "Unsubscribed": _object({"ok": OK_TRUE, "symbols": SUBSCRIPTION_LIST, "removed": SUBSCRIPTION_LIST,
                             "failed": _ref("Failed")}, ["ok", "symbols", "removed", "failed"]),
    "HistoryResult": _object({"ok": OK_TRUE, "symbol": _ref("Symbol"), "updates": _array(_ref("Update"), "oldest first")},
                             ["ok", "symbol", "updates"]),
    "Authenticated": _object({
        "ok": OK_TRUE, "user": {"type": "string", "description": "the token's sub"},
        "expiresAt": {"type": ["integer", "null"], "description": "ms since the epoch; null: never"},
        "revoked": _array(_ref("Symbol"), "subscriptions the new token no longer allows, now dropped"),
    }, ["ok", "user", "expiresAt"]),
    "AuthenticatedEvent": _object({"user": {"type": "string"}, "expiresAt": {"type": ["integer", "null"]}},
                                  ["user", "expiresAt"]),
    "Refused": _object({"ok": OK_FALSE, "error": _ref("StreamError")}, ["ok", "error"],
                       "a request that failed as a whole (the subscription set is unchanged)"),
    "StreamError": {"allOf": [_ref("Error"), {"properties": {"code": {"enum": _error_codes(http=False)}}}],
                    "description": "an error of the streaming transports (all codes but the HTTP-only ones)"},
    "SubscribeAck": {"oneOf": [_ref("Subscribed"), _ref("Refused")]},
    "UnsubscribeAck": {"oneOf": [_ref("Unsubscribed"), _ref("Refused")]},
    "HistoryAck": {"oneOf": [_ref("HistoryResult"), _ref("Refused")]},
    "AuthenticateAck": {"oneOf": [_ref("Authenticated"), _ref("Refused")]},
}


def _frame(action: str, fields: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return _object({"action": {"type": "string", "const": action}, "id": FRAME_ID, **fields},
                   ["action", *required], additional=True)


FRAME_ID = {"type": ["string", "integer"], "description": "the request's id, when it had one"}


def _reply(kind: str, result: str | dict[str, Any]) -> dict[str, Any]:
    """A /live-price reply: the Socket.IO ack's object with its `type` (and the request's `id`)."""
    schema = copy.deepcopy(SCHEMAS[result] if isinstance(result, str) else result)
    schema["properties"] = {"type": {"type": "string", "const": kind}, "id": FRAME_ID, **schema["properties"]}
    schema["required"] = ["type", *schema["required"]]
    return schema


LIVE_PRICE_SCHEMAS: dict[str, Any] = {
    "SubscribeFrame": {"allOf": [_frame("subscribe", {}, []), _ref("FrameSymbols")]},
    "UnsubscribeFrame": {"allOf": [_frame("unsubscribe", {}, []), _ref("FrameSymbols")]},
    "StockUpdatesFrame": _object({"type": {"type": "string", "const": "stockUpdates"},
                                  "updates": _ref("UpdateList")}, ["type", "updates"]),
    "FrameSymbols": {"oneOf": [
        _object({"symbol": {"type": "string"}, "throttle": THROTTLE}, ["symbol"], additional=True),
        _object({"symbols": _array({"type": "string"}, minItems=1), "throttle": THROTTLE}, ["symbols"],
                additional=True),
    ]},
    "HistoryFrame": _frame("history", {"symbol": {"type": "string"}, "from": MS, "to": MS,
                                       "limit": {"type": "integer", "minimum": 1, "maximum": MAX_HISTORY_LIMIT}},
                           ["symbol"]),
    "AuthenticateFrame": _frame("authenticate", {"token": {"type": "string"}}, ["token"]),
    "PingFrame": _frame("ping", {}, []),
    "SubscribedFrame": _reply("subscribed", "Subscribed"),
    "UnsubscribedFrame": _reply("unsubscribed", "Unsubscribed"),
    "HistoryReplyFrame": _reply("history", "HistoryResult"),
    "AuthenticatedFrame": _reply("authenticated", "Authenticated"),
    "PongFrame": _reply("pong", _object({"ok": OK_TRUE}, ["ok"])),
    "ErrorFrame": {"allOf": [_object({"type": {"type": "string", "const": "error"}, "id": FRAME_ID}, ["type"],
                                     additional=True), _ref("StreamError")]},
}

# -- OpenAPI ------------------------------------------------------------------------------

READ_ERRORS = [ErrorCode.INVALID_PAYLOAD, ErrorCode.INVALID_SYMBOL, ErrorCode.AUTH_REQUIRED, ErrorCode.AUTH_FAILED,
               ErrorCode.FORBIDDEN_SYMBOL, ErrorCode.NOT_FOUND, ErrorCode.UNAVAILABLE, ErrorCode.INTERNAL]
PUBLISH_ERRORS = [ErrorCode.INVALID_PAYLOAD, ErrorCode.INVALID_SYMBOL, ErrorCode.AUTH_REQUIRED, ErrorCode.AUTH_FAILED,
                  ErrorCode.FORBIDDEN, ErrorCode.UNAVAILABLE, ErrorCode.INTERNAL]
READ_SECURITY = [{}, {"bearer": []}, {"tokenQuery": []}]


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(codes: list[ErrorCode], extra: dict[int, str] | None = None) -> dict[str, Any]:
    """Error responses by HTTP status, each naming the codes it carries."""
    by_status: dict[int, list[str]] = {}
    for code in codes:
        by_status.setdefault(HTTP_STATUS[code], []).append(code.value)
    responses = {str(status): _json(_ref("HttpError"), "error: " + ", ".join(names))
                 for status, names in sorted(by_status.items())}
    for status, description in (extra or {}).items():
        responses[str(status)] = _json(_ref("HttpError"), description)
    return responses


def _param(name: str, where: str, schema: dict[str, Any], description: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required or where == "path", "schema": schema,
            "description": description}


SYMBOL_PARAM = _param("symbol", "path", _ref("SymbolInput"), "the symbol")
FROM_PARAM = _param("from", "query", MS, "only updates with a timestamp at or after this (ms)")
TO_PARAM = _param("to", "query", MS, "only updates with a timestamp at or before this (ms)")


def _get(summary: str, ok: dict[str, Any], errors: dict[str, Any] | None = None,
         parameters: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, **extra}
    if parameters:
        operation["parameters"] = parameters
    operation["responses"] = {"200": ok, **(errors or {})}
    return {"get": operation}


def _page(content_type: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {content_type: {"schema": {"type": "string"}}}}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description of every HTTP route."""
    too_large = PayloadTooLarge(0)
    paths: dict[str, Any] = {
        "/healthz": _get("Liveness: 200 while the process serves", _json(_ref("Health"), "serving"),
                         operationId="healthz"),
        "/readyz": _get("Readiness: backend reachable and listener subscribed", _json(_ref("Readiness"), "ready"),
                        {"503": _json(_ref("Readiness"), "not ready (backend unreachable, or shutting down)")},
                        operationId="readyz"),
        "/metrics": _get("Prometheus metrics", _page("text/plain", "Prometheus text format"), operationId="metrics"),
        "/api/quotes": _get(
            "The latest update of several symbols", _json(_ref("Quotes"), "the prices found and the symbols without"),
            _errors(READ_ERRORS), [_param("symbols", "query", {"type": "string"}, "comma-separated symbols", True)],
            operationId="getQuotes", security=READ_SECURITY),
        "/api/quotes/{symbol}": _get("The latest update of a symbol", _json(_ref("Update"), "the latest update"),
                                     _errors(READ_ERRORS), [SYMBOL_PARAM], operationId="getQuote",
                                     security=READ_SECURITY),
        "/api/history/{symbol}": _get(
            "Stored updates, oldest first", _json(_ref("History"), "the newest matching updates, oldest first"),
            _errors(READ_ERRORS),
            [SYMBOL_PARAM, FROM_PARAM, TO_PARAM,
             _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": MAX_HISTORY_LIMIT, "default": 1000},
                    "at most this many (the newest)")],
            operationId="getHistory", security=READ_SECURITY),
        "/api/candles/{symbol}": _get(
            "OHLC candles built from history", _json(_ref("Candles"), "candles, oldest first"),
            _errors(READ_ERRORS),
            [SYMBOL_PARAM, _param("interval", "query", {"type": "string", "enum": list(INTERVALS_MS), "default": "1m"},
                                  "bucket size (UTC-aligned)"), FROM_PARAM, TO_PARAM],
            operationId="getCandles", security=READ_SECURITY),
        PUBLISH_PATH: {"post": {
            "summary": "Publish one update or a list of updates",
            "description": "Needs a token whose `publish` claim is true, \"*\" or a list of symbols. Every update "
                           "is checked before any is published; a refused request publishes nothing. A backend "
                           "failure in the middle of a list answers 503 with `published` in the error: the "
                           "updates that went out before it.",
            "operationId": "publish",
            "security": [{"bearer": []}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("PublishRequest")}}},
            "responses": {"200": _json(_ref("Published"), "published, in request order"),
                          **_errors(PUBLISH_ERRORS, {too_large.http_status: "error: invalid_payload "
                                                     "(the body is over MAX_MESSAGE_BYTES)"})},
        }},
        "/": _get("The live demo page", _page("text/html", "the page"), operationId="demoPage"),
        "/static/{name}": _get("The demo page's files", _page("application/octet-stream", "the file"),
                               _errors([ErrorCode.NOT_FOUND]),
                               [_param("name", "path", {"type": "string"},
                                       "the file's path under the page's folder, e.g. app.js or "
                                       "vendor/lightweight-charts.standalone.production.js")],
                               operationId="demoFile"),
        "/live-price": _get("The plain WebSocket endpoint (see /asyncapi.json)",
                            _page("text/plain", "not a WebSocket request"),
                            {"101": {"description": "switched to the WebSocket protocol"}},
                            [_param("token", "query", {"type": "string"}, "a JWT, instead of an authenticate frame")],
                            operationId="livePrice"),
        "/socket.io/": {m: {"summary": f"The Socket.IO endpoint, Engine.IO v4 (see /asyncapi.json); {m.upper()} "
                                       "is a long-polling request",
                            "operationId": f"socketio{m.capitalize()}",
                            "responses": {"200": _page("text/plain", "Engine.IO packets"),
                                          "101": {"description": "switched to the WebSocket protocol"},
                                          "400": {"description": "a bad Engine.IO request"}}}
                        for m in ("get", "post")},
        OPENAPI_PATH: _get("This document", _page("application/json", "OpenAPI 3.1"), operationId="openapi"),
        ASYNCAPI_PATH: _get("The Socket.IO and /live-price description", _page("application/json", "AsyncAPI 3.0"),
                            operationId="asyncapi"),
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": TITLE, "version": __version__, "summary": SUMMARY,
                 "description": "Errors are `{\"error\": {\"code\", \"message\"}}`; codes: "
                                + ", ".join(_error_codes(http=True)) + "."},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": copy.deepcopy(SCHEMAS),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "tokenQuery": {"type": "apiKey", "in": "query", "name": "token"},
            },
        },
    }


# -- AsyncAPI -----------------------------------------------------------------------------

def _message(name: str, payload: dict[str, Any], summary: str) -> dict[str, Any]:
    return {"name": name, "title": name, "summary": summary, "contentType": "application/json", "payload": payload}


SOCKETIO_MESSAGES = {
    "subscribe": _message("subscribe", _ref("SymbolsRequest"), "subscribe to symbols (with an ack callback)"),
    "subscribeAck": _message("subscribe ack", _ref("SubscribeAck"), "the ack of subscribe"),
    "unsubscribe": _message("unsubscribe", _ref("SymbolsRequest"), "unsubscribe from symbols"),
    "unsubscribeAck": _message("unsubscribe ack", _ref("UnsubscribeAck"), "the ack of unsubscribe"),
    "history": _message("history", _ref("HistoryRequest"), "stored updates of a symbol"),
    "historyAck": _message("history ack", _ref("HistoryAck"), "the ack of history"),
    "authenticate": _message("authenticate", _ref("TokenRequest"), "authenticate with a JWT"),
    "authenticateAck": _message("authenticate ack", _ref("AuthenticateAck"), "the ack of authenticate"),
    "authenticated": _message("authenticated", _ref("AuthenticatedEvent"), "sent after a successful authenticate"),
    "stockUpdate": _message("stockUpdate", _ref("Update"),
                            "one update, exactly as published; with connection state recovery an opaque string "
                            "offset follows as a second argument"),
    "stockUpdates": _message("stockUpdates", _ref("UpdateList"),
                             "`*` with a throttle: one event per period (a market overview)"),
    "error": _message("error", _ref("StreamError"), "a request failed and gave no ack callback, or the server "
                                                    "ends the connection (auth_failed, slow_client, server_shutdown)"),
}

LIVE_PRICE_MESSAGES = {
    "subscribe": _message("subscribe", _ref("SubscribeFrame"), "subscribe to symbols"),
    "unsubscribe": _message("unsubscribe", _ref("UnsubscribeFrame"), "unsubscribe from symbols"),
    "history": _message("history", _ref("HistoryFrame"), "stored updates of a symbol"),
    "authenticate": _message("authenticate", _ref("AuthenticateFrame"), "authenticate with a JWT"),
    "ping": _message("ping", _ref("PingFrame"), "answered with pong"),
    "update": _message("update", _ref("Update"), "a price update, bare (no type key), exactly as published"),
    "stockUpdates": _message("stockUpdates", _ref("StockUpdatesFrame"),
                             "`*` with a throttle: one frame per period (a market overview)"),
    "subscribed": _message("subscribed", _ref("SubscribedFrame"), "the reply to subscribe"),
    "unsubscribed": _message("unsubscribed", _ref("UnsubscribedFrame"), "the reply to unsubscribe"),
    "historyReply": _message("history", _ref("HistoryReplyFrame"), "the reply to history"),
    "authenticated": _message("authenticated", _ref("AuthenticatedFrame"), "the reply to authenticate"),
    "pong": _message("pong", _ref("PongFrame"), "the reply to ping"),
    "error": _message("error", _ref("ErrorFrame"), "a refused request or frame; auth_failed and slow_client "
                                                   "close the socket (1008), server_shutdown too (1001)"),
}


def _operation(action: str, channel: str, message: str, summary: str, reply: str | None = None) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "action": action, "summary": summary,
        "channel": {"$ref": f"#/channels/{channel}"},
        "messages": [{"$ref": f"#/channels/{channel}/messages/{message}"}],
    }
    if reply is not None:
        operation["reply"] = {"channel": {"$ref": f"#/channels/{channel}"},
                              "messages": [{"$ref": f"#/channels/{channel}/messages/{reply}"}]}
    return operation


def asyncapi_document(host: str = "localhost:5000") -> dict[str, Any]:
    """The AsyncAPI 3.0 description of the Socket.IO events and `/live-price` frames,
    from the server's point of view (it receives requests and sends updates)."""
    schemas = {**copy.deepcopy(SCHEMAS), **copy.deepcopy(LIVE_PRICE_SCHEMAS)}
    operations = {
        "socketioSubscribe": _operation("receive", "socketio", "subscribe", "subscribe", "subscribeAck"),
        "socketioUnsubscribe": _operation("receive", "socketio", "unsubscribe", "unsubscribe", "unsubscribeAck"),
        "socketioHistory": _operation("receive", "socketio", "history", "history", "historyAck"),
        "socketioAuthenticate": _operation("receive", "socketio", "authenticate", "authenticate", "authenticateAck"),
        "socketioAuthenticated": _operation("send", "socketio", "authenticated", "authenticated"),
        "socketioStockUpdate": _operation("send", "socketio", "stockUpdate", "price updates of subscribed symbols"),
        "socketioStockUpdates": _operation("send", "socketio", "stockUpdates", "throttled `*`: changed symbols per period"),
        "socketioError": _operation("send", "socketio", "error", "errors"),
        "livePriceSubscribe": _operation("receive", "livePrice", "subscribe", "subscribe", "subscribed"),
        "livePriceUnsubscribe": _operation("receive", "livePrice", "unsubscribe", "unsubscribe", "unsubscribed"),
        "livePriceHistory": _operation("receive", "livePrice", "history", "history", "historyReply"),
        "livePriceAuthenticate": _operation("receive", "livePrice", "authenticate", "authenticate", "authenticated"),
        "livePricePing": _operation("receive", "livePrice", "ping", "ping", "pong"),
        "livePriceUpdate": _operation("send", "livePrice", "update", "price updates of subscribed symbols"),
        "livePriceStockUpdates": _operation("send", "livePrice", "stockUpdates", "throttled `*`: changed symbols per period"),
        "livePriceError": _operation("send", "livePrice", "error", "errors"),
    }
    return {
        "asyncapi": "3.0.0",
        "info": {"title": TITLE, "version": __version__,
                 "description": SUMMARY + " Error codes of both transports: "
                                + ", ".join(_error_codes(http=False)) + "."},
        "defaultContentType": "application/json",
        "servers": {
            "socketio": {"host": host, "protocol": "ws", "pathname": "/socket.io/",
                         "description": "Socket.IO v5 over Engine.IO v4 (long-polling and WebSocket), namespace /; "
                                        "a token may come in the handshake's auth as {token}. With connection "
                                        "state recovery on (RECOVERY_WINDOW > 0) the CONNECT reply carries a pid, "
                                        "and a client reconnecting with {pid, offset} in its auth gets its "
                                        "subscriptions and missed updates back (socket.io-client >= 4.6 does this "
                                        "by itself)"},
            "livePrice": {"host": host, "protocol": "ws", "pathname": "/live-price",
                          "description": "plain WebSocket, JSON text frames; a token may come as ?token="},
        },
        "channels": {
            "socketio": {"address": "/", "title": "Socket.IO namespace /",
                         "servers": [{"$ref": "#/servers/socketio"}],
                         "messages": {k: copy.deepcopy(v) for k, v in SOCKETIO_MESSAGES.items()}},
            "livePrice": {"address": "/live-price", "title": "/live-price",
                          "servers": [{"$ref": "#/servers/livePrice"}],
                          "messages": {k: copy.deepcopy(v) for k, v in LIVE_PRICE_MESSAGES.items()}},
        },
        "operations": operations,
        "components": {"schemas": schemas},
    }


class ApiDocs:
    """Serves both documents; AsyncAPI's servers name the host the client asked."""

    def __init__(self) -> None:
        self._openapi = orjson.dumps(openapi_document())

    def attach(self, app: web.Application) -> None:
        app.router.add_get(OPENAPI_PATH, self.openapi)
        app.router.add_get(ASYNCAPI_PATH, self.asyncapi)

    async def openapi(self, request: web.Request) -> web.Response:
        return web.Response(body=self._openapi, content_type="application/json")

    async def asyncapi(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(asyncapi_document(request.host)), content_type="application/json")
