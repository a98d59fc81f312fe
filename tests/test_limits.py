"""Per-connection limits and the errors they answer with.

MAX_SUBSCRIPTIONS -> too_many_subscriptions, MAX_MESSAGE_BYTES -> the connection
is closed (1009 on /live-price), REQUEST_RATE/REQUEST_BURST -> rate_limited,
MAX_CONNECTIONS_PER_USER -> the extra connection is refused with auth_failed.
Each on both transports; a refused request leaves the subscription set as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any, AsyncIterator

import jwt
import pytest
import socketio

from tests.support.clients import ClientPool
from tests.support.inprocess import Stack, inprocess_stack
from tests.support.protocol import assert_error_ack, assert_error_object, assert_subscribe_ack, assert_unsubscribe_ack
from tests.support.waiting import PROMPT, eventually
from tests.support.acks import before_close, sio_ack

SECRET = "limits-secret-that-is-longer-than-32-bytes"
TRANSPORTS = ["socketio", "websocket"]


@contextlib.asynccontextmanager
async def limited_stack(clients: ClientPool, **limits: Any) -> AsyncIterator[Stack]:
    """An in-process server (embedded backend) with `limits`; the test's clients
    leave before it stops, so its shutdown does not wait for them."""
    async with inprocess_stack("memory", None, **limits) as stack:
        try:
            yield stack
        finally:
            await clients.close_all()


async def open_client(clients: ClientPool, stack: Stack, transport: str, **kwargs: Any) -> Any:
    if transport == "socketio":
        return await clients.sio(stack.url, **kwargs)
    return await clients.ws(stack.url, **kwargs)


async def request(client: Any, action: str, *symbols: str) -> dict[str, Any]:
    """subscribe/unsubscribe: the ack (Socket.IO) or the reply frame (/live-price)."""
    if client.kind == "ws":
        return await getattr(client, action)(*symbols)
    return await client.call(action, list(symbols))


def expect_refused(reply: Any, code: str) -> None:
    """A request that failed as a whole: ok:false ack, or an `error` frame."""
    if isinstance(reply, dict) and reply.get("type") is not None:
        assert reply.get("type") == "error", reply
        assert_error_object(reply, code)
    else:
        assert_error_ack(reply, code)


# -- MAX_SUBSCRIPTIONS --------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_too_many_subscriptions(clients, transport):
    async with limited_stack(clients, max_subscriptions=3) as stack:
        client = await open_client(clients, stack, transport)
        assert_subscribe_ack(await request(client, "subscribe", "AAPL", "MSFT"), ["AAPL", "MSFT"], ["AAPL", "MSFT"])
        # Two more would make four: refused as a whole, nothing of it added.
        expect_refused(await request(client, "subscribe", "IBM", "TSLA"), "too_many_subscriptions")
        # A single request over the limit on its own.
        expect_refused(await request(client, "subscribe", "A", "B", "C", "D"), "too_many_subscriptions")
        # Symbols already in the set do not count again; one more fits exactly.
        assert_subscribe_ack(
            await request(client, "subscribe", "AAPL", "MSFT", "IBM"), ["AAPL", "MSFT", "IBM"], ["IBM"]
        )
        expect_refused(await request(client, "subscribe", "TSLA"), "too_many_subscriptions")
        # Room again after an unsubscribe.
        assert_unsubscribe_ack(await request(client, "unsubscribe", "MSFT"), ["AAPL", "IBM"], ["MSFT"])
        assert_subscribe_ack(await request(client, "subscribe", "TSLA"), ["AAPL", "IBM", "TSLA"], ["TSLA"])
        # Refused symbols were never joined: only the set's symbols stream.
        mark = len(client.updates)
        for symbol in ("MSFT", "A", "D", "AAPL"):
            await stack.publish(symbol, 10.0)
        await client.expect_update(lambda u: u.get("symbol") == "AAPL")
        assert {u["symbol"] for u in client.updates.since(mark)} == {"AAPL"}


async def test_too_many_subscriptions_without_ack_sends_error_event(clients):
    async with limited_stack(clients, max_subscriptions=2) as stack:
        client = await clients.sio(stack.url)
        await client.emit("subscribe", ["AAPL", "MSFT", "IBM"])
        assert_error_object(await client.expect_error(), "too_many_subscriptions")
        assert_subscribe_ack(await client.subscribe("AAPL"), ["AAPL"], ["AAPL"])


# -- MAX_MESSAGE_BYTES --------------------------------------------------------------------

LIMIT = 4096


def padded_subscribe(size: int, **extra: Any) -> dict[str, Any]:
    """A subscribe object (with `extra` keys) whose JSON is `size` bytes."""
    body = {**extra, "symbol": "AAPL", "padding": ""}
    body["padding"] = "x" * max(0, size - len(json.dumps(body)))
    return body


@pytest.mark.parametrize("sio_transport", ["websocket", "polling"])
async def test_socketio_message_over_the_limit_closes_the_connection(clients, sio_transport):
    async with limited_stack(clients, max_message_bytes=LIMIT) as stack:
        client = await clients.sio(stack.url, transports=[sio_transport])
        # Under the limit (with Socket.IO framing) is served.
        ack = await client.subscribe(padded_subscribe(LIMIT - 200))
        assert_subscribe_ack(ack, ["AAPL"], ["AAPL"])
        bystander = await clients.sio(stack.url)
        assert_subscribe_ack(await bystander.subscribe("AAPL"), ["AAPL"], ["AAPL"])
        with contextlib.suppress(Exception):
            await client.emit("subscribe", padded_subscribe(4 * LIMIT))
        try:
            await client.wait_disconnected(PROMPT)
        except asyncio.TimeoutError:
            raise AssertionError(
                f"still connected {PROMPT}s after a {4 * LIMIT}-byte message "
                f"(limit {LIMIT}); timeline {client.timeline.items[-5:]!r}"
            ) from None
        # The others are served on.
        sent = await stack.publish("AAPL", 191.5)
        await bystander.expect_update(lambda u: u.get("price") == sent["price"])
        assert bystander.connected


async def test_live_price_frame_over_the_limit_closes_with_1009(clients):
    async with limited_stack(clients, max_message_bytes=LIMIT) as stack:
        ws = await clients.ws(stack.url)
        reply = await ws.request(padded_subscribe(LIMIT - 10, action="subscribe"))
        assert_subscribe_ack(reply, ["AAPL"], ["AAPL"])
        bystander = await clients.ws(stack.url)
        await bystander.subscribe("AAPL")
        await ws.send(padded_subscribe(LIMIT + 1, action="subscribe"))
        code = await ws.wait_closed()
        assert code == 1009, f"frame over MAX_MESSAGE_BYTES closed with {code}, expected 1009"
        sent = await stack.publish("AAPL", 191.5)
        await bystander.expect_update(lambda u: u.get("price") == sent["price"])


# -- REQUEST_RATE / REQUEST_BURST -----------------------------------------------------------

RATE, BURST = 2.0, 4


async def burst_of_subscribes(client: Any, count: int) -> list[dict[str, Any]]:
    """`count` subscribes sent back to back (no waiting for answers); the answers in order."""
    symbols = [f"S{i}" for i in range(count)]
    if client.kind == "ws":
        for symbol in symbols:
            await client.send({"action": "subscribe", "symbol": symbol})
        return [await client.next_reply() for _ in symbols]
    loop = asyncio.get_running_loop()
    answers = [loop.create_future() for _ in symbols]
    for symbol, answer in zip(symbols, answers):
        await client.sio.emit("subscribe", symbol, callback=lambda *a, f=answer: f.done() or f.set_result(a[0]))
    return list(await asyncio.wait_for(asyncio.gather(*answers), PROMPT))


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_rate_limited_then_served_again(clients, transport):
    async with limited_stack(clients, request_rate=RATE, request_burst=BURST) as stack:
        client = await open_client(clients, stack, transport)
        started = time.monotonic()
        replies = await burst_of_subscribes(client, 10)
        elapsed = time.monotonic() - started
        ok = [r for r in replies if r.get("ok") is True]
        refused = [r for r in replies if r.get("ok") is not True]
        # The burst is served; what exceeds it (plus what the rate refilled meanwhile) is not.
        allowed = BURST + int(elapsed * RATE)
        assert BURST <= len(ok) <= allowed, (elapsed, replies)
        assert replies[:BURST] == ok[:BURST], replies
        for reply in refused:
            expect_refused(reply, "rate_limited")
        # Refused subscribes added nothing: the set is exactly what the served ones added.
        served = [s for r in ok for s in r["added"]]
        assert ok[-1]["symbols"] == sorted(served), ok[-1]
        # After waiting for the bucket to refill, requests are served again.
        await asyncio.sleep(1.2 / RATE)
        assert_unsubscribe_ack(await request(client, "unsubscribe", "S0"), sorted(served[1:]), ["S0"])


async def test_rate_limited_without_ack_sends_error_event(clients):
    async with limited_stack(clients, request_rate=RATE, request_burst=BURST) as stack:
        client = await clients.sio(stack.url)
        for i in range(BURST + 3):
            await client.emit("subscribe", f"S{i}")
        error = await client.expect_error()
        assert_error_object(error, "rate_limited")
        assert client.connected


async def test_rate_limit_is_per_connection(clients):
    async with limited_stack(clients, request_rate=RATE, request_burst=BURST) as stack:
        noisy = await clients.ws(stack.url)
        quiet = await clients.ws(stack.url)
        replies = await burst_of_subscribes(noisy, 10)
        assert any(r.get("code") == "rate_limited" for r in replies), replies
        assert_subscribe_ack(await quiet.subscribe("AAPL"), ["AAPL"], ["AAPL"])


# -- MAX_CONNECTIONS_PER_USER -----------------------------------------------------------------

PER_USER = 2


def token_for(sub: str, ttl: int = 3600) -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "iat": now, "exp": now + ttl}, SECRET, algorithm="HS256")


async def connect_as(clients: ClientPool, stack: Stack, sub: str, path: str) -> Any:
    """A connection authenticated as `sub` along `path`; AssertionError if refused."""
    token = token_for(sub)
    if path == "handshake":
        return await clients.sio(stack.url, auth={"token": token})
    if path == "event":
        client = await clients.sio(stack.url)
        ack = await client.call("authenticate", token)
        assert ack.get("ok") is True, ack
        return client
    if path == "query":
        client = await clients.ws(f"{stack.ws_url}?token={token}")
        reply = await client.request({"action": "ping"})
        assert reply.get("type") == "pong", reply
        return client
    client = await clients.ws(stack.url)
    reply = await client.request({"action": "authenticate", "token": token})
    assert reply.get("type") == "authenticated", reply
    return client


async def expect_refused_connection(clients: ClientPool, stack: Stack, sub: str, path: str) -> None:
    token = token_for(sub)
    if path == "handshake":
        client = await clients.sio(stack.url, auth={"token": token}, connect=False)
        with pytest.raises(socketio.exceptions.ConnectionError):
            await client.connect()
        assert_error_object(client.connect_error, "auth_failed")
    elif path == "event":
        client = await clients.sio(stack.url)
        ack = await before_close(sio_ack(client, "authenticate", token), client.disconnected, "the auth_failed ack")
        assert_error_ack(ack, "auth_failed")
        await client.wait_disconnected()
    else:
        client = await clients.ws(f"{stack.ws_url}?token={token}" if path == "query" else stack.url)
        if path == "frame":
            await client.send({"action": "authenticate", "token": token})
        reply = await before_close(client.next_reply(), client.closed, "an auth_failed error frame")
        assert reply.get("type") == "error", reply
        assert_error_object(reply, "auth_failed")
        await client.wait_closed()


@pytest.mark.parametrize("path", ["handshake", "event", "query", "frame"])
async def test_extra_connection_of_a_user_is_refused(clients, path):
    async with limited_stack(clients, jwt_secret=SECRET, max_connections_per_user=PER_USER) as stack:
        # Connections of one user count together whichever transport carries them.
        first = await connect_as(clients, stack, "alice", "handshake")
        await connect_as(clients, stack, "alice", "frame")
        await expect_refused_connection(clients, stack, "alice", path)
        # Other users are not affected.
        await connect_as(clients, stack, "bob", path)
        # Re-authenticating an existing connection as the same user is not an extra connection.
        ack = await first.call("authenticate", token_for("alice"))
        assert ack.get("ok") is True, ack
        # Once one of alice's connections is gone, she may connect again.
        await first.close()

        async def accepted() -> bool:
            try:
                await connect_as(clients, stack, "alice", path)
            except (AssertionError, socketio.exceptions.ConnectionError):
                return False
            return True

        await eventually(accepted, PROMPT, "a new connection of alice after one closed", interval=0.2)
