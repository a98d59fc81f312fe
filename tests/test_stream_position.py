"""A broker's read is placed exactly in the stream its listener receives (real Redis)."""
from __future__ import annotations

import asyncio

from stockstream.broker.redis import RedisBroker
from stockstream.config import Settings
from stockstream.updates import Update


class Recorder:
    """An UpdateSink numbering updates like the hub does."""

    def __init__(self) -> None:
        self.position = 0
        self.received: list[Update] = []
        self.ready = asyncio.Event()

    def on_update(self, update: Update) -> None:
        self.position += 1
        update.pos = self.position
        self.received.append(update)

    def on_resync(self, snapshots: dict[str, Update | None]) -> None:
        pass

    def on_state(self, ready: bool) -> None:
        if ready:
            self.ready.set()

    def mark(self) -> int:
        return self.position


async def test_reads_under_a_running_stream_sit_exactly_at_their_position(redis_url: str) -> None:
    """Updates received at or before a read's position are the ones it covers (the snapshot
    is the last of them), every later one is newer: for snapshots and replays alike."""
    settings = Settings.from_env({"REDIS_URL": redis_url})
    listener, publisher = RedisBroker(redis_url, settings), RedisBroker(redis_url, settings)
    sink = Recorder()
    await listener.start(sink)
    try:
        await asyncio.wait_for(sink.ready.wait(), 10)
        await listener.subscribe(["POSA"])
        stop = asyncio.Event()

        async def publish() -> None:
            while not stop.is_set():
                await publisher.publish({"symbol": "POSA", "price": 1.0, "timestamp": 1000})

        task = asyncio.create_task(publish())
        reads = []
        try:
            for _ in range(40):
                reads.append(("snapshot", await listener.snapshots_at(["POSA"])))
                reads.append(("replay", await listener.replay_at("POSA", since_seq=0)))
        finally:
            stop.set()
            await task
        checked = 0
        for kind, read in reads:
            covered = [u.seq for u in sink.received if u.pos <= read.position]
            if kind == "snapshot":
                snapshot = read.snapshots["POSA"]
                held = snapshot.seq if snapshot is not None else None
            else:
                if not read.complete:
                    continue  # history trimmed: the caller reads the snapshot instead
                held = read.updates[-1].seq if read.updates else None
            assert (covered[-1] if covered else None) == held, \
                f"{kind} read at position {read.position}: last update received by then {covered[-1:]}, read holds {held}"
            checked += bool(covered)
        assert checked > 20, "the stream was not running while reading"
    finally:
        await listener.close()
        await publisher.close()
