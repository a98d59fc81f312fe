"""Slow consumers on both transports.

A client that stops reading must not delay the others nor grow the server's
memory: it is conflated while briefly behind and, once behind for longer than
SLOW_CLIENT_TIMEOUT, sent `slow_client` and disconnected. The slow clients here
are plain sockets that do the WebSocket handshake themselves, so that "not
reading" really leaves the bytes in the kernel.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import psutil
import pytest
import redis.asyncio as aioredis

from tests.support.raw_ws import SLOW_RCVBUF, RawWebSocket, open_socketio
from tests.support.servers import ServerFactory, ServerProcess
from tests.support.waiting import PROMPT, eventually, now_ms

pytestmark = pytest.mark.slow

SLOW_CLIENT_TIMEOUT = 2.0
OUTBOUND_BUFFER_BYTES = 32768
SYMBOLS = ["AAPL", "MSFT", "NVDA", "TSLA"]
PADDING = "p" * 1000


async def raw_live_price(server: ServerProcess, symbols: list[str]) -> RawWebSocket:
    """A /live-price client that subscribed to `symbols` (and saw the reply)."""
    ws = await RawWebSocket.open(server.host, server.port, "/live-price")
    await ws.send_text(json.dumps({"action": "subscribe", "symbols": symbols}))
    while True:
        message = json.loads(await ws.next_text())
        if message.get("type") == "subscribed":
            return ws


async def raw_socketio(server: ServerProcess, symbols: list[str]) -> RawWebSocket:
    """A Socket.IO client straight on the websocket transport (Engine.IO v4),
    subscribed to `symbols` with an ack, which it waited for."""
    ws, _ = await open_socketio(server.host, server.port, rcvbuf=SLOW_RCVBUF)
    await ws.send_text("421" + json.dumps(["subscribe", symbols]))
    while True:
        text = await ws.next_text()
        if text.startswith("431"):
            ack = json.loads(text[3:])[0]
            assert ack.get("ok") is True, ack
            return ws
        if text == "2":  # Engine.IO ping
            await ws.send_text("3")


def server_has_connection(pid: int, server_port: int, client_port: int) -> bool:
    """Whether the server process still has an open connection to that client port."""
    for conn in psutil.Process(pid).net_connections(kind="tcp"):
        if (
            conn.laddr
            and conn.laddr.port == server_port
            and conn.raddr
            and conn.raddr.port == client_port
            and conn.status == psutil.CONN_ESTABLISHED
        ):
            return True
    return False


# -- load: steady publishing and fast clients ------------------------------------------


@dataclass
class Load:
    """Publishes `rate` updates/s round-robin over `symbols` straight into Redis."""

    redis_url: str
    rate: int
    symbols: list[str] = field(default_factory=lambda: list(SYMBOLS))
    published: dict[str, list[int]] = field(default_factory=dict)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.published = {s: [] for s in self.symbols}

    async def run(self) -> None:
        redis = aioredis.from_url(self.redis_url, socket_timeout=5)
        tick = 0.01
        per_tick = max(1, round(self.rate * tick))
        n = 0
        started = time.monotonic()
        try:
            while not self.stop.is_set():
                pipe = redis.pipeline(transaction=False)
                for _ in range(per_tick):
                    symbol = self.symbols[n % len(self.symbols)]
                    n += 1
                    self.published[symbol].append(n)
                    body = json.dumps(
                        {"symbol": symbol, "price": 100 + n / 1000, "timestamp": now_ms(), "n": n, "pad": PADDING}
                    )
                    pipe.set(f"stock:{symbol}", body)
                    pipe.publish(f"stock:{symbol}", body)
                await pipe.execute()
                # Paced against the start, so a slow round does not lower the rate.
                delay = started + (n / per_tick) * tick - time.monotonic()
                if delay > 0:
                    try:
                        await asyncio.wait_for(self.stop.wait(), delay)
                    except asyncio.TimeoutError:
                        pass
        finally:
            await redis.aclose()

    @property
    def last(self) -> dict[str, int]:
        return {s: ns[-1] for s, ns in self.published.items() if ns}


def track_latency(client: Any) -> list[float]:
    """Record publish-to-receive latency (ms) of every update the client gets."""
    latencies: list[float] = []
    put = client.updates.put

    def put_and_measure(update: Any) -> None:
        if isinstance(update, dict) and isinstance(update.get("timestamp"), int):
            latencies.append(time.time() * 1000 - update["timestamp"])
        put(update)

    client.updates.put = put_and_measure
    return latencies


def check_stream(name: str, updates: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Per symbol, `n` strictly increasing: no duplicates, no reordering."""
    by_symbol: dict[str, list[int]] = {}
    for update in updates:
        by_symbol.setdefault(update["symbol"], []).append(update["n"])
    for symbol, ns in by_symbol.items():
        assert all(a < b for a, b in zip(ns, ns[1:])), f"{name}: {symbol} updates repeated or out of order: {ns[:50]}"
    return by_symbol


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) >= 2 else (values or [0.0])[0]


