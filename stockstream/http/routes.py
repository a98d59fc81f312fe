"""HTTP routes: health, readiness, quotes, history and candles."""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from aiohttp import web

from ..candles import INTERVALS_MS, MAX_SCANNED_UPDATES, candle_page, ticks_of
from ..client_requests import history_query
from ..errors import ClientError, ErrorCode, invalid_payload
from ..symbols import SymbolError, normalize_symbol
from .common import bearer_token, json_response

if TYPE_CHECKING:
    from ..node import Node


def _symbol(text: str) -> str:
    try:
        return normalize_symbol(text)
    except SymbolError as exc:
        raise ClientError(ErrorCode.INVALID_SYMBOL, str(exc), symbols=[text[:64]]) from None


def _token(request: web.Request) -> str | None:
    """`Authorization: Bearer <jwt>`, or `?token=` as on /live-price."""
    return bearer_token(request) or request.query.get("token") or None


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
        app.router.add_get("/api/candles/{symbol}", self.candles)

    async def healthz(self, request: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        node = self.node
        if node.draining:
            return json_response({"status": "unavailable", "reason": "shutting down"}, 503)
        if not node.broker.ready:
            return json_response(
                {"status": "unavailable", "reason": "backend unreachable or listener not subscribed"}, 503
            )
        return json_response({"status": "ready", "backend": node.broker.kind})

    def _authorize(self, request: web.Request, symbols: list[str]) -> None:
        """The same rules as subscribing: a token when auth is required, and
        the token's `symbols` claim limits what it may read."""
        token = _token(request)
        if token is None:
            if self.node.settings.require_auth:
                raise ClientError(ErrorCode.AUTH_REQUIRED, "send a token: Authorization: Bearer <jwt>, or ?token=<jwt>")
            return
        identity = self.node.services.verifier.verify(token)
        forbidden = [s for s in symbols if not identity.allows(s)]
        if forbidden:
            raise ClientError(ErrorCode.FORBIDDEN_SYMBOL, f"not entitled to {', '.join(forbidden)}", symbols=forbidden)

    async def _known(self, symbol: str) -> None:
        """404 for a symbol that has never had a price."""
        if (await self.node.broker.snapshots([symbol]))[symbol] is None:
            raise ClientError(ErrorCode.NOT_FOUND, f"no price for {symbol}")

    async def quote(self, request: web.Request) -> web.Response:
        symbol = _symbol(request.match_info["symbol"])
        self._authorize(request, [symbol])
        snapshot = (await self.node.broker.snapshots([symbol]))[symbol]
        if snapshot is None:
            raise ClientError(ErrorCode.NOT_FOUND, f"no price for {symbol}")
        return web.Response(body=snapshot.raw, content_type="application/json")

    async def quotes(self, request: web.Request) -> web.Response:
        """The latest update of each symbol that has one; `missing` lists the
        others, and when none has a price the answer is 404."""
        raw = request.query.get("symbols", "")
        symbols = list(dict.fromkeys(_symbol(s.strip()) for s in raw.split(",") if s.strip()))
        if not symbols:
            raise invalid_payload("symbols=A,B is required")
        if len(symbols) > self.node.settings.max_subscriptions:
            raise invalid_payload(f"at most {self.node.settings.max_subscriptions} symbols")
        self._authorize(request, symbols)
        snapshots = await self.node.broker.snapshots(symbols)
        body = {s: orjson.Fragment(u.raw) for s, u in snapshots.items() if u is not None}
        missing = [s for s, u in snapshots.items() if u is None]
        if not body:
            raise ClientError(ErrorCode.NOT_FOUND, f"no price for {', '.join(missing)}", symbols=missing)
        return json_response({"quotes": body, "missing": missing})

    async def history(self, request: web.Request) -> web.Response:
        query = history_query(
            _symbol(request.match_info["symbol"]),
            _int_param(request, "from"),
            _int_param(request, "to"),
            _int_param(request, "limit"),
        )
        self._authorize(request, [query.symbol])
        updates = await self.node.broker.history(query.symbol, query.start_ms, query.end_ms, query.limit)
        if not updates:
            await self._known(query.symbol)
        return json_response({"symbol": query.symbol, "updates": [orjson.Fragment(u.raw) for u in updates]})

    async def candles(self, request: web.Request) -> web.Response:
        """OHLC candles of the stored updates in [from, to]. At most
        MAX_SCANNED_UPDATES updates (the newest of the range) are read per
        request; `next.to` then pages back to the earlier candles."""
        symbol = _symbol(request.match_info["symbol"])
        interval = request.query.get("interval", "1m")
        if interval not in INTERVALS_MS:
            raise invalid_payload(f"interval must be one of {', '.join(INTERVALS_MS)}")
        query = history_query(symbol, _int_param(request, "from"), _int_param(request, "to"), None)
        self._authorize(request, [symbol])
        updates = await self.node.broker.history(symbol, query.start_ms, query.end_ms, MAX_SCANNED_UPDATES + 1)
        if not updates:
            await self._known(symbol)
        truncated = len(updates) > MAX_SCANNED_UPDATES
        scanned = updates[-MAX_SCANNED_UPDATES:]
        page = candle_page(ticks_of(scanned), INTERVALS_MS[interval], truncated)
        return json_response(
            {
                "symbol": symbol,
                "interval": interval,
                "candles": [c.to_dict() for c in page.candles],
                "updates": len(scanned),
                "limit": MAX_SCANNED_UPDATES,
                "partial": page.partial,
                "next": None if page.next_to is None else {"to": page.next_to},
            }
        )
