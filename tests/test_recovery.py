"""Socket.IO connection state recovery with a stock socket.io-client: a
connection cut by the network, the reconnect sent to another instance."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator

import pytest
import redis.asyncio

from stockstream.broker.keys import KeyLayout

from tests.support.inprocess import atomic_publisher, inprocess_stack
from tests.support.node import NodeSioClient
from tests.support.proxy import switch_proxy
from tests.support.publishing import RawRedisPublisher
from tests.support.waiting import eventually, period_with_room

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("node_harness")]

SYMBOLS = ["AAPL", "MSFT"]
# Heartbeats short enough that a long-polling client's drop is noticed (and
# its session kept) before it comes back.
FAST_PINGS = {"PING_INTERVAL": "1", "PING_TIMEOUT": "1"}
HOUR_MS = 3_600_000
TRANSPORTS = {"websocket": (["websocket"], 200), "polling": (["polling"], 3500)}


def reconnecting(transport: str) -> dict[str, Any]:
    transports, delay = TRANSPORTS[transport]
    return {
        "transports": transports,
        "reconnection": True,
        "reconnectionDelay": delay,
        "reconnectionDelayMax": delay,
        "randomizationFactor": 0,
    }


@contextlib.asynccontextmanager
async def cut_away_client(
    servers: Any, redis_url: str, env: dict[str, str], transport: str
) -> AsyncIterator[tuple[NodeSioClient, Any, Any, Any]]:
    """Two instances on one Redis and a connected, reconnecting stock
    socket.io-client reaching the first through a proxy that can cut it and
    lead it elsewhere: (client, proxy, publish, the second instance)."""
    first, second = await servers.start_many(2, env, redis_url=redis_url)
    async with switch_proxy(first.port) as proxy, atomic_publisher(redis_url) as publish:
        client = NodeSioClient(proxy.url, options=reconnecting(transport))
        await client.connect()
        try:
            yield client, proxy, publish, second
        finally:
            await client.close()


def connects(client: NodeSioClient) -> list[dict]:
    return [line for line in client.node.lines.items if line.get("kind") == "connect"]


def updates(client: NodeSioClient) -> list[list[Any]]:
    """Every stockUpdate's arguments, in arrival order."""
    return [
        entry[2] for entry in client.timeline.items if entry[0] == "event" and entry[2:] and entry[1] == "stockUpdate"
    ]


def ns_of(client: NodeSioClient, symbol: str) -> list[int]:
    return [args[0]["n"] for args in updates(client) if args[0].get("symbol") == symbol]


async def publish_round(publish, symbols: list[str], start: int, count: int) -> None:
    for n in range(start, start + count):
        for symbol in symbols:
            await publish(symbol, 100 + n / 100, n=n)


async def wait_for_n(client: NodeSioClient, symbol: str, n: int, timeout: float = 15.0) -> None:
    await eventually(lambda: n in ns_of(client, symbol), timeout, f"{client.name} to get {symbol} n={n}")


async def subscribe_then_cut(
    client: NodeSioClient, proxy: Any, publish: Any, symbols: list[str], count: int, next_port: int
) -> None:
    """Subscribe, receive updates 1..count of each symbol, then lose the
    connection: the proxy now leads to `next_port` and refuses until told."""
    ack = await client.subscribe(symbols)
    assert ack.get("ok") is True, ack
    await publish_round(publish, symbols, 1, count)
    for symbol in symbols:
        await wait_for_n(client, symbol, count)
    proxy.target = next_port
    proxy.refusing = True
    proxy.cut()
    await client.wait_disconnected()


async def connected_again(client: NodeSioClient, count: int) -> dict:
    await eventually(lambda: len(connects(client)) >= count, 20.0, f"{client.name} to reconnect")
    return connects(client)[count - 1]


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
async def test_recovers_on_another_instance_with_every_missed_update_once_in_order(servers, redis_url, transport):
    """A client whose connection is cut reconnects to another instance and gets
    socket.recovered === true, the same pid, its subscriptions back and every
    update published meanwhile exactly once, in order, before live ones."""
    env = {"RECOVERY_WINDOW": "30", **FAST_PINGS}
    async with cut_away_client(servers, redis_url, env, transport) as (client, proxy, publish, second):
        pid = connects(client)[0]["pid"]
        assert isinstance(pid, str) and pid, connects(client)
        await subscribe_then_cut(client, proxy, publish, SYMBOLS, 10, second.port)
        await publish_round(publish, SYMBOLS, 11, 20)  # missed while away
        proxy.refusing = False
        again = await connected_again(client, 2)
        assert again["recovered"] is True and again["pid"] == pid, again
        await publish_round(publish, SYMBOLS, 31, 10)  # live again
        await wait_for_n(client, "MSFT", 40)
        for symbol in SYMBOLS:
            assert ns_of(client, symbol) == list(range(1, 41)), (symbol, ns_of(client, symbol))
        assert all(len(args) == 2 and isinstance(args[1], str) for args in updates(client)), (
            "each update carries its offset as last argument"
        )


