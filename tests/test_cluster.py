"""Stockstream on a Redis Cluster: 3 masters + 3 replicas on loopback, several instances."""
from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any, AsyncIterator

import aiohttp
import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from tests.support.inprocess import running_app
from tests.support.redis_cluster import RedisCluster
from tests.support.waiting import eventually, now_ms

pytestmark = pytest.mark.slow

# Chosen so that every master of a 3-master cluster owns some (checked below).
SYMBOLS = ["AAPL", "GOOGL", "AMZN", "MSFT", "TSLA", "JPM"]


@pytest.fixture
def cluster(redis_cluster: RedisCluster) -> RedisCluster:
    """The session's Redis Cluster (tests/conftest.py); cluster_url flushes it."""
    return redis_cluster


@contextlib.asynccontextmanager
async def instances(url: str, count: int, apps: list[Any] | None = None) -> AsyncIterator[list[str]]:
    async with contextlib.AsyncExitStack() as stack:
        ports = []
        for _ in range(count):
            app, port = await stack.enter_async_context(running_app(url, redis_cluster=True))
            ports.append(port)
            if apps is not None:
                apps.append(app)
        yield [f"http://127.0.0.1:{p}" for p in ports]


async def third_party_publish(url: str, symbol: str, price: float, **extra: Any) -> dict[str, Any]:
    """What the README tells third-party publishers to do in cluster mode."""
    update = {"symbol": symbol, "price": price, "timestamp": now_ms(), **extra}
    body = json.dumps(update)
    client = AsyncRedisCluster.from_url(url)
    try:
        await client.set(f"stock:{{{symbol}}}", body)
        await client.execute_command("SPUBLISH", f"stock:{{{symbol}}}", body,
                                     target_nodes=client.get_node_from_key(f"stock:{{{symbol}}}"))
    finally:
        await client.aclose()
    return update


def test_the_symbols_cover_every_master(cluster: RedisCluster) -> None:
    """The test symbols are spread so that every master owns at least one."""
    owners = {cluster.owner_of(f"stock:{{{s}}}").port for s in SYMBOLS}
    assert owners == {m.port for m in cluster.masters()}


async def test_snapshot_and_exactly_once_in_order_across_instances(cluster_url, clients) -> None:
    """Clients on three instances (python and node Socket.IO) get the snapshot on
    subscribe, then every update of both publisher kinds once and in order."""
    per_symbol = 20
    async with atomic_publisher_cluster(cluster_url) as publish:
        for symbol in SYMBOLS:
            await publish(symbol, 1.0, n=0)
        async with instances(cluster_url, 3) as urls:
            subscribers = []
            for index, url in enumerate(urls):
                for kind in ("python", "node"):
                    client = await clients.sio(url, kind=kind)
                    ack = await client.subscribe(SYMBOLS)
                    assert ack.get("ok") is True, ack
                    subscribers.append(client)
            for client in subscribers:
                for symbol in SYMBOLS:
                    await client.updates.wait_for(
                        lambda _, s=symbol: [u.get("n") for u in client.updates_for(s)][:1] == [0],
                        10, f"snapshot of {symbol}")
            for n in range(1, per_symbol + 1):
                for symbol in SYMBOLS:
                    if n % 2:
                        await publish(symbol, 100 + n, n=n)
                    else:
                        await third_party_publish(cluster_url, symbol, 100 + n, n=n)
            expected = list(range(0, per_symbol + 1))
            for client in subscribers:
                for symbol in SYMBOLS:
                    await client.updates.wait_for(
                        lambda _, s=symbol: per_symbol in [u.get("n") for u in client.updates_for(s)],
                        20, f"update {per_symbol} of {symbol} on {client!r}")
                    assert [u.get("n") for u in client.updates_for(symbol)] == expected, (client, symbol)


@contextlib.asynccontextmanager
async def atomic_publisher_cluster(url: str) -> AsyncIterator[Any]:
    async with atomic_publisher_with(url) as publish:
        yield publish


@contextlib.asynccontextmanager
async def atomic_publisher_with(url: str) -> AsyncIterator[Any]:
    from stockstream.broker import create_broker
    from stockstream.publisher import Publisher
    from tests.support.inprocess import settings_for
    from tests.support.waiting import free_port

    broker = create_broker(settings_for(url, free_port(), redis_cluster=True))
    try:
        yield Publisher(broker).publish
    finally:
        await broker.close()


