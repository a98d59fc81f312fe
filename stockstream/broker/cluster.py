"""The Redis Cluster backend: hash-tagged keys and sharded pub/sub.

Publishing runs the same script as on one Redis, ending in `SPUBLISH` on the
symbol's shard. The listener keeps one connection per master and
`SSUBSCRIBE`s each wanted symbol on the master owning its slot, and reads
every shard in its own task so a quiet shard never waits behind a busy one.
A topology watcher compares slot owners with what the listener subscribed;
a failover (replica promoted), a slot migration (Redis sends `SUNSUBSCRIBE`)
or a lost shard connection restarts the listener, which resubscribes on the
current owners and hands every subscribed symbol a fresh snapshot
(`on_resync`) before live updates resume, as after an outage on one Redis.

Checked against redis-py 8.1 (`redis.asyncio.cluster.RedisCluster`): its
cluster client routes keyed commands and scripts; the per-master pub/sub
connections are plain `redis.asyncio.Redis` clients, since its cluster
pub/sub reads one shard at a time.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, Iterable

from redis.exceptions import RedisClusterException, RedisError

from ..config import Settings, redact_url
from ..updates import CheckedUpdate, Update
from . import BackendUnavailable, Snapshots
from .clients import cluster_client, shard_listener_client
from .keys import ClusterKeyLayout
from .redis import PUBLISH_SCRIPT, READ_BURST, RedisBroker

log = logging.getLogger("stockstream.redis.cluster")

CLUSTER_PUBLISH_SCRIPT = PUBLISH_SCRIPT.replace("redis.call('PUBLISH'", "redis.call('SPUBLISH'")
assert CLUSTER_PUBLISH_SCRIPT != PUBLISH_SCRIPT
# How often the slot owners are compared with the listener's subscriptions.
TOPOLOGY_EVERY = 0.5
# Failed slot-map reads in a row before the watcher restarts the listener.
TOPOLOGY_TRIES = 4
# While the listener waits for its shards (subscription confirmations, resync
# markers), it reads them in turn, each this long at most, so a quiet shard
# does not hold up the others...
SHARD_POLL = 0.05
# ...and gives up when they stay silent this long.
SHARDS_ANSWER_WITHIN = 15.0


class TopologyChanged(Exception):
    """A wanted slot moved to another master (failover or migration)."""


class ShardRouter:
    """Stands where RedisBroker keeps its one pub/sub: `subscribe` and
    `unsubscribe` send each channel to the shard owning its slot.

    A per-symbol marker channel (e.g. `stock:{SYM}:marker:<instance>`) shares
    the symbol's slot, so it lands on the same shard connection as the
    symbol's updates and is read in order with them.
    """

    def __init__(self, owner_of: Any, shards: dict[str, Any]) -> None:
        self._owner_of = owner_of
        self.shards = shards  # node name -> PubSub
        self.placed: dict[str, str] = {}  # channel -> node name it was subscribed on

    def _by_shard(self, channels: Iterable[str]) -> dict[str, list[str]]:
        grouped: dict[str, list[str]] = {}
        for channel in channels:
            grouped.setdefault(self._owner_of(channel), []).append(channel)
        return grouped

    async def subscribe(self, *channels: str) -> None:
        for name, group in self._by_shard(channels).items():
            if name not in self.shards:
                raise TopologyChanged(f"slot owner {name} unknown to the listener")
            for channel in group:
                self.placed[channel] = name
                # One command per channel: SSUBSCRIBE takes channels of one slot only.
                await self.shards[name].ssubscribe(channel)

    async def unsubscribe(self, *channels: str) -> None:
        for channel in channels:
            name = self.placed.pop(channel, None)
            if name is not None and name in self.shards:
                await self.shards[name].sunsubscribe(channel)

    async def aclose(self) -> None:
        for pubsub in self.shards.values():
            try:
                await pubsub.aclose()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail; nothing to do
                pass


class ClusterBroker(RedisBroker):
    kind = "redis-cluster"
    keys: ClusterKeyLayout

    def __init__(self, url: str, settings: Settings) -> None:
        super().__init__(url, settings)
        self._warned_not_cluster = False
        self._instance = self.marker_channel.rsplit(":", 1)[-1]
        self._marker_suffix = f":marker:{self._instance}".encode()

    def _key_layout(self) -> ClusterKeyLayout:
        return ClusterKeyLayout()

    def _command_client(self) -> Any:
        return cluster_client(self._url)

    def _publish_source(self) -> str:
        return CLUSTER_PUBLISH_SCRIPT

    async def start(self, sink: Any) -> None:
        # The history recorder listens with PSUBSCRIBE, which sees no sharded
        # messages: third-party updates in cluster mode are live and in the
        # snapshot, but not recorded into history.
        self._sink = sink
        self._task = asyncio.create_task(self._listen_forever(), name="stockstream-cluster-listener")

    # -- markers ----------------------------------------------------------------
    #
    # A read's marker is SPUBLISHed in the read's own transaction on a channel
    # in the read symbol's slot, which the shard reader owning that slot is
    # subscribed to. So the marker reaches the listener on the connection that
    # carries the symbol's updates, after exactly those published before the
    # read. The position it yields orders that symbol's updates only: other
    # shards' updates arrive on other connections at their own pace.

    def _send_marker(self, pipe: Any, symbol: str, token: bytes) -> None:
        pipe.spublish(self.keys.marker(symbol, self._instance), token)

    def _is_marker(self, channel: bytes) -> bool:
        return channel.endswith(self._marker_suffix)

    def _channels_of(self, symbol: str) -> list[str]:
        return [self.keys.channel(symbol), self.keys.marker(symbol, self._instance)]

    # -- the listener ------------------------------------------------------

    def _owner_of(self, channel: str) -> str:
        node = self._redis.nodes_manager.get_node_from_slot(self._redis.keyslot(channel))
        name: str = node.name
        return name

    async def _listen(self, resync: bool) -> None:
        try:
            await self._redis.initialize()
            # Re-read the slot map: after a failover the cached one is stale.
            await self._redis.nodes_manager.initialize()
        except (RedisError, RedisClusterException) as exc:
            text = str(exc).lower()
            if not self._warned_not_cluster and ("not enabled" in text or "support disabled" in text):
                # A setting that cannot work: said once, clearly; retried quietly after.
                self._warned_not_cluster = True
                log.error("REDIS_CLUSTER=true but REDIS_URL=%s is not a node of a Redis Cluster"
                          " (cluster mode is not enabled there): not ready", redact_url(self._url))
            raise
        shards = {}
        for node in self._redis.get_primaries():
            shards[node.name] = shard_listener_client(self._url, node.host, node.port).pubsub()
        router = ShardRouter(self._owner_of, shards)
        self._pubsub = router
        wanted = {self.keys.channel(s) for s in self._wanted}
        loop = asyncio.get_running_loop()
        for channel in wanted:
            if channel not in self._confirming or self._confirming[channel].done():
                self._confirming[channel] = loop.create_future()
        self._last_heard = time.monotonic()
        for pubsub in shards.values():
            # A connection per shard even with no symbols: readiness then
            # means every master answers.
            await pubsub.ping()
        if wanted:
            await router.subscribe(*(c for s in self._wanted for c in self._channels_of(s)))
        early: list[Update | bytes] = []
        pending = set(wanted)
        # Confirmations arrive per shard; read them all before going ready.
        await self._poll_shards(shards, pending, lambda message: self._route(message, early.append, pending),
                                self._last_heard + SHARDS_ANSWER_WITHIN, "cluster shards did not confirm subscriptions")
        if resync and self._sink is not None:
            self.reconnects += 1
            snapshots = await self._resync(shards, early)
            self._sink.on_resync(snapshots)
            log.info("cluster listener back: %d symbols resynchronised", len(snapshots))
        self._set_ready(True)
        for update in early:
            self._deliver(update)
        tasks = [asyncio.create_task(self._read_shard(p), name=f"stockstream-shard-{n}")
                 for n, p in shards.items()]
        tasks.append(asyncio.create_task(self._watch_topology(router), name="stockstream-cluster-topology"))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
            raise ConnectionError("a cluster shard reader stopped")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _resync(self, shards: dict[str, Any], early: list[Update | bytes]) -> dict[str, Update | None]:
        """Read every wanted symbol's snapshot, each in a transaction with a
        marker on its shard, and read the shards on until every marker is
        met; a symbol's updates before its marker are covered by its snapshot
        and leave `early`, later ones stay, in order, to follow it."""
        symbols = sorted(self._wanted)
        reads = await asyncio.gather(*(self._read_marked(s) for s in symbols))
        marker_of = {token: symbol for symbol, (_, token) in zip(symbols, reads)}
        for token in marker_of:
            self._markers.pop(token, None)  # met here, not by _deliver
        waiting = set(marker_of)

        def meet(message: dict[str, Any]) -> None:
            self._route(message, early.append)
            if early and type(early[-1]) is bytes:
                waiting.discard(early[-1])

        await self._poll_shards(shards, waiting, meet, time.monotonic() + SHARDS_ANSWER_WITHIN,
                                "cluster shards did not return the resync markers")
        covered: set[str] = set(symbols)  # symbols whose marker is still ahead
        kept: list[Update | bytes] = []
        for item in early:
            if type(item) is bytes:
                if item in marker_of:
                    covered.discard(marker_of[item])
                    continue
            elif item.symbol in covered:  # type: ignore[union-attr]  # not bytes: an Update
                continue
            kept.append(item)
        early[:] = kept
        return {symbol: self._snapshot(symbol, raw) for symbol, (raw, _) in zip(symbols, reads)}

    @staticmethod
    async def _poll_shards(shards: dict[str, Any], pending: set[Any], handle: Callable[[dict[str, Any]], object],
                           deadline: float, failure: str) -> None:
        """Read every shard's pub/sub in turn, a short wait each, handing each
        message to `handle`, until `handle` has emptied `pending`. A round in
        which no shard said anything after `deadline` raises ConnectionError(failure)."""
        while pending:
            progressed = False
            for pubsub in shards.values():
                message = await pubsub.get_message(timeout=SHARD_POLL)
                if message is not None:
                    progressed = True
                    handle(message)
            if not progressed and time.monotonic() > deadline:
                raise ConnectionError(failure)

    async def _read_marked(self, symbol: str) -> tuple[bytes | None, bytes]:
        """A symbol's snapshot key read in a transaction with its marker."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(self.keys.channel(symbol))
            token = self._mark(pipe, symbol)
            try:
                raw = (await pipe.execute())[0]
            except BaseException:
                self._forget_marker(token)
                raise
        return raw, token

    async def _read_shard(self, pubsub: Any) -> None:
        burst = 0
        last_heard = time.monotonic()
        while True:
            message = await pubsub.get_message(timeout=5.0)
            now = time.monotonic()
            if message is None:
                if now - last_heard > 15.0:
                    raise ConnectionError("a cluster shard stopped answering")
                await pubsub.ping()
                continue
            last_heard = now
            if message["type"] == "sunsubscribe":
                channel = message["channel"].decode()
                if self._is_marker(message["channel"]):
                    continue  # its symbol's channel leaves with it
                if channel.startswith("stock:{") and self.keys.symbol_of(message["channel"]) in self._wanted:
                    # Redis drops a channel's subscribers when its slot moves.
                    raise TopologyChanged(f"{channel} left this shard")
                continue
            if self._route(message, self._deliver):
                burst += 1
                if burst >= READ_BURST:
                    burst = 0
                    await asyncio.sleep(0)

    async def _watch_topology(self, router: ShardRouter) -> None:
        failures = 0
        while True:
            await asyncio.sleep(TOPOLOGY_EVERY)
            try:
                slots = await self._slot_owners()
            except ConnectionError:
                # One slow answer on a busy node is not an outage (the shard
                # readers notice a real one at once): give up only on a run of them.
                failures += 1
                if failures >= TOPOLOGY_TRIES:
                    raise
                continue
            failures = 0
            for channel, name in list(router.placed.items()):
                owner = slots.get(self._redis.keyslot(channel))
                if owner is not None and owner != name:
                    raise TopologyChanged(f"{channel} moved from {name} to {owner}")

    async def _slot_owners(self) -> dict[int, str]:
        """slot -> master `host:port`, read from any reachable node."""
        last: Exception | None = None
        for node in self._redis.get_nodes():
            try:
                reply = await self._redis.execute_command("CLUSTER SLOTS", target_nodes=node)
            except (RedisError, OSError) as exc:
                last = exc
                continue
            owners: dict[int, str] = {}
            for start, end, master, *_ in _slot_rows(reply):
                host = master[0].decode() if isinstance(master[0], bytes) else master[0]
                for slot in range(start, end + 1):
                    owners[slot] = f"{host}:{master[1]}"
            return owners
        raise ConnectionError(f"no cluster node answers CLUSTER SLOTS: {last!r}")

    # -- commands -------------------------------------------------------------

    async def snapshots(self, symbols: list[str]) -> dict[str, Update | None]:
        if not symbols:
            return {}
        try:
            # MGET cannot span slots; redis-py splits it per slot.
            values = await self._redis.mget_nonatomic([self.keys.channel(s) for s in symbols])
        except (RedisError, RedisClusterException, OSError) as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc
        return {symbol: self._snapshot(symbol, raw) for symbol, raw in zip(symbols, values)}

    async def snapshots_at(self, symbols: list[str]) -> Snapshots:
        # One transaction per symbol (a transaction stays in one slot), each
        # with its own marker, so each symbol gets the position that orders
        # its own shard's updates.
        reads = await asyncio.gather(*(self._snapshot_at(s) for s in symbols))
        return Snapshots({s: snapshot for s, (snapshot, _) in zip(symbols, reads)},
                         {s: position for s, (_, position) in zip(symbols, reads)})

    async def _snapshot_at(self, symbol: str) -> tuple[Update | None, int]:
        token = None
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.get(self.keys.channel(symbol))
                token = self._mark(pipe, symbol)
                raw = (await pipe.execute())[0]
        except BaseException as exc:
            if token is not None:
                self._forget_marker(token)
            if isinstance(exc, (RedisError, RedisClusterException, OSError)):
                raise BackendUnavailable(f"redis: {exc}") from exc
            raise
        return self._snapshot(symbol, raw), await self._position(token)

    async def replay_at(self, symbol: str, since_ms: int | None = None, since_seq: int | None = None,
                        limit: int = 10000) -> Any:
        try:
            return await super().replay_at(symbol, since_ms, since_seq, limit)
        except RedisClusterException as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc

    # The cluster client also raises RedisClusterException (no reachable node,
    # slots not covered), which RedisBroker does not expect.

    async def publish(self, update: CheckedUpdate, *, dedupe: tuple[str, int] | None = None) -> Update | None:
        try:
            return await super().publish(update, dedupe=dedupe)
        except RedisClusterException as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc

    async def history(self, symbol: str, start_ms: int | None = None, end_ms: int | None = None,
                      limit: int = 1000) -> list[Update]:
        try:
            return await super().history(symbol, start_ms, end_ms, limit)
        except RedisClusterException as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc

    async def replay(self, symbol: str, since_ms: int | None = None, since_seq: int | None = None,
                     limit: int = 10000) -> Any:
        try:
            return await super().replay(symbol, since_ms, since_seq, limit)
        except RedisClusterException as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc


    async def save_session(self, pid: str, data: bytes, ttl: float) -> None:
        try:
            await super().save_session(pid, data, ttl)
        except RedisClusterException as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc

    async def take_session(self, pid: str) -> bytes | None:
        try:
            return await super().take_session(pid)
        except RedisClusterException as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc


def _slot_rows(reply: Any) -> list[Any]:
    """CLUSTER SLOTS as rows [start, end, [host, port, ...], ...]; redis-py
    may already have parsed it into {(start, end): {...}}."""
    if isinstance(reply, dict):
        rows = []
        for (start, end), info in reply.items():
            primary = info["primary"]
            rows.append([start, end, list(primary)])
        return rows
    return list(reply)
