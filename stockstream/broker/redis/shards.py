"""The listener over a Redis Cluster: a reader per master, a topology watcher, resume.

Sharded pub/sub (`SSUBSCRIBE`) delivers a channel only on a connection to
the shard owning its slot, so this listener keeps one reader per master: its own pub/sub
connection, on which it `SSUBSCRIBE`s the wanted symbols whose slots that
master owns, read by its own task so a quiet shard never waits behind a busy
one. A topology watcher compares the slot map with where each channel is
subscribed and restarts only the readers it must: one whose master is gone or
that must take over symbols; the others keep their connection and their
subscriptions. A reader that (re)starts resumes each of its symbols from the
last update the listener handed over, replaying from history what was
published while it was away (`on_resume`), before its live updates.

Checked against redis-py 8.1 (`redis.asyncio.cluster.RedisCluster`): its
cluster client routes keyed commands and scripts; the per-master pub/sub
connections are plain `redis.asyncio.Redis` clients, since its cluster
pub/sub reads one shard at a time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, NamedTuple

from redis.crc import key_slot
from redis.exceptions import RedisClusterException, RedisError

from ...backoff import Backoff
from ...config import Settings, redact_url
from ...updates import Update
from ..clients import shard_listener_client
from ..keys import ClusterKeyLayout
from ..malformed import MalformedLog
from .errors import REDIS_FAILURES
from .listener import DEAD_AFTER, PROBE_AFTER, READ_BURST, Listener
from .markers import Markers

if TYPE_CHECKING:  # annotations only: keeps the import chain short
    from .commands import CommandStore

log = logging.getLogger("stockstream.redis.cluster")

CLUSTER_SLOTS = 16384
# How often the slot owners are compared with the readers' subscriptions.
TOPOLOGY_EVERY = 0.5
# Failed slot-map reads in a row before the watcher restarts the listener.
TOPOLOGY_TRIES = 4
# While a reader waits for its shard (subscription confirmations, resume
# markers), it reads it this long at a time...
SHARD_POLL = 0.05
# ...and gives up when it stays silent this long.
SHARDS_ANSWER_WITHIN = 15.0
# A reader whose connection failed retries with this backoff (seconds).
READER_RETRY_FIRST = 0.1
READER_RETRY_CAP = 2.0
# Closing a reader's connection waits no longer than this (seconds).
CLOSE_WITHIN = 1.0
# At most this many updates are replayed per symbol on a resume; beyond, the
# symbol gets its latest snapshot instead.
RESUME_LIMIT = 10000


class _Unknown:
    """The resume point of a symbol the listener knows nothing about yet."""


UNKNOWN = _Unknown()
Point = Update | None | _Unknown


def slot_of(channel: str) -> int:
    return key_slot(channel.encode())


class ReaderPlan(NamedTuple):
    """What a slot map asks of the shard readers (by master `host:port`)."""

    start: set[str]  # masters without a reader
    stop: set[str]  # readers whose address no longer masters any slot
    restart: set[str]  # live readers that must take over channels placed elsewhere or nowhere
    release: set[str]  # channels placed on a reader whose master no longer owns their slot


def plan_readers(
    owners: Mapping[int, str], live: Mapping[str, bool], placed: Mapping[str, str], wanted: Iterable[str]
) -> ReaderPlan:
    """Compare a slot map (slot -> master) with the readers (name -> live) and
    where each channel is subscribed (channel -> reader); `wanted` are the
    channels that must be subscribed. A reader whose master keeps its address
    and gains no wanted channel is left alone, whatever else changed."""
    masters = set(owners.values())
    stop = {name for name in live if name not in masters}
    start = masters - set(live)
    release = set()
    for channel, name in placed.items():
        if owners.get(slot_of(channel)) != name:
            release.add(channel)
    restart = set()
    for channel in wanted:
        owner = owners.get(slot_of(channel))
        if owner is not None and live.get(owner) and placed.get(channel) != owner:
            restart.add(owner)
    return ReaderPlan(start, stop, restart, release)


class ShardReader:
    """One master's pub/sub connection and the task reading it."""

    def __init__(self, name: str) -> None:
        self.name = name  # the master's host:port, as CLUSTER SLOTS names it
        host, _, port = name.rpartition(":")
        self.host, self.port = host, int(port)
        self.pubsub: Any = None
        self.live = False
        self.task: asyncio.Task[None] | None = None