async def ready(http: aiohttp.ClientSession, url: str) -> bool:
    async with http.get(url + "/readyz") as resp:
        return resp.status == 200


def assert_resynced_in_order(ns: list[int]) -> None:
    """Increasing, except that the one resync snapshot may repeat the update before it."""
    repeats = [a for a, b in zip(ns, ns[1:]) if a == b]
    assert len(repeats) <= 1 and all(a <= b for a, b in zip(ns, ns[1:])), f"duplicate or out of order: {ns}"


async def shard_channels(cluster: RedisCluster) -> dict[int, set[str]]:
    result = {}
    for master in cluster.masters():
        client = aioredis.Redis(host="127.0.0.1", port=master.port)
        try:
            result[master.port] = {c.decode() for c in await client.execute_command("PUBSUB", "SHARDCHANNELS")}
        finally:
            await client.aclose()
    return result


async def test_each_shard_carries_only_its_own_symbols(cluster, cluster_url, clients) -> None:
    """PUBSUB SHARDCHANNELS on each master lists only the symbols it owns, and
    each master's share of the published messages follows its share of symbols
    (read markers included: they are hash-tagged to their symbol's slot)."""
    async with instances(cluster_url, 2) as urls:
        for url in urls:
            client = await clients.sio(url)
            assert (await client.subscribe(SYMBOLS)).get("ok") is True
        channels = await shard_channels(cluster)
        for port, names in channels.items():
            owned = {f"stock:{{{s}}}" for s in SYMBOLS if cluster.owner_of(f"stock:{{{s}}}").port == port}
            # Besides the Socket.IO manager's one channel, on its slot's master;
            # each instance's read-marker channels sit in their symbol's slot.
            symbols = {n.split(":marker:")[0] for n in names if n.startswith("stock:")}
            assert symbols == owned, (port, names, owned)
        before = await publish_counts(cluster)
        async with atomic_publisher_cluster(cluster_url) as publish:
            for n in range(30):
                for symbol in SYMBOLS:
                    await publish(symbol, 10 + n, n=n)
        after = await publish_counts(cluster)
        for port, count in after.items():
            owned = sum(1 for s in SYMBOLS if cluster.owner_of(f"stock:{{{s}}}").port == port)
            assert count - before[port] == owned * 30, (port, count - before[port], owned)


async def publish_counts(cluster: RedisCluster) -> dict[int, int]:
    """SPUBLISH calls each master ran (from the script), per INFO commandstats."""
    counts = {}
    for master in cluster.masters():
        client = aioredis.Redis(host="127.0.0.1", port=master.port)
        try:
            stats = await client.info("commandstats")
        finally:
            await client.aclose()
        counts[master.port] = int(stats.get("cmdstat_spublish", {}).get("calls", 0))
    return counts


async def test_history_and_resume_on_the_cluster(cluster_url) -> None:
    """History is kept per symbol on its shard: the HTTP history route returns
    what was published, in order."""
    async with atomic_publisher_cluster(cluster_url) as publish:
        async with instances(cluster_url, 1) as (url,):
            for n in range(5):
                for symbol in SYMBOLS:
                    await publish(symbol, 50 + n, n=n)
            async with aiohttp.ClientSession() as http:
                for symbol in SYMBOLS:
                    async with http.get(f"{url}/api/history/{symbol}") as resp:
                        assert resp.status == 200, await resp.text()
                        body = await resp.json()
                    items = body if isinstance(body, list) else body.get("updates", body.get("history"))
                    assert [u.get("n") for u in items] == list(range(5)), (symbol, body)


async def test_failover_resyncs_and_keeps_clients(cluster, cluster_url, clients) -> None:
    """kill -9 of a master owning subscribed symbols while publishing: clients stay
    connected, /readyz goes 503 then 200, every client gets a snapshot and then
    every later update, nothing duplicated or out of order."""
    victim = cluster.owner_of(f"stock:{{{SYMBOLS[0]}}}")
    try:
        await failover_while_streaming(cluster, cluster_url, clients, victim)
    finally:
        victim.start()  # it rejoins as a replica of its promoted one