@pytest.fixture
def slow_server(servers: ServerFactory, redis_url: str) -> ServerProcess:
    return servers.start_sync(
        {
            "OUTBOUND_BUFFER_BYTES": str(OUTBOUND_BUFFER_BYTES),
            "SLOW_CLIENT_TIMEOUT": str(SLOW_CLIENT_TIMEOUT),
        },
        redis_url=redis_url,
    )


# -- the tests ----------------------------------------------------------------------------


async def test_client_that_stops_reading_is_dropped_and_others_keep_up(slow_server, redis_url, clients):
    server = slow_server
    fast = [await clients.ws(server.url) for _ in range(2)]
    fast += [await clients.sio(server.url, transports=["websocket"]) for _ in range(2)]
    for client in fast:
        reply = await client.subscribe(*SYMBOLS) if client.kind == "ws" else await client.subscribe(SYMBOLS)
        assert reply.get("ok") is True, reply
    latencies = [track_latency(client) for client in fast]
    slow = {"live-price": await raw_live_price(server, SYMBOLS), "socket.io": await raw_socketio(server, SYMBOLS)}
    process = psutil.Process(server.pid)
    rss_before = process.memory_info().rss
    rss_peak = rss_before

    load = Load(redis_url, rate=300)
    publishing = asyncio.create_task(load.run())
    started = time.monotonic()
    closed_after: dict[str, float] = {}
    try:
        # Watch until both slow clients are cut (or well past when they should be).
        deadline = started + SLOW_CLIENT_TIMEOUT + 6
        while time.monotonic() < deadline and len(closed_after) < len(slow):
            await asyncio.sleep(0.1)
            rss_peak = max(rss_peak, process.memory_info().rss)
            for name, ws in slow.items():
                if name not in closed_after and not server_has_connection(server.pid, server.port, ws.local_port):
                    closed_after[name] = time.monotonic() - started
        # Keep the load on a little longer, for the fast clients' latency and the RSS.
        await asyncio.sleep(max(0.0, started + 5 - time.monotonic()))
        rss_peak = max(rss_peak, process.memory_info().rss)
    finally:
        load.stop.set()
        await publishing
    assert server.running, server.output_tail()

    # The fast clients got the last update of every symbol, in order, promptly.
    for client, lat in zip(fast, latencies):
        await client.updates.wait_for(
            lambda items: (
                all(ns and ns[-1] == load.last[s] for s, ns in check_stream(client.name, items).items())
                and len(check_stream(client.name, items)) == len(SYMBOLS)
            ),
            timeout=PROMPT,
            what="the last update of every symbol",
        )
        assert p99(lat) < 200, (
            f"{client.name}: p99 publish-to-receive latency {p99(lat):.0f} ms "
            f"(max {max(lat):.0f} ms, {len(lat)} updates)"
        )
    sent = sum(len(ns) for ns in load.published.values())
    assert sent >= 1000, f"only {sent} updates published: the load was too light to mean anything"

    # Memory stays bounded while they are attached.
    growth_mb = (rss_peak - rss_before) / 2**20
    assert growth_mb < 50, f"server RSS grew by {growth_mb:.1f} MB with slow clients attached"
    # The slow ones were cut within SLOW_CLIENT_TIMEOUT and a few seconds.
    for name in slow:
        assert name in closed_after, (
            f"{name} client that stopped reading still connected "
            f"{SLOW_CLIENT_TIMEOUT + 6:.0f}s after the load started (SLOW_CLIENT_TIMEOUT="
            f"{SLOW_CLIENT_TIMEOUT}); server log: {server.output_tail(1500)}"
        )
    for ws in slow.values():
        ws.close()


