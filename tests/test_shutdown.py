"""Graceful shutdown (server_shutdown, /readyz) and the operator's logs.

A real process gets a real signal: /readyz turns 503 while clients are told
and drained, every client receives `server_shutdown`, and the process exits 0
within SHUTDOWN_TIMEOUT even when a client never answers the closing handshake.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from typing import Any

import aiohttp
import pytest
import socketio

from tests.support.inprocess import running_app
from tests.support.waiting import PROMPT, eventually

SHUTDOWN_TIMEOUT = 4.0
# The exit may come this much later than SHUTDOWN_TIMEOUT on a loaded machine.
EXIT_SLACK = 1.5


async def readyz(http: aiohttp.ClientSession, url: str) -> tuple[int, Any] | None:
    try:
        async with http.get(url + "/readyz") as resp:
            return resp.status, await resp.json()
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
        return None  # not listening any more


async def stalled_polling_client(http: aiohttp.ClientSession, url: str, symbols: list[str]) -> str:
    """An Engine.IO long-polling client, subscribed, that never polls again; returns its sid."""
    endpoint = url + "/socket.io/?EIO=4&transport=polling"
    async with http.get(endpoint) as resp:
        handshake = await resp.text()
    sid = json.loads(handshake[handshake.index("{") :])["sid"]
    endpoint += "&sid=" + sid
    async with http.post(endpoint, data="40") as resp:
        assert resp.status == 200
    async with http.get(endpoint) as resp:
        assert (await resp.text()).startswith("40"), "namespace not joined"
    async with http.post(endpoint, data="42" + json.dumps(["subscribe", symbols])) as resp:
        assert resp.status == 200
    return sid


def log_entries(text: str) -> list[dict[str, Any]]:
    """Every line of a LOG_FORMAT=json log, parsed; a line that is not JSON fails the test."""
    entries = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            entries.append(json.loads(line))
        except ValueError:
            pytest.fail(f"log line is not JSON: {line!r}")
    return entries


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_drains_clients_and_exits_zero_in_time(signum, servers, redis_url, clients) -> None:
    env = {
        "SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT),
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "info",
        "SIMULATE_SYMBOLS": "AAPL,MSFT",
        "SIMULATE_RATE": "20",
    }
    server = await servers.start(env, redis_url=redis_url, args=["--simulate"])
    sio = await clients.sio(server.url)
    assert (await sio.subscribe(["AAPL", "MSFT"]))["ok"] is True
    ws = await clients.ws(server.url)
    assert (await ws.subscribe("AAPL"))["type"] == "subscribed"
    await sio.expect_update(lambda u: u["symbol"] == "MSFT")
    await ws.expect_update()

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        # A long-polling client that stopped polling: what is queued for it
        # never leaves, so only the shutdown's time bound ends the drain.
        await stalled_polling_client(http, server.url, ["AAPL", "MSFT"])
        assert (await readyz(http, server.url))[0] == 200

        began = time.monotonic()
        server.signal(signum)
        seen: list[Any] = []

        async def not_ready() -> Any:
            seen.append(await readyz(http, server.url))
            assert seen[-1] is not None, f"stopped listening before /readyz said 503: {seen[-3:]}"
            return seen[-1][0] == 503 and seen[-1]

        status = await eventually(not_ready, 3.0, "/readyz to answer 503 while draining")
        assert status[1]["status"] == "unavailable" and "shutting down" in status[1]["reason"], status

        notice = await sio.expect_error(lambda e: e.get("code") == "server_shutdown")
        assert notice["message"]
        reply = await ws.next_reply(lambda r: r.get("type") == "error")
        assert reply["code"] == "server_shutdown" and reply["message"], reply
        await sio.wait_disconnected()
        await ws.wait_closed()

        code = await asyncio.to_thread(server.proc.wait, SHUTDOWN_TIMEOUT + EXIT_SLACK + 5)
        took = time.monotonic() - began
    assert code == 0, server.output_tail()
    assert took <= SHUTDOWN_TIMEOUT + EXIT_SLACK, f"exit took {took:.1f}s"

    entries = log_entries(server.output())
    messages = [e["message"] for e in entries]
    assert all({"time", "level", "logger", "message"} <= set(e) for e in entries)
    # One line per connection event, for both transports.
    assert sum("socket.io client connected" in m for m in messages) == 2, messages
    assert sum("socket.io client disconnected" in m for m in messages) == 2, messages
    assert sum("live-price client connected" in m for m in messages) == 1, messages
    assert sum("live-price client disconnected" in m for m in messages) == 1, messages
    assert any(f"{signum.name} received" in m for m in messages), messages
    assert messages[-1] == "stopped", messages
    # Hundreds of updates went out; none of them is logged.
    assert len(entries) < 25, messages
    assert not [e for e in entries if e["level"] in ("error", "critical") or "exception" in e], entries


def redis_clients(redis_server) -> int:
    client = redis_server.client()
    try:
        return len(client.client_list())
    finally:
        client.close()


async def test_stop_closes_every_redis_connection(redis_server, redis_url, clients) -> None:
    before = redis_clients(redis_server)
    async with running_app(redis_url) as (app, port):
        # The first Socket.IO client starts python-socketio's own Redis listener too.
        sio = await clients.sio(f"http://127.0.0.1:{port}")
        assert (await sio.subscribe("AAPL"))["ok"] is True
        ws = await clients.ws(f"http://127.0.0.1:{port}")
        assert (await ws.subscribe("AAPL"))["ok"] is True
        assert redis_clients(redis_server) > before
    await eventually(
        lambda: redis_clients(redis_server) == before,
        5.0,
        f"the server's Redis connections to close (back to {before})",
    )


class ThreadedSioClient:
    """python-socketio's synchronous Client with its defaults, recording what it sees."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sio = socketio.Client()
        self.timeline: list[tuple] = []
        self.sio.on("connect", lambda: self.timeline.append(("connect",)))
        self.sio.on("disconnect", lambda reason=None: self.timeline.append(("disconnect", reason)))
        self.sio.on("error", lambda error: self.timeline.append(("event", "error", [error])))

    async def connect(self) -> None:
        await asyncio.to_thread(self.sio.connect, self.url, wait_timeout=10)

    async def close(self) -> None:
        # Without waiting for the pending long-poll, which the server does not
        # answer when a client says goodbye (it ends when the server stops).
        await asyncio.wait_for(asyncio.to_thread(self.sio.eio.disconnect, abort=True), 10)


