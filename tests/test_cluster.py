"""Stockstream on a Redis Cluster: 3 masters + 3 replicas on loopback, several instances."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from typing import Any, AsyncIterator

import aiohttp
import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from stockstream.updates import CheckedUpdate
from tests.support.inprocess import running_app
from tests.support.publishing import RawRedisPublisher, make_update
from tests.support.redis_cluster import RedisCluster
from tests.support.waiting import eventually, now_ms
from tests.support.ws import WsClient

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
        await client.execute_command(
            "SPUBLISH", f"stock:{{{symbol}}}", body, target_nodes=client.get_node_from_key(f"stock:{{{symbol}}}")
        )
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
                        10,
                        f"snapshot of {symbol}",
                    )
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
                        20,
                        f"update {per_symbol} of {symbol} on {client!r}",
                    )
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


# A steady publishing rate per symbol during the failover test (seconds between updates).
PUBLISH_EVERY = 0.03


def symbols_per_master(cluster: RedisCluster, count: int) -> dict[int, list[str]]:
    """`count` symbols owned by each master (by port)."""
    wanted = {m.port: [] for m in cluster.masters()}  # type: dict[int, list[str]]
    for index in range(1000):
        symbol = f"FO{index}"
        owned = wanted[cluster.owner_of(f"stock:{{{symbol}}}").port]
        if len(owned) < count:
            owned.append(symbol)
        if all(len(v) == count for v in wanted.values()):
            return wanted
    raise AssertionError("could not spread symbols over every master")


async def shard_readers(port: int) -> set[int]:
    """The ids of the connections holding our readers' subscriptions on a master: each
    subscribes a symbol's channel and its marker channel (the Socket.IO manager's holds one)."""
    client = aioredis.Redis(host="127.0.0.1", port=port)
    try:
        listing = await client.execute_command("CLIENT", "LIST")
    finally:
        await client.aclose()
    text = listing.decode() if isinstance(listing, bytes) else listing
    ids = set()
    for line in text.splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if int(fields.get("ssub", 0)) >= 2:
            ids.add(int(fields["id"]))
    return ids


async def settled_readers(ports: list[int], count: int) -> dict[int, set[int]]:
    """shard_readers of each master, once each lists `count` of them (the connections
    of instances that just stopped can stay listed a moment)."""
    found: dict[int, set[int]] = {}

    async def settled() -> bool:
        for port in ports:
            found[port] = await shard_readers(port)
        return all(len(ids) == count for ids in found.values())

    await eventually(settled, 10, f"{count} reader connections on every master", interval=0.05)
    return found


async def history_ns(url: str, symbol: str) -> list[int]:
    """The `n` of every entry of a symbol's history stream, on its current master."""
    client = AsyncRedisCluster.from_url(url)
    try:
        entries = await client.xrange(f"stock:{{{symbol}}}:history")
    finally:
        await client.aclose()
    return [json.loads(fields[b"u"])["n"] for _, fields in entries]


def strictly_increasing(ns: list[int]) -> bool:
    return all(a < b for a, b in itertools.pairwise(ns))