async def failover_while_streaming(cluster: RedisCluster, cluster_url: str, clients: Any, victim: Any) -> None:
    async with atomic_publisher_cluster(cluster_url) as publish:
        async with instances(cluster_url, 2) as urls:
            subscribers = []
            for url in urls:
                client = await clients.sio(url)
                assert (await client.subscribe(SYMBOLS)).get("ok") is True
                subscribers.append(client)
            for symbol in SYMBOLS:
                await publish(symbol, 1, n=0)
            victim.kill()
            async with aiohttp.ClientSession() as http:
                async def not_ready() -> bool:
                    async with http.get(urls[0] + "/readyz") as resp:
                        return resp.status == 503
                await eventually(not_ready, 10, "readyz 503 after the master died", interval=0.01)
                # Keep publishing through the promotion; failures while the slot has no owner are expected.
                n = 1
                deadline = time.monotonic() + 30
                published: dict[str, list[int]] = {s: [] for s in SYMBOLS}
                while time.monotonic() < deadline:
                    ok = True
                    for symbol in SYMBOLS:
                        try:
                            await publish(symbol, 1 + n, n=n)
                            published[symbol].append(n)
                        except Exception:  # the slot's owner is being promoted
                            ok = False
                    n += 1
                    if ok and all([await ready(http, u) for u in urls]):
                        break
                    await asyncio.sleep(0.05)
                else:
                    raise AssertionError("cluster did not recover in 30 s")
                for _ in range(3):
                    for symbol in SYMBOLS:
                        await publish(symbol, 1 + n, n=n)
                        published[symbol].append(n)
                    n += 1
            for client in subscribers:
                assert client.connected
                for symbol in SYMBOLS:
                    last = published[symbol][-1]
                    await client.updates.wait_for(
                        lambda _, s=symbol, l=last: l in [u.get("n") for u in client.updates_for(s)],
                        15, f"update {last} of {symbol}")
                    ns = [u.get("n") for u in client.updates_for(symbol)]
                    assert_resynced_in_order(ns)
                    # Only updates the resync snapshot superseded may be missing.
                    missing = [p for p in published[symbol] if p not in ns]
                    assert all(m < ns[-3] for m in missing), (ns, missing)
                    assert ns[-3:] == published[symbol][-3:], ns


async def test_slot_migration_moves_the_channel(cluster, cluster_url, clients) -> None:
    """Resharding a subscribed symbol's slot to another master while streaming: the
    channel follows its slot, and clients miss, repeat and reorder nothing."""
    symbol = SYMBOLS[1]
    key = f"stock:{{{symbol}}}"
    async with atomic_publisher_cluster(cluster_url) as publish:
        apps: list[Any] = []
        async with instances(cluster_url, 2, apps) as urls:
            subscribers = []
            for url in urls:
                client = await clients.sio(url)
                assert (await client.subscribe([symbol])).get("ok") is True
                subscribers.append(client)
            for n in range(5):
                await publish(symbol, 10 + n, n=n)
            source = cluster.owner_of(key)
            target = next(m for m in cluster.masters() if m.port != source.port)
            cluster.migrate_slot(key, target)

            async def moved() -> bool:
                client = aioredis.Redis(host="127.0.0.1", port=target.port)
                try:
                    reply = await client.execute_command("PUBSUB", "SHARDNUMSUB", key)
                finally:
                    await client.aclose()
                return int(reply[1]) == len(urls)
            # Both instances resubscribe on the new owner (then resynchronise).
            await eventually(moved, 15, f"{key} subscribed on its new owner by every instance")
            # Updates published before the resync are superseded by its snapshot;
            # the ones after it must all arrive.
            from stockstream.app import broker_of

            async def resynced() -> bool:
                return all(broker_of(a).reconnects >= 1 and broker_of(a).ready for a in apps)
            await eventually(resynced, 15, "every instance resynchronised")
            assert key not in (await shard_channels(cluster)).get(source.port, set())
            for n in range(5, 10):
                await publish(symbol, 10 + n, n=n)
            for client in subscribers:
                await client.updates.wait_for(
                    lambda _, c=client: 9 in [u.get("n") for u in c.updates_for(symbol)], 10, "update 9")
                ns = [u.get("n") for u in client.updates_for(symbol)]
                # The resync snapshot (the latest stored, n=4) comes again, then every later update.
                assert ns == [0, 1, 2, 3, 4, 4, 5, 6, 7, 8, 9], ns