class ShardRouter:
    """Stands where Listener keeps its one pub/sub: `subscribe` and
    `unsubscribe` send each channel to the reader of the master owning its slot.

    A per-symbol marker channel (e.g. `stock:{SYM}:marker:<instance>`) shares
    the symbol's slot, so it lands on the same shard connection as the
    symbol's updates and is read in order with them.
    """

    def __init__(self, owner_of: Callable[[str], str | None]) -> None:
        self._owner_of = owner_of
        # Set when a wanted channel may be placed nowhere: the watcher then
        # compares the slot map with the placement again.
        self.replan = True
        self.readers: dict[str, ShardReader] = {}
        self.placed: dict[str, str] = {}  # channel -> name of the reader it was subscribed on

    async def subscribe(self, *channels: str) -> None:
        for channel in channels:
            reader = self.readers.get(self._owner_of(channel) or "")
            if reader is None or reader.pubsub is None:
                # No connection to its owner right now: the reader subscribes
                # every wanted channel of its master when it (re)starts.
                self.replan = True
                continue
            self.placed[channel] = reader.name
            # One command per channel: SSUBSCRIBE takes channels of one slot only.
            await reader.pubsub.ssubscribe(channel)

    async def unsubscribe(self, *channels: str) -> None:
        for channel in channels:
            reader = self.readers.get(self.placed.pop(channel, ""))
            if reader is not None and reader.pubsub is not None:
                await reader.pubsub.sunsubscribe(channel)

    def unplace(self, name: str) -> list[str]:
        """Forget every channel placed on reader `name`; returns them."""
        channels = [c for c, n in self.placed.items() if n == name]
        for channel in channels:
            del self.placed[channel]
        return channels

    async def aclose(self) -> None:
        readers = list(self.readers.values())
        self.readers.clear()
        self.placed.clear()
        for reader in readers:
            if reader.task is not None:
                reader.task.cancel()
        await asyncio.gather(*(r.task for r in readers if r.task is not None), return_exceptions=True)
        for reader in readers:
            await _close_quietly(reader.pubsub)
            reader.pubsub = None


async def _close_quietly(pubsub: Any) -> None:
    if pubsub is None:
        return
    try:
        # Bounded: a peer that vanished must not hold up a reader's retry.
        await asyncio.wait_for(pubsub.aclose(), CLOSE_WITHIN)
    except Exception:  # noqa: BLE001 - closing a broken connection may fail; nothing to do
        pass


