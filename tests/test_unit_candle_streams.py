"""Live candles without servers: the builder's buckets and closing, and a
stream's start from history, conflation, boundary close and sharing
(embedded backend, the real Hub)."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from stockstream.broker.memory import MemoryBroker
from stockstream.candle_streams import (
    CLOSE_GRACE_MS,
    CandleBuilder,
    CandleStreams,
    candle_body,
)
from stockstream.candles import Tick, bucket_start, build_candles
from stockstream.config import Settings
from stockstream.hub import Hub
from stockstream.publisher import Publisher
from stockstream.shared_events import SharedEvent
from stockstream.updates import Update, encode_update
from tests.support.waiting import PROMPT, Inbox, now_ms

SECOND = 1_000
HOUR = 3_600_000


def update(timestamp: int, price: float, seq: int | None = None, **extra: Any) -> Update:
    body = {"symbol": "AAA", "price": price, "timestamp": timestamp, **extra}
    return Update("AAA", price, timestamp, seq, encode_update(body, seq))


def api_dict(body: dict[str, Any]) -> dict[str, Any]:
    """A candle event's object as /api/candles writes the same candle."""
    out = {k: body[k] for k in ("start", "open", "high", "low", "close", "count")}
    if body["volume"] is not None:
        out["volume"] = body["volume"]
    return out


# -- the builder ------------------------------------------------------------------------


def test_an_update_of_the_next_period_closes_the_candle_at_the_boundary() -> None:
    """Bucket boundaries are those of /api/candles: start <= t < start + interval."""
    builder = CandleBuilder(SECOND)
    base = 1_700_000_000_000
    assert builder.add(update(base, 10.0, 1)) == (None, True)
    assert builder.add(update(base + 999, 12.0, 2)) == (None, True)
    closed, changed = builder.add(update(base + 1_000, 11.0, 3))
    assert changed and closed is not None
    assert (closed.start, closed.open, closed.high, closed.close, closed.count) == (base, 10.0, 12.0, 12.0, 2)
    assert builder.candle is not None and builder.candle.start == base + 1_000


def test_late_and_repeated_updates_do_not_count() -> None:
    """An update of a closed period, or the one counted last sent again (as a
    resync re-sends it), leaves the candle as it was; a backend that numbers
    from seq 1 again is followed."""
    builder = CandleBuilder(SECOND)
    base = 1_700_000_000_000
    builder.add(update(base + 10, 1.0, 41))
    builder.add(update(base + 1_010, 2.0, 42))  # closes `base`
    assert builder.add(update(base + 500, 9.0, 43)) == (None, False)  # late
    assert builder.add(update(base + 1_010, 2.0, 42)) == (None, False)  # the last one, again
    third_party = update(base + 1_020, 3.0)
    assert builder.add(third_party) == (None, True)
    assert builder.add(update(base + 1_020, 3.0)) == (None, False)  # byte-identical re-send
    assert builder.add(update(base + 1_030, 4.0, 1)) == (None, True)  # seq restarted
    assert builder.candle is not None and (builder.candle.count, builder.candle.close) == (3, 4.0)


def test_close_due_waits_for_the_grace_after_the_boundary() -> None:
    """A candle nobody closes ends CLOSE_GRACE_MS after its period, not before."""
    builder = CandleBuilder(SECOND)
    builder.add(update(5_000, 1.0, 1))
    assert builder.close_due(6_000 + CLOSE_GRACE_MS - 1) is None
    closed = builder.close_due(6_000 + CLOSE_GRACE_MS)
    assert closed is not None and closed.start == 5_000 and builder.candle is None
    assert builder.add(update(5_900, 2.0, 2)) == (None, False), "an update of the closed period is late"


def test_builder_agrees_with_api_candles_for_every_closed_period() -> None:
    """Fed the same updates in order, each closed live candle equals the
    /api/candles candle of its period (open/high/low/close/count/volume)."""
    rng = random.Random(7)
    base = 1_700_000_000_000
    updates, t = [], base
    for seq in range(1, 400):
        t += rng.randint(0, 400)
        extra = {"volume": rng.choice([1, 2.5, 10])} if rng.random() < 0.6 else {}
        updates.append(update(t, round(rng.uniform(90, 110), 2), seq, **extra))
    builder = CandleBuilder(SECOND)
    closed = []
    for each in updates:
        done, _ = builder.add(each)
        if done is not None:
            closed.append(candle_body("AAA", "1s", done, True))
    expected = build_candles([Tick(u.timestamp, u.price, orjson.loads(u.raw).get("volume")) for u in updates], SECOND)
    assert len(closed) == len(expected) - 1 > 50
    assert [api_dict(c) for c in closed] == [c.to_dict() for c in expected[:-1]]


# -- streams on the real hub ----------------------------------------------------------------