def shutdown_then_reconnect(timeline: list[tuple]) -> bool:
    """server_shutdown, then the disconnect, then a connection of its own again."""
    kinds = [entry if entry[0] != "event" else ("error", entry[2][0].get("code")) for entry in timeline]
    try:
        told = kinds.index(("error", "server_shutdown"))
    except ValueError:
        return False
    gone = next((i for i, k in enumerate(kinds) if k[0] == "disconnect"), None)
    return gone is not None and told < gone and ("connect",) in kinds[gone:]


@pytest.mark.slow
async def test_stock_clients_reconnect_by_themselves_after_a_graceful_shutdown(
    servers, redis_url, clients, node_harness
) -> None:
    """After SIGTERM every Socket.IO client is told `server_shutdown`, then its
    connection closes in a way that makes the stock clients, with their default
    reconnection, come back by themselves once an instance serves the address
    again: python-socketio's AsyncClient and Client and socket.io-client, over
    websocket and long-polling. The new connection works (subscribe is acked)."""
    env = {"SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT)}
    first = await servers.start(env, redis_url=redis_url)
    url = first.url
    async_clients = {
        "AsyncClient (defaults: polling, then websocket)": await clients.sio(url, reconnection=True),
        "AsyncClient websocket": await clients.sio(url, reconnection=True, transports=["websocket"]),
        "AsyncClient polling": await clients.sio(url, reconnection=True, transports=["polling"]),
        "socket.io-client (defaults)": await clients.sio(url, kind="node", options={"reconnection": True}),
        "socket.io-client polling": await clients.sio(
            url, kind="node", transports=["polling"], options={"reconnection": True}
        ),
    }
    threaded = ThreadedSioClient(url)
    await threaded.connect()
    try:
        for client in async_clients.values():
            assert (await client.subscribe(["AAPL"]))["ok"] is True
        await eventually(
            lambda: async_clients["AsyncClient (defaults: polling, then websocket)"].transport == "websocket",
            what="the default AsyncClient to upgrade",
        )

        first.signal(signal.SIGTERM)
        for name, client in async_clients.items():
            await client.wait_disconnected(SHUTDOWN_TIMEOUT + PROMPT)
        code = await asyncio.to_thread(first.proc.wait, SHUTDOWN_TIMEOUT + EXIT_SLACK + 5)
        assert code == 0, first.output_tail()

        again = servers.launch(env, redis_url=redis_url, port=first.port)
        await again.wait_ready()
        # python-socketio waits up to 5 s between attempts by default.
        for name, client in async_clients.items():
            await client.timeline.wait_for(
                shutdown_then_reconnect, 20.0, f"{name}: server_shutdown, the disconnect, then a reconnect"
            )
            assert (await client.subscribe(["AAPL"]))["ok"] is True, name
        await eventually(
            lambda: shutdown_then_reconnect(threaded.timeline),
            20.0,
            f"Client (threaded, defaults): server_shutdown, the disconnect, then a reconnect; saw {threaded.timeline}",
        )
    finally:
        await threaded.close()
