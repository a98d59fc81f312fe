"""OHLC candles built from stored price updates.

Buckets are aligned to the Unix epoch in UTC (a `1d` candle starts at
00:00 UTC) and keyed by each update's `timestamp`; within a bucket, updates
count in stored (publish) order, so `open` is the first one published and
`close` the last. Buckets without updates are left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, NamedTuple

import orjson

from .updates import Update

# Updates read for one request at most; a range holding more is paged.
MAX_SCANNED_UPDATES = 10_000

INTERVALS_MS = {
    "1s": 1_000,
    "1m": 60_000,
    "5m": 300_000,
    "15m": 900_000,
    "1h": 3_600_000,
    "1d": 86_400_000,
}
# The intervals clients may follow live (subscribeCandles): a day's candle
# would start from a day of history.
LIVE_INTERVALS_MS = {name: INTERVALS_MS[name] for name in ("1s", "1m", "5m", "1h")}


class Tick(NamedTuple):
    timestamp: int
    price: float
    volume: int | float | None


@dataclass
class Candle:
    start: int
    open: float
    high: float
    low: float
    close: float
    count: int
    volume: int | float | None = None

    def add(self, tick: Tick) -> None:
        self.high = max(self.high, tick.price)
        self.low = min(self.low, tick.price)
        self.close = tick.price
        self.count += 1
        if tick.volume is not None:
            self.volume = tick.volume if self.volume is None else self.volume + tick.volume

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "start": self.start,
            "open": self.open,
            "high": self.high,
            "low": self.low,
            "close": self.close,
            "count": self.count,
        }
        if self.volume is not None:
            body["volume"] = self.volume
        return body


@dataclass
class CandlePage:
    """The candles of one request. When the range held more updates than were
    read, only the newest part is covered: `next_to` is where the earlier
    candles end (repeat the request with `to=next_to`), and `partial` says the
    oldest candle returned lacks some of its updates (one bucket alone held
    more than can be read at once)."""

    candles: list[Candle]
    next_to: int | None = None
    partial: bool = False


def volume_of(update: Update) -> int | float | None:
    """The update's `volume` when it carries a usable one (a finite, non-negative number)."""
    if b'"volume"' not in update.raw:
        return None  # skip parsing the common case of no volume at all
    volume = orjson.loads(update.raw).get("volume")
    if isinstance(volume, bool) or not isinstance(volume, (int, float)):
        return None
    if not math.isfinite(volume) or volume < 0:
        return None
    return volume


def ticks_of(updates: Iterable[Update]) -> list[Tick]:
    return [Tick(u.timestamp, u.price, volume_of(u)) for u in updates]


def bucket_start(timestamp: int, interval_ms: int) -> int:
    return timestamp - timestamp % interval_ms


def build_candles(ticks: Iterable[Tick], interval_ms: int) -> list[Candle]:
    """Candles of the ticks (in publish order), oldest bucket first."""
    buckets: dict[int, Candle] = {}
    for tick in ticks:
        start = bucket_start(tick.timestamp, interval_ms)
        candle = buckets.get(start)
        if candle is None:
            buckets[start] = Candle(start, tick.price, tick.price, tick.price, tick.price, 1, tick.volume)
        else:
            candle.add(tick)
    return [buckets[start] for start in sorted(buckets)]


def candle_page(ticks: list[Tick], interval_ms: int, truncated: bool) -> CandlePage:
    """Candles of the newest updates of a range; `truncated` when older ones
    in the range were not read, so that the oldest bucket may be incomplete."""
    candles = build_candles(ticks, interval_ms)
    if not truncated or not candles:
        return CandlePage(candles)
    oldest = candles[0]
    if len(candles) > 1:
        # Leave the incomplete bucket to the next page, which reads it whole.
        return CandlePage(candles[1:], next_to=oldest.start + interval_ms - 1)
    return CandlePage(candles, next_to=oldest.start - 1, partial=True)
