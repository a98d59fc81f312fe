"""The Redis broker: one Redis or a Redis Cluster, assembled from the same parts.

The settings choose each part's variant: the key layout (keys.py), the
command client (clients.py), the command store (commands.py: the publish
script, snapshots, history, replays), the markers that place a read in the
stream (markers.py), and the listener (listener.py: one pub/sub connection;
shards.py: a reader per master). Recoverable sessions are kept with the data
(sessions.py); on one Redis the history recorder (recorder.py) also records
third-party updates.
"""

from __future__ import annotations

import logging
import uuid
from typing import Iterable

from ...config import Settings
from ...updates import CheckedUpdate, Update
from .. import Broker, Replay, Snapshots, UpdateSink
from ..clients import cluster_client, command_client
from ..keys import ClusterKeyLayout, KeyLayout
from ..malformed import MalformedLog
from .commands import ClusterCommandStore, CommandStore
from .listener import Listener
from .markers import ListenerMarkers, Markers, ShardMarkers
from .recorder import HistoryRecorder
from .sessions import RedisSessionStore
from .shards import ShardListener

log = logging.getLogger("stockstream.redis")

KIND = "redis"
CLUSTER_KIND = "redis-cluster"


class RedisBroker(Broker):
    counts_reconnects = True
    kinds = (KIND, CLUSTER_KIND)

    def __init__(self, url: str, settings: Settings) -> None:
        self._url = url
        self._settings = settings
        self.malformed: MalformedLog = MalformedLog(log)
        instance = uuid.uuid4().hex
        self.store: CommandStore
        self.listener: Listener
        self.markers: Markers
        if settings.redis_cluster:
            self.kind = CLUSTER_KIND
            cluster_keys = ClusterKeyLayout()
            self.keys: KeyLayout = cluster_keys
            self.markers = ShardMarkers(cluster_keys, instance)
            self.store = ClusterCommandStore(cluster_client(url), cluster_keys, self.markers, settings, self.malformed)
            self.listener = ShardListener(url, settings, cluster_keys, self.markers, self.store, self.malformed)
        else:
            self.kind = KIND
            self.keys = KeyLayout()
            self.markers = ListenerMarkers(self.keys, instance)
            self.store = CommandStore(command_client(url), self.keys, self.markers, settings, self.malformed)
            self.listener = Listener(url, settings, self.keys, self.markers, self.store, self.malformed)
        self.store.on_read = self.listener.note_read
        self.store.on_first_update = self.listener.heard_first_update
        self.sessions = RedisSessionStore(self.store.client, self.keys)
        # Serving instances also keep the history of third-party publishers.
        self.recorder: HistoryRecorder | None = None

    @property
    def ready(self) -> bool:
        return self.listener.ready

    @property
    def reconnects(self) -> int:
        return self.listener.reconnects

    @reconnects.setter
    def reconnects(self, count: int) -> None:
        # Broker's figure is a plain attribute; here the listener keeps it.
        self.listener.reconnects = count

    async def start(self, sink: UpdateSink) -> None:
        self.listener.start(sink)
        # The history recorder listens with PSUBSCRIBE, which sees no sharded
        # messages: third-party updates in cluster mode are live and in the
        # snapshot, but not recorded into history.
        if self._settings.history_max_entries and not self.keys.cluster:
            self.recorder = HistoryRecorder(self._url, self._settings, self.keys)
            self.recorder.start()
            self.store.records_third_party = True

    async def close(self) -> None:
        if self.recorder is not None:
            await self.recorder.close()
            self.recorder = None
        await self.listener.close()
        self.markers.fail_all("redis broker closed")
        await self.store.aclose()

    async def subscribe(self, symbols: Iterable[str]) -> None:
        await self.listener.subscribe(symbols)

    async def unsubscribe(self, symbols: Iterable[str]) -> None:
        await self.listener.unsubscribe(symbols)

    async def subscribe_all(self) -> None:
        await self.listener.subscribe_all()

    async def unsubscribe_all(self) -> None:
        await self.listener.unsubscribe_all()

    async def symbols_with_price(self, limit: int) -> list[str]:
        return await self.store.symbols_with_price(limit)

    async def publish(self, update: CheckedUpdate, *, dedupe: tuple[str, int] | None = None) -> Update | None:
        return await self.store.publish(update, dedupe=dedupe)

    async def snapshots(self, symbols: list[str]) -> dict[str, Update | None]:
        return await self.store.snapshots(symbols)

    async def snapshots_at(self, symbols: list[str]) -> Snapshots:
        return await self.store.snapshots_at(symbols)

    async def history(
        self, symbol: str, start_ms: int | None = None, end_ms: int | None = None, limit: int = 1000
    ) -> list[Update]:
        return await self.store.history(symbol, start_ms, end_ms, limit)

    async def replay_at(
        self, symbol: str, since_ms: int | None = None, since_seq: int | None = None, limit: int = 10000
    ) -> Replay:
        return await self.store.replay_at(symbol, since_ms, since_seq, limit)

    async def replay_after_update(self, symbol: str, timestamp: int, digest: str, limit: int = 10000) -> Replay:
        return await self.store.replay_after_update(symbol, timestamp, digest, limit)