@pytest.mark.parametrize("transport", ["live-price", "socket.io"])
async def test_stalled_client_is_told_slow_client(slow_server, redis_url, transport):
    """A client that stops reading for longer than SLOW_CLIENT_TIMEOUT, then reads
    again, finds `slow_client` as the last message before the close."""
    opener = raw_live_price if transport == "live-price" else raw_socketio
    ws = await opener(slow_server, SYMBOLS)
    load = Load(redis_url, rate=300)
    publishing = asyncio.create_task(load.run())
    try:
        await asyncio.sleep(SLOW_CLIENT_TIMEOUT + 1.0)
        frames = await ws.drain(timeout=PROMPT + SLOW_CLIENT_TIMEOUT)
    finally:
        load.stop.set()
        await publishing
        ws.close()
    texts = [payload.decode() for opcode, payload in frames if opcode == 0x1]
    errors = [t for t in texts if "slow_client" in t]
    assert errors, (
        f"no slow_client error among {len(texts)} frames read after the stall "
        f"(eof={ws.eof}, error={ws.error}); last: {texts[-3:]!r}"
    )
    error_text = errors[-1]
    if transport == "live-price":
        error = json.loads(error_text)
        assert error.get("type") == "error", error
    else:
        assert error_text.startswith("42"), error_text
        event, error = json.loads(error_text[2:])
        assert event == "error", error_text
    assert error.get("code") == "slow_client" and isinstance(error.get("message"), str), error
    # It is the last thing sent, and then the server closes the connection.
    after = texts[texts.index(error_text) + 1 :]
    assert not [t for t in after if t.startswith("{") or t.startswith("42")], after[:3]
    assert ws.eof, "the connection was not closed after slow_client"


async def test_briefly_behind_client_is_conflated_not_dropped(servers, redis_url):
    """Behind for less than SLOW_CLIENT_TIMEOUT: older updates of a symbol are
    replaced by newer ones (never repeated or reordered), and the latest price of
    every symbol arrives; the client stays connected."""
    server = servers.start_sync({"OUTBOUND_BUFFER_BYTES": "16384", "SLOW_CLIENT_TIMEOUT": "30"}, redis_url=redis_url)
    ws = await raw_live_price(server, SYMBOLS)
    load = Load(redis_url, rate=400)
    publishing = asyncio.create_task(load.run())
    try:
        await asyncio.sleep(1.5)  # not reading: the server's buffer for it fills up
    finally:
        load.stop.set()
        await publishing
    received: list[dict[str, Any]] = []

    def caught_up() -> bool:
        for opcode, payload in ws.frames():
            if opcode == 0x1:
                received.append(json.loads(payload))
        got = check_stream("conflated client", [u for u in received if "type" not in u])
        return all(got.get(s, [None])[-1] == n for s, n in load.last.items())

    async def read_and_check() -> bool:
        await ws.read_some(0.1)
        return caught_up()

    await eventually(read_and_check, PROMPT * 2, "the latest update of every symbol")
    assert not ws.eof, "a briefly slow client was disconnected"
    updates = [u for u in received if "type" not in u]
    sent = sum(len(ns) for ns in load.published.values())
    assert not [u for u in received if u.get("type") == "error"], received[-3:]
    assert len(updates) < sent, (
        f"got all {sent} updates: the client was never behind, so nothing was conflated "
        f"(the test did not provoke what it is about)"
    )
    ws.close()