async def test_fresh_session_after_the_window(servers, redis_url):
    """Back after RECOVERY_WINDOW, a client gets a fresh session: recovered is
    false, a new pid, and none of its old subscriptions."""
    env = {"RECOVERY_WINDOW": "1", **FAST_PINGS}
    async with cut_away_client(servers, redis_url, env, "websocket") as (client, proxy, publish, second):
        pid = connects(client)[0]["pid"]
        await subscribe_then_cut(client, proxy, publish, ["AAPL"], 3, second.port)
        await asyncio.sleep(2.5)  # the window (1 s) passes while the network is down
        proxy.refusing = False
        again = await connected_again(client, 2)
        assert again["recovered"] is False and again["pid"] != pid, again
        assert (await client.subscribe(["MSFT"])).get("ok") is True
        await publish("AAPL", 200.0, n=4)
        await publish("MSFT", 200.0, n=1)
        await wait_for_n(client, "MSFT", 1)
        assert ns_of(client, "AAPL") == [1, 2, 3], "the old subscription must be gone"


async def test_fresh_session_when_history_no_longer_reaches_back(servers, redis_url):
    """When more was published while away than history keeps, the client
    gets a fresh session (recovered false) rather than a gap."""
    env = {"RECOVERY_WINDOW": "30", **FAST_PINGS}
    async with cut_away_client(servers, redis_url, env, "websocket") as (client, proxy, publish, second):
        await subscribe_then_cut(client, proxy, publish, ["AAPL"], 3, second.port)
        await publish_round(publish, ["AAPL"], 4, 50)
        store = redis.asyncio.Redis.from_url(redis_url)
        try:  # history keeps only the last 5 of those
            assert await store.xtrim(KeyLayout().history("AAPL"), maxlen=5, approximate=False) >= 45
        finally:
            await store.aclose()
        proxy.refusing = False
        again = await connected_again(client, 2)
        assert again["recovered"] is False, again


async def test_recovery_off_sends_no_pid_and_one_argument_per_event(servers, redis_url):
    """With RECOVERY_WINDOW=0 (the default) the CONNECT reply has no pid and
    each update arrives as the event's only argument."""
    server = await servers.start(redis_url=redis_url)
    async with atomic_publisher(redis_url) as publish:
        client = NodeSioClient(server.url, options={"transports": ["websocket"]})
        await client.connect()
        try:
            assert connects(client)[0]["pid"] is None, connects(client)
            assert (await client.subscribe(["AAPL"])).get("ok") is True
            await publish_round(publish, ["AAPL"], 1, 3)
            await wait_for_n(client, "AAPL", 3)
            assert [len(args) for args in updates(client)] == [1, 1, 1], updates(client)
        finally:
            await client.close()


# The reported case: 200 updates/s on each of two symbols, and a client that
# reconnects 100-200 ms after its connection was cut.
STREAM_RATE = 200.0
FAST_RECONNECT = {"reconnection": True, "reconnectionDelay": 150, "reconnectionDelayMax": 150, "randomizationFactor": 0}


@contextlib.asynccontextmanager
async def publisher_of(kind: str, redis_url: str, cluster: bool = False) -> AsyncIterator[Any]:
    """`raw`: the original design's SET + PUBLISH (SPUBLISH on a cluster)
    without seq; `ours`: the atomic publish."""
    if kind == "ours":
        async with atomic_publisher(redis_url, redis_cluster=cluster) as publish:
            yield publish
        return
    raw = RawRedisPublisher(redis_url, cluster)
    try:
        yield raw.publish
    finally:
        await raw.close()