class Member:
    """Records every candle event with the loop time it arrived."""

    def __init__(self) -> None:
        self.events: Inbox[tuple[float, dict[str, Any], SharedEvent]] = Inbox("candle events")

    def deliver_event(self, event: SharedEvent) -> None:
        self.events.put((asyncio.get_running_loop().time(), orjson.loads(event.body), event))

    def bodies(self) -> list[dict[str, Any]]:
        return [body for _, body, _ in self.events.items]


@pytest.fixture
async def backend() -> AsyncIterator[tuple[MemoryBroker, Hub, Publisher]]:
    settings = Settings.from_env({})
    broker = MemoryBroker(settings)
    hub = Hub(broker)
    await broker.start(hub)
    try:
        yield broker, hub, Publisher(broker)
    finally:
        await broker.close()


async def test_a_stream_starts_from_the_current_periods_history(backend: Any) -> None:
    """The first candle a member gets is built from what history holds of the
    current period (the previous period's updates left out), as /api/candles;
    a live update of the previous period makes no candle."""
    broker, hub, publisher = backend
    start = bucket_start(now_ms(), HOUR)
    await publisher.publish("AAA", 5.0, timestamp=start - 10)  # the previous hour
    for i, price in enumerate([10.0, 14.0, 9.0, 11.0]):
        await publisher.publish("AAA", price, timestamp=start + i, volume=10)
    streams = CandleStreams(hub, broker, 0)
    stream = streams.acquire("AAA", "1h")
    await asyncio.wait_for(stream.loading, PROMPT)
    member = Member()
    stream.add(member)
    ((_, snapshot, _),) = member.events.items
    stored = await broker.history("AAA", start, None, 100)
    expected = build_candles([Tick(u.timestamp, u.price, 10) for u in stored], HOUR)[-1]
    assert api_dict(snapshot) == expected.to_dict() and snapshot["closed"] is False
    assert snapshot == {
        "symbol": "AAA",
        "interval": "1h",
        "start": start,
        "open": 10.0,
        "high": 14.0,
        "low": 9.0,
        "close": 11.0,
        "volume": 40,
        "count": 4,
        "closed": False,
    }
    await publisher.publish("AAA", 99.0, timestamp=start - 5)  # late: the previous hour
    await publisher.publish("AAA", 20.0, timestamp=start + 5)
    _, live, _ = await member.events.next(lambda e: e[1]["count"] == 5)
    assert (live["high"], live["close"], live["volume"]) == (20.0, 20.0, 40)
    assert [body["start"] for body in member.bodies()] == [start, start], "a candle of the previous hour"
    await streams.release(stream)
    assert "AAA" not in hub.rooms, "the released stream still holds its hub room"


async def test_changes_are_conflated_to_one_event_per_min_interval(backend: Any) -> None:
    """With a minimum interval of 150 ms, 40 updates in about 0.4 s give a few
    events, never two within 150 ms, the last one with the final state."""
    broker, hub, publisher = backend
    streams = CandleStreams(hub, broker, 150)
    stream = streams.acquire("AAA", "1h")
    await asyncio.wait_for(stream.loading, PROMPT)
    member = Member()
    stream.add(member)
    start = bucket_start(now_ms(), HOUR)
    for i in range(40):
        await publisher.publish("AAA", 100.0 + i, timestamp=start + i)
        await asyncio.sleep(0.01)
    await member.events.wait_for(lambda items: items and items[-1][1]["count"] == 40, what="the final state")
    times = [t for t, _, _ in member.events.items]
    assert 2 <= len(times) <= 8, times
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.14, f"two events within the minimum interval: {gaps}"
    assert member.bodies()[-1]["close"] == 139.0 and member.bodies()[-1]["high"] == 139.0
    await streams.release(stream)


async def test_candle_closes_at_the_boundary_without_an_update(backend: Any) -> None:
    """A 1s candle with updates is sent once more with closed: true just after its
    period ends, though no update follows; each member gets the same event object."""
    broker, hub, publisher = backend
    streams = CandleStreams(hub, broker, 0)
    first, second = streams.acquire("AAA", "1s"), streams.acquire("AAA", "1s")
    assert first is second and len(streams) == 1, "one stream per symbol and interval"
    await asyncio.wait_for(first.loading, PROMPT)
    members = [Member(), Member()]
    for member in members:
        first.add(member)
    published = await publisher.publish("AAA", 42.0)
    start = bucket_start(published["timestamp"], SECOND)
    _, closed, event = await members[0].events.next(lambda e: e[1]["closed"], timeout=PROMPT)
    assert closed["start"] == start and closed["count"] == 1 and closed["close"] == 42.0
    assert now_ms() >= start + SECOND, "closed before its period ended"
    _, _, other = await members[1].events.next(lambda e: e[1]["closed"])
    assert other is event, "the event was built twice"
    assert sum(1 for body in members[0].bodies() if body["closed"]) == 1
    for _ in range(2):
        await streams.release(first)
    assert len(streams) == 0 and "AAA" not in hub.rooms