class SteadyStream:
    """Publishers of both kinds at a steady rate, each symbol in its own task (so a shard
    being promoted holds up none of the others), and the clients subscribed to them."""

    def __init__(self, ours: list[str], theirs: list[str], publish: Any, raw: RawRedisPublisher) -> None:
        self.ours, self.theirs, self.symbols = ours, theirs, ours + theirs
        self._publish, self._raw = publish, raw
        # `n` of every update whose publish returned, and of those whose publish failed
        # (which may or may not have been applied).
        self.confirmed: dict[str, list[int]] = {s: [] for s in self.symbols}
        self.unconfirmed: dict[str, set[int]] = {s: set() for s in self.symbols}
        self.clients: list[Any] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def publish(self, symbol: str, n: int) -> None:
        if symbol in self.ours:
            await self._publish(symbol, 100 + n, n=n)
        else:
            await self._raw.set_and_publish(make_update(symbol, 100 + n, n=n))

    async def subscribe(self, clients: list[Any]) -> None:
        """Publish update 0 of every symbol (the snapshot), then subscribe every client."""
        for symbol in self.symbols:
            await self.publish(symbol, 0)
            self.confirmed[symbol].append(0)
        for client in clients:
            ack = await (
                client.subscribe(*self.symbols) if isinstance(client, WsClient) else client.subscribe(self.symbols)
            )
            assert ack.get("ok") is True, ack
        self.clients = clients

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._keep_publishing(s)) for s in self.symbols]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _keep_publishing(self, symbol: str) -> None:
        n = 1
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self.publish(symbol, n), 10)
                self.confirmed[symbol].append(n)
            except Exception:
                self.unconfirmed[symbol].add(n)
            n += 1
            await asyncio.sleep(PUBLISH_EVERY)

    def last(self) -> dict[str, int]:
        return {s: self.confirmed[s][-1] for s in self.symbols}

    async def published_more(self, count: int, after: dict[str, int], timeout: float = 20) -> None:
        async def enough() -> bool:
            return all(len([n for n in self.confirmed[s] if n > after[s]]) >= count for s in self.symbols)

        await eventually(enough, timeout, f"{count} more updates of every symbol")

    @staticmethod
    def received(client: Any, symbol: str) -> list[int]:
        return [u.get("n") for u in client.updates_for(symbol)]

    async def everyone_has(self, upto: dict[str, int], timeout: float, what: str) -> None:
        for client in self.clients:
            for symbol in self.symbols:
                await client.updates.wait_for(
                    lambda _, c=client, s=symbol: upto[s] in self.received(c, s),
                    timeout,
                    f"{what}: update {upto[symbol]} of {symbol} on {client!r}",
                )

    async def check(
        self, cluster: RedisCluster, untouched: set[int], delivered: dict[str, int], resumed_at: dict[str, int]
    ) -> None:
        """Every client's sequence of every symbol: once and in order; on the masters in
        `untouched` (whose readers never restarted) every update; on the others
        stockstream's updates are exactly the history, and third-party ones everything
        confirmed up to `delivered` and after `resumed_at`."""
        for symbol in self.symbols:
            restarted = cluster.owner_of(f"stock:{{{symbol}}}").port not in untouched
            kept = await history_ns(cluster.url, symbol) if symbol in self.ours else None
            confirmed, unconfirmed = self.confirmed[symbol], self.unconfirmed[symbol]
            for client in self.clients:
                assert client.is_open if isinstance(client, WsClient) else client.connected, client
                ns = self.received(client, symbol)
                where = f"{symbol} ({'interrupted' if restarted else 'healthy'} shard) on {client!r}: {ns}"
                assert set(ns) <= set(confirmed) | unconfirmed, where
                if kept is not None:
                    # Exactly the history, in its order (a publish redis-py retried after
                    # a lost reply is there twice); only updates whose publish failed and
                    # the promoted replica never got (asynchronous replication) may be extra.
                    lost = unconfirmed - set(kept)
                    assert [n for n in ns if n not in lost] == kept, where
                    if not restarted:
                        assert ns == kept and set(confirmed) <= set(kept), where
                    continue
                assert strictly_increasing(ns), f"repeated or out of order: {where}"
                if not restarted:
                    assert set(confirmed) <= set(ns), f"lost updates: {where}"
                else:
                    before = [n for n in confirmed if n <= delivered[symbol]]
                    after = [n for n in confirmed if n > resumed_at[symbol]]
                    assert set(before) | set(after) <= set(ns), f"lost updates: {where}"


