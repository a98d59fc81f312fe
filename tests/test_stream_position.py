"""A broker's read is placed exactly in the stream its listener receives (real Redis)."""

from __future__ import annotations

import asyncio

from stockstream.broker.redis.broker import RedisBroker
from stockstream.config import Settings
from stockstream.updates import CheckedUpdate, Update
from tests.support.redis_cluster import RedisCluster
from tests.support.waiting import eventually


class Recorder:
    """An UpdateSink numbering updates like the hub does."""

    def __init__(self) -> None:
        self.position = 0
        self.received: list[Update] = []

    def on_update(self, update: Update) -> None:
        self.position += 1
        update.pos = self.position
        self.received.append(update)

    def on_resync(self, snapshots: dict[str, Update | None]) -> None:
        pass

    def on_resume(self, updates: dict[str, list[Update]]) -> None:
        pass

    def mark(self) -> int:
        return self.position


async def check_reads_sit_at_their_position(listener: RedisBroker, publisher: RedisBroker, symbols: list[str]) -> None:
    sink = Recorder()
    await listener.start(sink)
    try:
        await eventually(lambda: listener.ready, 10, "the listener to be subscribed")
        await listener.subscribe(symbols)
        stop = asyncio.Event()

        async def publish() -> None:
            while not stop.is_set():
                for symbol in symbols:
                    await publisher.publish(CheckedUpdate({"symbol": symbol, "price": 1.0, "timestamp": 1000}))

        task = asyncio.create_task(publish())
        reads = []
        try:
            for _ in range(40):
                snapshots = await listener.snapshots_at(symbols)
                for symbol in symbols:
                    snapshot = snapshots.snapshots[symbol]
                    reads.append(
                        (
                            "snapshot",
                            symbol,
                            snapshots.positions[symbol],
                            snapshot.seq if snapshot is not None else None,
                        )
                    )
                symbol = symbols[len(reads) % len(symbols)]
                replay = await listener.replay_at(symbol, since_seq=0)
                if replay.complete:  # else history was trimmed: the caller reads the snapshot instead
                    reads.append(
                        ("replay", symbol, replay.position, replay.updates[-1].seq if replay.updates else None)
                    )
        finally:
            stop.set()
            await task
        checked = 0
        for kind, symbol, position, held in reads:
            covered = [u.seq for u in sink.received if u.symbol == symbol and u.pos <= position]
            assert (covered[-1] if covered else None) == held, (
                f"{kind} of {symbol} read at position {position}: last update received by then {covered[-1:]}, read holds {held}"
            )
            checked += bool(covered)
        assert checked > 20 * len(symbols), "the stream was not running while reading"
    finally:
        await listener.close()
        await publisher.close()


async def test_reads_under_a_running_stream_sit_exactly_at_their_position(redis_url: str) -> None:
    """Updates received at or before a read's position are the ones it covers (the snapshot
    is the last of them), every later one is newer: for snapshots and replays alike."""
    settings = Settings.from_env({"REDIS_URL": redis_url})
    await check_reads_sit_at_their_position(
        RedisBroker(redis_url, settings), RedisBroker(redis_url, settings), ["POSA", "POSB"]
    )


async def test_cluster_reads_sit_exactly_at_their_symbols_positions(
    cluster_url: str, redis_cluster: RedisCluster
) -> None:
    """On a Redis Cluster, with symbols on different masters read together, each symbol's
    position orders that symbol's updates exactly: the updates of it received at or before
    the position are the ones its snapshot or replay covers, every later one is newer."""
    by_master: dict[int, str] = {}
    for n in range(200):
        symbol = f"POS{n}"
        by_master.setdefault(redis_cluster.owner_of(f"stock:{{{symbol}}}").port, symbol)
    symbols = sorted(by_master.values())
    assert len(symbols) >= 2, "the test cluster has one master"
    settings = Settings.from_env({"REDIS_URL": cluster_url, "REDIS_CLUSTER": "true"})
    await check_reads_sit_at_their_position(
        RedisBroker(cluster_url, settings), RedisBroker(cluster_url, settings), symbols
    )