class Stream:
    """Publishes n = 1, 2, 3, ... on every symbol, `rate` per second each, until stopped."""

    def __init__(self, publish: Any, symbols: list[str], rate: float) -> None:
        self.publish = publish
        self.symbols = symbols
        self.rate = rate
        self.last = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        while not self._stop.is_set():
            n = self.last + 1
            for symbol in self.symbols:
                await self.publish(symbol, 100 + n / 100, n=n)
            self.last = n
            await asyncio.sleep(max(0.0, started + n / self.rate - loop.time()))

    async def stop(self) -> int:
        self._stop.set()
        assert self._task is not None
        await asyncio.wait_for(self._task, 10)
        return self.last


async def cut_under_a_stream(proxy: Any, publish: Any, next_port: int, transport: str) -> tuple[bool, dict]:
    """Subscribe a node socket.io-client through `proxy` while `publish`
    streams, cut its connection (the reconnect, 150 ms later, goes to
    `next_port`), and let the stream run on a little. Returns whether the
    client then holds exactly the published sequence of each symbol, and its
    second connect line; a failure message names the gaps."""
    client = NodeSioClient(proxy.url, options={"transports": [transport], **FAST_RECONNECT})
    await client.connect()
    stream = Stream(publish, SYMBOLS, STREAM_RATE)
    try:
        ack = await client.subscribe(SYMBOLS)
        assert ack.get("ok") is True, ack
        stream.start()
        for symbol in SYMBOLS:
            await wait_for_n(client, symbol, 100)
        proxy.target = next_port
        proxy.cut()
        again = await connected_again(client, 2)
        if not again["recovered"]:
            return False, again
        await eventually(
            lambda: all(ns_of(client, s) and ns_of(client, s)[-1] > stream.last - 50 for s in SYMBOLS),
            20.0,
            "live updates after the recovery",
        )
        last = await stream.stop()
        for symbol in SYMBOLS:
            await wait_for_n(client, symbol, last)
            assert ns_of(client, symbol) == list(range(1, last + 1)), (symbol, _gaps(ns_of(client, symbol)))
        return True, again
    finally:
        if stream._task is not None and not stream._task.done():
            await stream.stop()
        await client.close()


@pytest.mark.parametrize("transport", ["websocket", "polling"])
@pytest.mark.parametrize("publisher", ["raw", "ours"])
async def test_fast_reconnect_under_a_steady_stream_recovers_every_update_once_in_order(
    servers, redis_url, transport, publisher
):
    """Under 200 updates/s per symbol, a stock socket.io-client cut by the
    network and back on another instance 150 ms later is recovered
    (socket.recovered === true) and ends with exactly the published sequence of
    each symbol, with either publisher: the original SET + PUBLISH without
    seq, or the atomic one."""
    env = {"RECOVERY_WINDOW": "120"}
    first, second = await servers.start_many(2, env, redis_url=redis_url)
    async with switch_proxy(first.port) as proxy, publisher_of(publisher, redis_url) as publish:
        recovered, again = await cut_under_a_stream(proxy, publish, second.port, transport)
        assert recovered, again


async def test_embedded_backend_recovers_a_fast_reconnect():
    """With the embedded backend (one instance), a client cut under a steady
    stream and back 150 ms later is recovered with every update once, in order."""
    async with inprocess_stack("memory", recovery_window=120.0) as stack, switch_proxy(stack.port) as proxy:
        recovered, again = await cut_under_a_stream(proxy, stack.publish, stack.port, "websocket")
        assert recovered, again


@pytest.mark.parametrize("publisher", ["raw", "ours"])
async def test_on_a_cluster_recovery_needs_history(servers, cluster_url, publisher):
    """On a Redis Cluster, updates of stockstream's publisher are recovered
    once and in order on another instance; those of a third party's SET +
    SPUBLISH are not recorded into history (sharded messages), so its client
    gets a fresh session (recovered false) rather than a gap."""
    env = {"RECOVERY_WINDOW": "120", "REDIS_CLUSTER": "true"}
    first, second = await servers.start_many(2, env, redis_url=cluster_url)
    async with switch_proxy(first.port) as proxy, publisher_of(publisher, cluster_url, cluster=True) as publish:
        recovered, again = await cut_under_a_stream(proxy, publish, second.port, "websocket")
        assert recovered is (publisher == "ours"), again