class ShardListener(Listener):
    """Feeds an UpdateSink from a reader per master of a Redis Cluster."""

    keys: ClusterKeyLayout
    task_name = "stockstream-cluster-listener"

    def __init__(
        self,
        url: str,
        settings: Settings,
        keys: ClusterKeyLayout,
        markers: Markers,
        store: CommandStore,
        malformed: MalformedLog,
    ) -> None:
        super().__init__(url, settings, keys, markers, store, malformed)
        self._warned_not_cluster = False
        # The slot map the readers follow (slot -> master host:port).
        self._owners: dict[int, str] = {}
        self._router: ShardRouter | None = None
        # Where each wanted symbol's stream stands for this instance's clients:
        # the last update handed to the sink, else the first snapshot read for
        # a subscriber (None: there was no price). A reader resumes from it.
        self._points: dict[str, Update | None] = {}

    async def unsubscribe(self, symbols: Iterable[str]) -> None:
        symbols = list(symbols)
        for symbol in symbols:
            # Before any await: a symbol subscribed again starts from its new snapshot.
            self._points.pop(symbol, None)
        await super().unsubscribe(symbols)

    def _fail_markers_of(self, symbols: set[str]) -> None:
        """Reads of these symbols whose marker may never be met (their reader
        restarts) answer BackendUnavailable."""
        self.markers.fail_symbols(symbols, "cluster shard reader restarted during a read")

    def _deliver(self, item: Update | bytes) -> None:
        if type(item) is not bytes and item.symbol in self._wanted:  # type: ignore[union-attr]
            self._points[item.symbol] = item  # type: ignore[union-attr,assignment]
        super()._deliver(item)

    def note_read(self, symbol: str, update: Update | None) -> None:
        """A read placed in the stream (its marker met) gave a subscriber
        `update`: the resume point, unless the listener handed over one since."""
        if symbol in self._wanted:
            self._points.setdefault(symbol, update)

    # -- the listener: a supervisor, a reader per master, a topology watcher ----

    def _owner_of(self, channel: str) -> str | None:
        return self._owners.get(slot_of(channel))

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
                log.error(
                    "REDIS_CLUSTER=true but REDIS_URL=%s is not a node of a Redis Cluster"
                    " (cluster mode is not enabled there): not ready",
                    redact_url(self._url),
                )
            raise
        self._owners = await self._slot_owners()
        self._pubsub = self._router = router = ShardRouter(self._owner_of)
        try:
            self._follow(router, first=not resync)
            await self._watch_topology(router)
        finally:
            # The readers go with the listener (Listener closes self._pubsub too).
            self._router = None
            await router.aclose()

    def _follow(self, router: ShardRouter, first: bool = False) -> None:
        """Start, stop and restart readers as the current slot map asks."""
        router.replan = False
        wanted = [self.keys.channel(s) for s in self._wanted]
        plan = plan_readers(self._owners, {n: r.live for n, r in router.readers.items()}, router.placed, wanted)
        for channel in plan.release:
            # Redis already dropped it (its slot moved); its reads go elsewhere now.
            del router.placed[channel]
            self._fail_markers_of({self._symbol_of_channel(channel)})
        for name in plan.stop | plan.restart:
            self._stop_reader(router, name)
        for name in plan.start | plan.restart:
            reader = router.readers[name] = ShardReader(name)
            reader.task = asyncio.create_task(
                self._run_reader(router, reader, first and name in plan.start), name=f"stockstream-shard-{name}"
            )
        if plan.stop or plan.restart or plan.start:
            log.info(
                "cluster topology: readers started %s, restarted %s, stopped %s; %d untouched",
                sorted(plan.start),
                sorted(plan.restart),
                sorted(plan.stop),
                len(router.readers) - len(plan.start | plan.restart),
            )
        self._update_ready(router)

    def _stop_reader(self, router: ShardRouter, name: str) -> None:
        reader = router.readers.pop(name, None)
        if reader is None:
            return
        if reader.task is not None:
            reader.task.cancel()  # it closes its connection on the way out
        self._fail_markers_of({self._symbol_of_channel(c) for c in router.unplace(name)})

    def _symbol_of_channel(self, channel: str) -> str:
        return self.keys.symbol_of_any(channel)

    def _update_ready(self, router: ShardRouter) -> None:
        ready = bool(router.readers) and all(r.live for r in router.readers.values())
        if ready and len(self._owners) < CLUSTER_SLOTS:
            # Slots without a master (one failed, no replica promoted yet):
            # not ready while a wanted symbol is among them.
            ready = all(self._owner_of(self.keys.channel(s)) is not None for s in self._wanted)
        self._set_ready(ready)

    async def _run_reader(self, router: ShardRouter, reader: ShardReader, first: bool) -> None:
        """Keep one master's reader running until it is stopped: a failed
        connection is reopened (with backoff) and its symbols resumed."""
        backoff = Backoff(initial=READER_RETRY_FIRST, cap=READER_RETRY_CAP)
        try:
            while True:
                try:
                    await self._read_shard(router, reader, first)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - a reader must outlive any failure of its shard
                    (log.warning if reader.live else log.debug)("cluster shard %s: %s", reader.name, exc)
                if reader.live:
                    backoff.reset()
                first = False
                await self._reader_down(router, reader)
                await asyncio.sleep(backoff.next())
        finally:
            await self._reader_down(router, reader)

    async def _reader_down(self, router: ShardRouter, reader: ShardReader) -> None:
        reader.live = False
        if router.readers.get(reader.name) is reader:
            self._fail_markers_of({self._symbol_of_channel(c) for c in router.unplace(reader.name)})
            self._update_ready(router)
        pubsub, reader.pubsub = reader.pubsub, None
        await _close_quietly(pubsub)

    async def _read_shard(self, router: ShardRouter, reader: ShardReader, first: bool) -> None:
        """Connect, subscribe the wanted symbols this master owns, resume them
        (unless this is the listener's very first start), then read live."""
        reader.pubsub = pubsub = shard_listener_client(self._url, reader.host, reader.port).pubsub()
        # Taken with the connection in place (no await between): a symbol
        # subscribed from now on goes to this connection through the router.
        symbols = sorted(s for s in self._wanted if self._owner_of(self.keys.channel(s)) == reader.name)
        channels = [c for s in symbols for c in self._channels_of(s)]
        for channel in channels:
            router.placed[channel] = reader.name
        loop = asyncio.get_running_loop()
        for symbol in symbols:
            channel = self.keys.channel(symbol)
            if channel not in self._confirming or self._confirming[channel].done():
                self._confirming[channel] = loop.create_future()
        # A connection even without symbols: readiness means every master answers.
        await pubsub.ping()
        for channel in channels:
            await pubsub.ssubscribe(channel)
        early: list[Update | bytes] = []
        pending = {self.keys.channel(s) for s in symbols}
        await self._poll_shards(
            {reader.name: pubsub},
            pending,
            lambda m: self._route(m, early.append, pending),
            time.monotonic() + SHARDS_ANSWER_WITHIN,
            "cluster shard did not confirm subscriptions",
        )
        # Reads of these symbols marked before the subscriptions stood are never met.
        self._fail_markers_of(set(symbols))
        if symbols and not first and self._sink is not None:
            self.reconnects += 1
            resumed = await self._resume(pubsub, reader.name, symbols, early)
            if resumed:
                self._sink.on_resume(resumed)
            log.info(
                "cluster shard %s back: %d symbols resumed, %d updates replayed",
                reader.name,
                len(symbols),
                sum(len(u) for u in resumed.values()),
            )
        reader.live = True
        self._update_ready(router)
        for item in early:
            self._deliver(item)
        await self._read_live(router, reader, pubsub)

    async def _resume(
        self, pubsub: Any, name: str, symbols: list[str], early: list[Update | bytes]
    ) -> dict[str, list[Update]]:
        """Read what each symbol missed since its resume point, each read with
        a marker on this shard, and read the shard on until every marker is
        met. A symbol's updates before its marker are in its replay (or its
        snapshot) and leave `early`; later ones stay, in order, to follow it.
        Another read of the symbol met before that marker is failed: the
        position it would get is after the replay, which it may not cover."""
        reads = await asyncio.gather(*(self._resume_read(s) for s in symbols))
        resume_at: dict[bytes, str] = {}
        for symbol, (_, tokens) in zip(symbols, reads):
            for token in tokens:
                self.markers.forget(token)  # met here, not by _deliver
            resume_at[tokens[-1]] = symbol
        waiting = set(resume_at)

        def meet(message: dict[str, Any]) -> None:
            self._route(message, early.append)
            if early and type(early[-1]) is bytes:
                waiting.discard(early[-1])

        await self._poll_shards(
            {name: pubsub},
            waiting,
            meet,
            time.monotonic() + SHARDS_ANSWER_WITHIN,
            "cluster shard did not return the resume markers",
        )
        ahead = set(symbols)  # symbols whose resume marker is still ahead
        kept: list[Update | bytes] = []
        for item in early:
            if type(item) is bytes:
                if item in resume_at:
                    ahead.discard(resume_at[item])
                    continue
                if self.markers.symbol_of(item) in ahead:
                    self.markers.fail(item, "cluster shard resumed after this read")
                    continue
            elif item.symbol in ahead:  # type: ignore[union-attr]  # not bytes: an Update
                continue
            kept.append(item)
        early[:] = kept
        resumed = {}
        for symbol, (updates, _) in zip(symbols, reads):
            if updates and symbol in self._wanted:
                self._points[symbol] = updates[-1]
                resumed[symbol] = updates
        return resumed

    async def _resume_read(self, symbol: str) -> tuple[list[Update], list[bytes]]:
        """What `symbol`'s clients missed since its resume point, and the
        markers sent (the last one places the result in the stream).

        From history when it reaches back: by `seq` after an update of the
        project's publisher, by the exact update (timestamp and bytes) after a
        third-party one. Otherwise the latest snapshot, when it is newer than
        the point (third-party updates are not in history on a cluster)."""
        point: Point = self._points.get(symbol, UNKNOWN)
        async with self.markers.reading() as tokens:
            updates: list[Update] = []
            complete = False
            if point is None:
                updates, complete = await self._store.replay_after_seq(symbol, 0, RESUME_LIMIT, tokens)
            elif isinstance(point, Update) and point.seq is not None:
                updates, complete = await self._store.replay_after_seq(symbol, point.seq, RESUME_LIMIT, tokens)
            elif isinstance(point, Update):
                updates, complete = await self._replay_after_update(symbol, point, tokens)
            if not complete:
                raw = (await self._store.read_snapshots([symbol], tokens))[0]
                snapshot = self._store.snapshot(symbol, raw)
                updates = [snapshot] if snapshot is not None and _newer(snapshot, point) else []
        return updates, tokens

    async def _replay_after_update(self, symbol: str, point: Update, tokens: list[bytes]) -> tuple[list[Update], bool]:
        """Stored updates after `point`, an update without `seq`: those after
        the entry holding exactly its bytes, else those with a later timestamp."""
        updates, complete = await self._store.replay_after_ms(
            symbol, max(point.timestamp - 1, -1), RESUME_LIMIT, tokens
        )
        if not complete:
            return [], False
        for index in range(len(updates) - 1, -1, -1):
            if updates[index].raw == point.raw:
                return updates[index + 1 :], True
        return [u for u in updates if u.timestamp > point.timestamp], True

    @staticmethod
    async def _poll_shards(
        shards: dict[str, Any],
        pending: set[Any],
        handle: Callable[[dict[str, Any]], object],
        deadline: float,
        failure: str,
    ) -> None:
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

    async def _read_live(self, router: ShardRouter, reader: ShardReader, pubsub: Any) -> None:
        burst = 0
        last_heard = time.monotonic()
        while True:
            message = await pubsub.get_message(timeout=PROBE_AFTER)
            now = time.monotonic()
            if message is None:
                if now - last_heard > DEAD_AFTER:
                    raise ConnectionError("the shard stopped answering")
                await pubsub.ping()
                continue
            last_heard = now
            if message["type"] == "sunsubscribe":
                # Our own unsubscribe's confirmation, or Redis dropping the
                # channel because its slot moved: the watcher then sees a
                # wanted channel placed nowhere and restarts its new owner's reader.
                channel = message["channel"].decode()
                if router.placed.get(channel) == reader.name:
                    del router.placed[channel]
                    router.replan = True
                    # Reads of the symbol now mark on its new owner, where nobody listens yet.
                    self._fail_markers_of({self._symbol_of_channel(channel)})
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
                owners = await self._slot_owners()
            except ConnectionError:
                # One slow answer on a busy node is not an outage (the shard
                # readers notice a real one at once): give up only on a run of them.
                failures += 1
                if failures >= TOPOLOGY_TRIES:
                    raise
                continue
            failures = 0
            if owners != self._owners:
                self._owners = owners
                router.replan = True
                try:
                    # The command client's slot map, for the reads that follow.
                    await self._redis.nodes_manager.initialize()
                except REDIS_FAILURES as exc:
                    log.debug("cluster slot map refresh failed (commands retry it): %s", exc)
            if router.replan:
                # Only then: the comparison reads every wanted channel.
                self._follow(router)

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


def _newer(snapshot: Update, point: Point) -> bool:
    """Whether a snapshot read on a resume is news to clients at `point`:
    never the update they hold, nor one older (a promoted replica may lack
    the last writes of its failed master: Redis replicates asynchronously)."""
    if not isinstance(point, Update):
        return True
    if snapshot.raw == point.raw:
        return False
    if snapshot.seq is not None and point.seq is not None:
        return snapshot.seq > point.seq
    return snapshot.timestamp >= point.timestamp