def test_cluster_keys_share_the_symbols_slot() -> None:
    """In cluster mode every key and channel of a symbol hashes to one slot (the
    publish script's keys included), and the channel name gives back the symbol."""
    from redis.crc import key_slot

    from stockstream.broker.keys import ClusterKeyLayout, KeyLayout

    keys = ClusterKeyLayout()
    for symbol in ("AAPL", "BRK.B", "^GSPC", "BTC-USD"):
        names = [keys.channel(symbol), keys.seq(symbol), keys.history(symbol),
                 keys.dedupe(symbol, "prices:3")]
        assert names[0] == f"stock:{{{symbol}}}"
        assert len({key_slot(n.encode()) for n in names}) == 1, names
        assert keys.symbol_of(names[0].encode()) == symbol
    # One Redis keeps the original layout.
    assert KeyLayout().channel("AAPL") == "stock:AAPL"
    assert KeyLayout().symbol_of(b"stock:AAPL") == "AAPL"


def test_redis_cluster_needs_a_redis_url() -> None:
    """REDIS_CLUSTER=true without a Redis to point at is refused with one line naming it."""
    from stockstream.config import Settings, SettingsError

    with pytest.raises(SettingsError, match="REDIS_CLUSTER"):
        Settings.from_env({"REDIS_CLUSTER": "true"}).check()


async def test_cluster_mode_against_a_plain_redis_says_so(redis_url, caplog) -> None:
    """REDIS_CLUSTER=true against a Redis without cluster mode: the server starts,
    is not ready, and says once, clearly, why."""
    caplog.set_level("ERROR", logger="stockstream.redis.cluster")
    async with running_app(redis_url, serve=False, redis_cluster=True) as (app, _):
        from stockstream.app import broker_of

        async def said() -> bool:
            return any("is not a node of a Redis Cluster" in r.getMessage() for r in caplog.records)
        await eventually(said, 10, "the one line about cluster mode")
        assert not broker_of(app).ready
    lines = [r for r in caplog.records if "is not a node of a Redis Cluster" in r.getMessage()]
    assert len(lines) == 1


async def test_kafka_offsets_dedupe_per_symbol_on_the_cluster(cluster, cluster_url) -> None:
    """The bridge's dedupe record lives beside each symbol (`stock:{SYM}:dedupe:<topic>:<partition>`),
    so a replayed offset is skipped on whichever shard owns the symbol."""
    from stockstream.broker import create_broker
    from stockstream.updates import CheckedUpdate
    from tests.support.inprocess import settings_for
    from tests.support.waiting import free_port

    broker = create_broker(settings_for(cluster_url, free_port(), redis_cluster=True))
    try:
        for symbol in SYMBOLS:
            update = CheckedUpdate({"symbol": symbol, "price": 1.0, "timestamp": now_ms()})
            assert await broker.publish(update, dedupe=("prices:0", 7)) is not None
            assert await broker.publish(update, dedupe=("prices:0", 7)) is None
            assert await broker.publish(update, dedupe=("prices:0", 8)) is not None
        client = cluster.client()
        try:
            assert client.get("stock:{AAPL}:dedupe:prices:0") == b"8"
        finally:
            client.close()
    finally:
        await broker.close()


async def test_socketio_emits_cross_instances_on_the_cluster(cluster_url) -> None:
    """The cluster's Socket.IO manager: an emit from an external write-only emitter,
    addressed to a symbol's room, reaches that room's clients on every instance."""
    import socketio

    from stockstream.transports.cluster_manager import AsyncRedisClusterManager

    async with instances(cluster_url, 2) as urls:
        queues, sockets = [], []
        try:
            for url in urls:
                client = socketio.AsyncClient()
                queue: asyncio.Queue = asyncio.Queue()
                client.on("news", queue.put_nowait)
                await client.connect(url, transports=["websocket"])
                assert (await client.call("subscribe", "AAPL", timeout=10))["ok"] is True
                queues.append(queue)
                sockets.append(client)
            emitter = AsyncRedisClusterManager(cluster_url, write_only=True)
            try:
                async def everyone_heard() -> bool:
                    await emitter.emit("news", {"headline": "AAPL beats"}, room="AAPL", namespace="/")
                    await asyncio.sleep(0.2)
                    return all(not q.empty() for q in queues)
                await eventually(everyone_heard, 10, "the emit on both instances")
                for queue in queues:
                    assert await queue.get() == {"headline": "AAPL beats"}
            finally:
                await emitter.redis.aclose()
        finally:
            for client in sockets:
                await client.disconnect()