async def test_failover_loses_nothing(cluster, cluster_url, clients) -> None:
    """kill -9 of a master while both publisher kinds publish at a steady rate to symbols on
    every master. The readers of the healthy masters keep their connections (same client ids
    before and after). Every client (python-socketio, node socket.io-client, /live-price) of every
    symbol gets the published sequence once and in order: on a healthy shard every update; on the
    failed one, for the project's publisher, exactly what the promoted master's history holds;
    for a third-party publisher (not in history on a cluster), everything delivered before the
    kill, the latest snapshot in place of what was published while the shard's reader was away,
    then every update published once the instance was ready again."""
    spread = symbols_per_master(cluster, 2)
    victim = cluster.owner_of(f"stock:{{{spread[min(spread)][0]}}}")
    healthy = [port for port in spread if port != victim.port]
    raw = RawRedisPublisher(cluster_url, cluster=True, retries=False)
    try:
        async with atomic_publisher_cluster(cluster_url) as publish, instances(cluster_url, 2) as urls:
            stream = SteadyStream([s[0] for s in spread.values()], [s[1] for s in spread.values()], publish, raw)
            await stream.subscribe(
                [
                    await clients.sio(urls[0]),
                    await clients.ws(urls[0]),
                    await clients.sio(urls[1], kind="node"),
                    await clients.ws(urls[1]),
                ]
            )
            readers_before = await settled_readers(healthy, len(urls))
            stream.start()
            try:
                await stream.published_more(10, dict.fromkeys(stream.symbols, 0))
                delivered = stream.last()
                await stream.everyone_has(delivered, 15, "before the failover")
                victim.kill()
                async with aiohttp.ClientSession() as http:

                    async def not_ready() -> bool:
                        return not await ready(http, urls[0])

                    await eventually(not_ready, 10, "readyz 503 after the master died", interval=0.01)

                    async def all_ready() -> bool:
                        return all([await ready(http, u) for u in urls])

                    await eventually(all_ready, 30, "every instance ready after the promotion", interval=0.05)
                resumed_at = stream.last()
                await stream.published_more(10, resumed_at)
            finally:
                await stream.stop()
            await stream.everyone_has(stream.last(), 20, "after the failover")
            await stream.check(cluster, set(healthy), delivered, resumed_at)
            readers_after = {port: await shard_readers(port) for port in healthy}
            assert readers_after == readers_before, "a healthy shard's reader was restarted"
    finally:
        await raw.close()
        victim.start()  # it rejoins as a replica of its promoted one


async def test_a_dropped_shard_connection_resumes_without_loss(cluster, cluster_url, clients) -> None:
    """The connection of one master's reader is killed (CLIENT KILL) while both publisher kinds
    publish to symbols on every master: that reader reconnects to the same master and resumes,
    the others keep their connections, and every client gets every update of the project's
    publisher exactly once and in order (the ones published while the reader was away replayed
    from history), and third-party updates once, in order, the gap replaced by the latest snapshot."""
    spread = symbols_per_master(cluster, 2)
    dropped = min(spread)
    others = [port for port in spread if port != dropped]
    raw = RawRedisPublisher(cluster_url, cluster=True, retries=False)
    try:
        async with atomic_publisher_cluster(cluster_url) as publish, instances(cluster_url, 1) as (url,):
            stream = SteadyStream([s[0] for s in spread.values()], [s[1] for s in spread.values()], publish, raw)
            await stream.subscribe([await clients.sio(url), await clients.ws(url)])
            readers_before = await settled_readers(list(spread), 1)
            stream.start()
            try:
                await stream.published_more(5, dict.fromkeys(stream.symbols, 0))
                delivered = stream.last()
                await stream.everyone_has(delivered, 15, "before the drop")
                client = aioredis.Redis(host="127.0.0.1", port=dropped)
                try:
                    for reader in readers_before[dropped]:
                        await client.execute_command("CLIENT", "KILL", "ID", reader)
                finally:
                    await client.aclose()

                async def reconnected() -> bool:
                    ids = await shard_readers(dropped)
                    return bool(ids) and not ids & readers_before[dropped]

                await eventually(reconnected, 15, "the reader back on its master")
                async with aiohttp.ClientSession() as http:
                    await eventually(lambda: ready(http, url), 15, "the instance ready again")
                resumed_at = stream.last()
                await stream.published_more(5, resumed_at)
            finally:
                await stream.stop()
            await stream.everyone_has(stream.last(), 20, "after the drop")
            await stream.check(cluster, set(others), delivered, resumed_at)
            for port in others:
                assert await shard_readers(port) == readers_before[port], f"the reader of {port} was restarted"
    finally:
        await raw.close()