async def slow_disconnects(server: ServerProcess) -> float:
    """The server's count of clients disconnected as too slow, from /metrics."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PROMPT)) as http:
        async with http.get(server.url + "/metrics") as resp:
            text = await resp.text()
    for line in text.splitlines():
        if line.startswith("stockstream_delivery_slow_disconnects_total "):
            return float(line.split()[1])
    raise AssertionError("no stockstream_delivery_slow_disconnects_total in /metrics")


@pytest.mark.parametrize("transport", ["live-price", "socket.io"])
async def test_one_fast_symbol_drops_a_stalled_client_once_and_in_time(servers, redis_url, clients, transport):
    """At 500 updates/s of about 1 KB on one symbol, with the default outbound
    budget (more than the server's socket write buffer takes before it pauses),
    a client that stops reading is closed within SLOW_CLIENT_TIMEOUT and a few
    seconds on either transport, counted once as a slow disconnect, while the
    server's memory stays flat and the fast clients of the same symbol keep
    getting every update promptly."""
    symbol = ["FAST"]
    server = servers.start_sync({"SLOW_CLIENT_TIMEOUT": str(SLOW_CLIENT_TIMEOUT)}, redis_url=redis_url)
    fast = [await clients.ws(server.url), await clients.sio(server.url, transports=["websocket"])]
    for client in fast:
        reply = await client.subscribe(*symbol) if client.kind == "ws" else await client.subscribe(symbol)
        assert reply.get("ok") is True, reply
    latencies = [track_latency(client) for client in fast]
    opener = raw_live_price if transport == "live-price" else raw_socketio
    slow = await opener(server, symbol)
    process = psutil.Process(server.pid)
    rss_before = rss_peak = process.memory_info().rss

    load = Load(redis_url, rate=500, symbols=symbol)
    publishing = asyncio.create_task(load.run())
    started = time.monotonic()
    closed_after: float | None = None
    try:
        deadline = started + SLOW_CLIENT_TIMEOUT + 6
        while time.monotonic() < deadline and closed_after is None:
            await asyncio.sleep(0.1)
            rss_peak = max(rss_peak, process.memory_info().rss)
            if not server_has_connection(server.pid, server.port, slow.local_port):
                closed_after = time.monotonic() - started
        # The load goes on after the close: nothing more may be counted for it.
        await asyncio.sleep(max(1.5, started + 5 - time.monotonic()))
        rss_peak = max(rss_peak, process.memory_info().rss)
    finally:
        load.stop.set()
        await publishing
        slow.close()
    assert server.running, server.output_tail()
    assert closed_after is not None, (
        f"{transport} client that stopped reading still connected {SLOW_CLIENT_TIMEOUT + 6:.0f}s after the "
        f"load started (SLOW_CLIENT_TIMEOUT={SLOW_CLIENT_TIMEOUT}); server log: {server.output_tail(1500)}"
    )
    assert await slow_disconnects(server) == 1, "one slow client must be counted once"
    sent = len(load.published["FAST"])
    assert sent >= 1500, f"only {sent} updates published: the load was too light to mean anything"
    growth_mb = (rss_peak - rss_before) / 2**20
    assert growth_mb < 50, f"server RSS grew by {growth_mb:.1f} MB with a slow client attached"
    for client, lat in zip(fast, latencies):
        await client.updates.wait_for(
            lambda items: check_stream(client.name, items).get("FAST", [None])[-1] == load.last["FAST"],
            timeout=PROMPT,
            what="the last update",
        )
        assert len(client.updates_for("FAST")) == sent, f"{client.name} missed updates"
        assert p99(lat) < 250, (
            f"{client.name}: p99 publish-to-receive latency {p99(lat):.0f} ms "
            f"(max {max(lat):.0f} ms, {len(lat)} updates)"
        )


class RefusingSink:
    """A connection whose socket never takes anything (a client that stopped reading)."""

    def __init__(self) -> None:
        self.final: list[Any] = []

    def send(self, items: Any, limit: int | None) -> bool:
        if limit is None:  # the last words before a disconnect go out past the limit
            self.final.extend(items)
            return True
        return False

    def backlog(self) -> int:
        return 1 << 20


async def test_a_slow_client_is_given_up_once_while_its_disconnect_is_under_way() -> None:
    """However long closing a slow client takes, it is counted as one slow
    disconnect, told once, and updates arriving meanwhile are dropped, not queued."""
    from stockstream.outbox import FlushScheduler, Outbox
    from stockstream.updates import parse_update

    scheduler = FlushScheduler()
    told: list[None] = []
    sink = RefusingSink()
    outbox = Outbox(sink, scheduler, limit=1024, slow_after=0.0, on_slow=lambda: told.append(None))
    try:
        for n in range(200):
            outbox.push_update(parse_update(json.dumps({"symbol": "AAPL", "price": 1 + n, "timestamp": n})))
            scheduler.flush_now()
            await asyncio.sleep(0)
        assert scheduler.stats.slow_disconnects == 1 and len(told) == 1, (scheduler.stats.slow_disconnects, told)
        assert outbox.pending() <= 1, "updates kept queuing for a client being disconnected"
        outbox.flush_final('{"type": "error", "code": "slow_client"}', drop_pending=True)
        assert sink.final == ['{"type": "error", "code": "slow_client"}']
    finally:
        scheduler.close()
