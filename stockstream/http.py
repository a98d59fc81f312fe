"""HTTP routes: health, readiness, quotes, history and the demo page."""
from __future__ import annotations

from typing import Any, Awaitable, Callable

import orjson
from aiohttp import web

from .broker import BackendUnavailable
from .errors import ClientError, ErrorCode, invalid_payload
from .node import Node
from .requests import history_query
from .symbols import SymbolError, normalize_symbol

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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
        code = ErrorCode.NOT_FOUND if exc.status == 404 else ErrorCode.INVALID_PAYLOAD
        return json_response({"error": {"code": code.value, "message": exc.reason}}, exc.status)


def _symbol(text: str) -> str:
    try:
        return normalize_symbol(text)
    except SymbolError as exc:
        raise ClientError(ErrorCode.INVALID_SYMBOL, str(exc)) from None


def _int_param(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise invalid_payload(f"{name} must be an integer") from None


class Routes:
    def __init__(self, node: Node) -> None:
        self.node = node

    def attach(self, app: web.Application) -> None:
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/api/quotes", self.quotes)
        app.router.add_get("/api/quotes/{symbol}", self.quote)
        app.router.add_get("/api/history/{symbol}", self.history)

    async def healthz(self, request: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        node = self.node
        if node.draining:
            return json_response({"status": "unavailable", "reason": "shutting down"}, 503)
        if not node.broker.ready:
            return json_response({"status": "unavailable", "reason": "backend unreachable or listener not subscribed"}, 503)
        return json_response({"status": "ready", "backend": node.broker.kind})

    async def quote(self, request: web.Request) -> web.Response:
        symbol = _symbol(request.match_info["symbol"])
        snapshot = (await self.node.broker.snapshots([symbol]))[symbol]
        if snapshot is None:
            raise ClientError(ErrorCode.NOT_FOUND, f"no price for {symbol}")
        return web.Response(body=snapshot.raw, content_type="application/json")

    async def quotes(self, request: web.Request) -> web.Response:
        raw = request.query.get("symbols", "")
        symbols = [_symbol(s) for s in raw.split(",") if s]
        if not symbols:
            raise invalid_payload("symbols=A,B is required")
        if len(symbols) > self.node.settings.max_subscriptions:
            raise invalid_payload(f"at most {self.node.settings.max_subscriptions} symbols")
        snapshots = await self.node.broker.snapshots(symbols)
        body = {s: orjson.Fragment(u.raw) for s, u in snapshots.items() if u is not None}
        return json_response({"quotes": body, "missing": [s for s, u in snapshots.items() if u is None]})

    async def history(self, request: web.Request) -> web.Response:
        query = history_query(_symbol(request.match_info["symbol"]), _int_param(request, "from"),
                              _int_param(request, "to"), _int_param(request, "limit"))
        updates = await self.node.broker.history(query.symbol, query.start_ms, query.end_ms, query.limit)
        return json_response({"symbol": query.symbol, "updates": [orjson.Fragment(u.raw) for u in updates]})