def _gaps(ns: list[int]) -> str:
    """Where a received sequence departs from 1, 2, 3, ...: short enough for a failure message."""
    problems = [f"{a}->{b}" for a, b in zip(ns, ns[1:]) if b != a + 1]
    return f"{len(ns)} received, first {ns[:3]}, breaks {problems[:10]}"


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_reconnect_before_the_old_instance_noticed_the_drop_still_recovers(servers, redis_url, transport):
    """When only the client's side of the connection is cut, the old instance
    still holds the connection (unsaved) when the reconnect reaches the other
    instance; that instance has it dropped and saved, waits for the save, and
    the client is recovered with every update once, in order (here with the
    original SET + PUBLISH publisher, and heartbeats far longer than the test)."""
    env = {"RECOVERY_WINDOW": "120", "PING_INTERVAL": "25", "PING_TIMEOUT": "20"}
    first, second = await servers.start_many(2, env, redis_url=redis_url)
    async with switch_proxy(first.port) as proxy, publisher_of("raw", redis_url) as publish:
        client = NodeSioClient(proxy.url, options={"transports": [transport], **FAST_RECONNECT})
        await client.connect()
        stream = Stream(publish, SYMBOLS, STREAM_RATE)
        try:
            assert (await client.subscribe(SYMBOLS)).get("ok") is True
            stream.start()
            for symbol in SYMBOLS:
                await wait_for_n(client, symbol, 50)
            proxy.target = second.port
            proxy.cut(server_side=False)
            again = await connected_again(client, 2)
            assert again["recovered"] is True, again
            last = await stream.stop()
            for symbol in SYMBOLS:
                await wait_for_n(client, symbol, last)
                assert ns_of(client, symbol) == list(range(1, last + 1)), (symbol, _gaps(ns_of(client, symbol)))
            assert "not recovered" not in second.output()
        finally:
            if stream._task is not None and not stream._task.done():
                await stream.stop()
            await client.close()


def events_named(client: NodeSioClient, name: str, since: int = 0) -> list[Any]:
    """The first argument of each `name` event from timeline entry `since` on."""
    return [e[2][0] for e in client.timeline.items[since:] if e[0] == "event" and e[1] == name and e[2:]]


async def test_a_recovered_session_keeps_its_throttle_candles_and_heartbeat(servers, redis_url):
    """Recovered on another instance, a client goes on as before the cut: its
    throttled symbol still comes at most once per period (a burst arrives as
    one update, not one by one), its live candle counts the updates published
    while it was away, and its heartbeat events go on."""
    await period_with_room(HOUR_MS, 60_000)  # every candle update below falls in one 1h period
    env = {"RECOVERY_WINDOW": "30", **FAST_PINGS}
    async with cut_away_client(servers, redis_url, env, "websocket") as (client, proxy, publish, second):
        ack = await client.call("subscribe", {"symbols": ["SLOW"], "throttle": 60_000, "heartbeat": 1})
        assert ack.get("ok") is True and ack["throttle"] == 60_000, ack
        assert (await client.call("subscribe", ["FAST"]))["ok"] is True
        ack = await client.call("subscribeCandles", {"symbol": "CNDL", "interval": "1h"})
        assert ack["added"] == ["CNDL"], ack
        await publish("CNDL", 10.0, n=1, volume=1)
        await publish("SLOW", 1.0, n=1)
        await wait_for_n(client, "SLOW", 1)
        await eventually(lambda: any(c["count"] == 1 for c in events_named(client, "candle")), 10.0, "a candle")
        await eventually(lambda: events_named(client, "heartbeat"), 10.0, "a heartbeat")
        proxy.target = second.port
        proxy.refusing = True
        proxy.cut()
        await client.wait_disconnected()
        for n in (2, 3):  # counted in the candle while the client is away
            await publish("CNDL", 10.0 + n, n=n, volume=1)
        since = len(client.timeline.items)
        proxy.refusing = False
        again = await connected_again(client, 2)
        assert again["recovered"] is True, again

        candle = await eventually(
            lambda: next((c for c in events_named(client, "candle", since) if c["count"] == 3), None),
            10.0,
            "the candle with the updates published meanwhile",
        )
        assert candle["close"] == 13.0 and candle["volume"] == 3, candle
        for n in range(2, 7):  # a burst within the throttle period
            await publish("SLOW", float(n), n=n)
        await publish("FAST", 1.0, n=1)  # after the burst: an unthrottled stream would have it all by now
        await wait_for_n(client, "FAST", 1)
        await eventually(lambda: len(events_named(client, "heartbeat", since)) >= 2, 10.0, "heartbeats go on")
        slow = [u["n"] for u in events_named(client, "stockUpdate", since) if u["symbol"] == "SLOW"]
        assert len(slow) <= 1, slow