async def test_slot_migration_moves_the_channel(cluster, cluster_url, clients) -> None:
    """Resharding a subscribed symbol's slot to another master while streaming: the
    channel follows its slot, the updates published on the new owner before the
    instances follow it are replayed from history, and clients miss, repeat and
    reorder nothing."""
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
            # Published on the new owner before the instances follow the slot: replayed from history.
            for n in range(5, 8):
                await publish(symbol, 10 + n, n=n)

            async def moved() -> bool:
                client = aioredis.Redis(host="127.0.0.1", port=target.port)
                try:
                    reply = await client.execute_command("PUBSUB", "SHARDNUMSUB", key)
                finally:
                    await client.aclose()
                return int(reply[1]) == len(urls)

            # Both instances resubscribe on the new owner, then resume from history.
            await eventually(moved, 15, f"{key} subscribed on its new owner by every instance")
            from stockstream.app import broker_of

            async def resumed() -> bool:
                return all(broker_of(a).reconnects >= 1 and broker_of(a).ready for a in apps)

            await eventually(resumed, 15, "every instance resumed")
            assert key not in (await shard_channels(cluster)).get(source.port, set())
            for n in range(8, 12):
                await publish(symbol, 10 + n, n=n)
            for client in subscribers:
                await client.updates.wait_for(
                    lambda _, c=client: 11 in [u.get("n") for u in c.updates_for(symbol)], 10, "update 11"
                )
                ns = [u.get("n") for u in client.updates_for(symbol)]
                # Resumed from the last update delivered: nothing repeated, nothing missed.
                assert ns == list(range(12)), ns


def test_cluster_keys_share_the_symbols_slot() -> None:
    """In cluster mode every key and channel of a symbol hashes to one slot (the
    publish script's keys included), and the channel name gives back the symbol."""
    from redis.crc import key_slot

    from stockstream.broker.keys import ClusterKeyLayout, KeyLayout

    keys = ClusterKeyLayout()
    for symbol in ("AAPL", "BRK.B", "^GSPC", "BTC-USD"):
        names = [keys.channel(symbol), keys.seq(symbol), keys.history(symbol), keys.dedupe(symbol, "prices:3")]
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


async def test_a_resume_reads_exactly_what_each_point_missed(cluster_url) -> None:
    """What a restarted shard reader gives a symbol, from where its clients stand: the
    updates after that `seq` for the project's publisher; after the exact update (same
    timestamp, other bytes) for a third-party one found in history; the snapshot when
    history does not reach (a third-party update on a cluster) and it is news; nothing
    when the promoted master is behind what clients hold (lost writes)."""
    from stockstream.broker.redis.broker import RedisBroker
    from stockstream.config import Settings
    from stockstream.updates import parse_update

    broker = RedisBroker(cluster_url, Settings.from_env({"REDIS_URL": cluster_url, "REDIS_CLUSTER": "true"}))
    raw = RawRedisPublisher(cluster_url, cluster=True)
    try:

        async def resume(symbol: str, point: Any) -> list[Any]:
            broker.listener._wanted.add(symbol)
            broker.listener._points[symbol] = point
            updates, tokens = await broker.listener._resume_read(symbol)
            for token in tokens:
                broker.markers.forget(token)
            return [u.raw for u in updates]

        start = now_ms()  # history keeps a day: older timestamps are trimmed at once
        ours = [
            await broker.publish(CheckedUpdate({"symbol": "RSQ", "price": p, "timestamp": start + p}))
            for p in range(1, 6)
        ]
        assert await resume("RSQ", ours[1]) == [u.raw for u in ours[2:]]
        assert await resume("RSQ", ours[-1]) == []
        ahead = parse_update(ours[-1].raw.replace(b'"seq":5', b'"seq":9'), "RSQ")
        assert await resume("RSQ", ahead) == []  # the shard lost what clients hold: nothing older
        # Third-party updates in the same millisecond, recorded into history (as on one Redis).
        same_ms = [json.dumps({"symbol": "RTP", "price": p, "timestamp": start}).encode() for p in (1, 2, 3)]
        client = AsyncRedisCluster.from_url(cluster_url)
        try:
            for n, body in enumerate(same_ms, 1):
                await client.xadd("stock:{RTP}:history", {"u": body}, id=f"{start}-{n}")
            await client.set("stock:{RTP}", same_ms[-1])
        finally:
            await client.aclose()
        assert await resume("RTP", parse_update(same_ms[0], "RTP")) == same_ms[1:]
        # Not in history (SET + SPUBLISH on a cluster): the snapshot, once.
        await raw.set_and_publish({"symbol": "RNH", "price": 1, "timestamp": 7000})
        await raw.set_and_publish({"symbol": "RNH", "price": 2, "timestamp": 7001})
        first = parse_update(b'{"symbol":"RNH","price":1,"timestamp":7000}', "RNH")
        latest = b'{"symbol":"RNH","price":2,"timestamp":7001}'
        assert await resume("RNH", first) == [latest]
        assert await resume("RNH", parse_update(latest, "RNH")) == []
    finally:
        await raw.close()
        await broker.close()
