"""Token expiry on a live connection, with python-socketio, socket.io-client
(Node) and /live-price: `tokenExpiring` comes TOKEN_EXPIRY_WARNING seconds
before `exp`; a new token on the same connection extends it and drops the
price and candle streams it no longer allows (with a `forbidden_symbol`
error); without one the connection ends at `exp`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest

from tests.support.candle_clients import Market
from tests.support.clients import ClientPool
from tests.support.inprocess import Stack, inprocess_stack
from tests.support.protocol import assert_error_object
from tests.support.waiting import PROMPT

SECRET = "token-renewal-secret-longer-than-32-bytes"
WARNING = 2.0  # seconds
TTL = 4  # exp is a whole second: it falls 3-4 s after signing


def sign(ttl: float, symbols: list[str] | None = None) -> tuple[str, int]:
    exp = int(time.time() + ttl)
    claims: dict[str, Any] = {"sub": "renewer", "exp": exp}
    if symbols is not None:
        claims["symbols"] = symbols
    return jwt.encode(claims, SECRET, algorithm="HS256"), exp


@pytest.fixture
async def stack(clients: ClientPool) -> AsyncIterator[Stack]:
    async with inprocess_stack("memory", jwt_secret=SECRET, require_auth=True, token_expiry_warning=WARNING) as ready:
        try:
            yield ready
        finally:
            await clients.close_all()


async def authenticated(stack: Stack, clients: ClientPool, kind: str, token: str) -> Market:
    """A client that authenticated with a request (the token can then be renewed the same way)."""
    market = Market(await clients.ws(stack.url) if kind == "ws" else await clients.sio(stack.url, kind=kind))
    answer = await market.request("authenticate", {"token": token})
    assert answer.get("ok") is True and answer.get("user") == "renewer", answer
    return market


async def wait_warning(market: Market, exp: int) -> tuple[dict[str, Any], float]:
    (warning,) = await market.wait_events(
        "tokenExpiring", lambda es: es[:1], timeout=TTL + PROMPT, what="tokenExpiring"
    )
    return warning, time.time()


@pytest.mark.slow
async def test_warned_before_exp_then_closed_at_exp(stack: Stack, clients: ClientPool, client_kind: str) -> None:
    """tokenExpiring {expiresAt, in} arrives about WARNING seconds before exp;
    without a new token the connection is closed (auth_failed, token expired) at exp."""
    token, exp = sign(TTL)
    market = await authenticated(stack, clients, client_kind, token)
    await market.request("subscribe", {"symbols": ["EXP"]})
    warning, told_at = await wait_warning(market, exp)
    assert warning["expiresAt"] == exp * 1000, warning
    assert exp - WARNING - 0.3 <= told_at < exp, f"warned {exp - told_at:.2f}s before exp"
    assert 0 < warning["in"] <= WARNING * 1000 and abs(warning["in"] - (exp - told_at) * 1000) < 1000, warning
    errors = await market.wait_events("error", lambda es: es, timeout=PROMPT + WARNING, what="the expiry error")
    assert_error_object(errors[0], "auth_failed")
    assert "expire" in errors[0]["message"], errors
    assert time.time() >= exp - 0.1, "closed before the token expired"
    await market.closed()
    assert len(market.events("tokenExpiring")) == 1


@pytest.mark.slow
async def test_new_token_on_warning_extends_and_drops_what_it_no_longer_allows(
    stack: Stack, clients: ClientPool, client_kind: str
) -> None:
    """The README's pattern: on tokenExpiring, authenticate again. The connection
    outlives the first token; a price stream and a candle stream of a symbol
    the new token leaves out stop, with one `forbidden_symbol` error naming it."""
    token, exp = sign(TTL, ["KEEP", "GONE"])
    market = await authenticated(stack, clients, client_kind, token)
    await market.request("subscribe", {"symbols": ["KEEP", "GONE"]})
    for symbol in ("KEEP", "GONE"):
        ack = await market.request("subscribeCandles", {"symbol": symbol, "interval": "1h"})
        assert ack["added"] == [symbol], ack
    await wait_warning(market, exp)
    fresh, _ = sign(3600, ["KEEP"])
    answer = await market.request("authenticate", {"token": fresh})
    assert answer.get("ok") is True and answer.get("revoked") == ["GONE"], answer
    (error,) = await market.wait_events("error", lambda es: es[:1], what="the forbidden_symbol error")
    assert_error_object(error, "forbidden_symbol")
    assert error["symbols"] == ["GONE"], error
    mark = market.marks()
    for symbol in ("GONE", "KEEP"):
        await stack.publish(symbol, 7.0)
    await market.wait_candle(lambda c: c["symbol"] == "KEEP" and c["close"] == 7.0, since=mark)
    await market.client.expect_update(lambda u: u.get("symbol") == "KEEP" and u.get("price") == 7.0)
    ack = await market.request("subscribeCandles", {"symbol": "GONE", "interval": "1h"})
    assert ack["failed"] == [{"symbol": "GONE", "code": "forbidden_symbol"}], ack
    # Well past the first token's exp, the connection is still open and still streams.
    await asyncio.sleep(max(0.0, exp - time.time()) + 0.5)
    await stack.publish("KEEP", 8.0)
    await market.client.expect_update(lambda u: u.get("price") == 8.0)
    assert [c for c in market.candles(mark) if c["symbol"] == "GONE"] == []
    assert [u for u in market.updates() if u.get("symbol") == "GONE" and u.get("price") == 7.0] == []
    assert len(market.events("error")) == 1 and len(market.events("tokenExpiring")) == 1
