"""Candles: the bucketing function and the HTTP endpoint, with its pages."""

from __future__ import annotations

from typing import Any

import pytest

from stockstream.candles import Tick, build_candles, candle_page
from tests.support.http_api import get_json
from tests.support.waiting import now_ms

MINUTE = 60_000
HOUR = 3_600_000


# -- candles: the pure function ---------------------------------------------------------


def test_candles_bucket_open_high_low_close_count_volume() -> None:
    base = 1_700_000_040_000  # a minute boundary
    ticks = [
        Tick(base + 1_000, 10.0, 100),
        Tick(base + 20_000, 12.5, None),
        Tick(base + 59_999, 9.0, 50),
        Tick(base + MINUTE, 11.0, None),
        Tick(base + 3 * MINUTE + 5, 11.5, None),
    ]
    candles = [c.to_dict() for c in build_candles(ticks, MINUTE)]
    assert candles == [
        {"start": base, "open": 10.0, "high": 12.5, "low": 9.0, "close": 9.0, "count": 3, "volume": 150},
        {"start": base + MINUTE, "open": 11.0, "high": 11.0, "low": 11.0, "close": 11.0, "count": 1},
        {"start": base + 3 * MINUTE, "open": 11.5, "high": 11.5, "low": 11.5, "close": 11.5, "count": 1},
    ]


def test_candles_follow_publish_order_within_a_bucket() -> None:
    # A publisher whose clock stepped back: open/close follow publish order.
    ticks = [Tick(5_000, 1.0, None), Tick(1_000, 2.0, None), Tick(3_000, 3.0, None)]
    (candle,) = build_candles(ticks, 60_000)
    assert (candle.open, candle.close, candle.high, candle.low) == (1.0, 3.0, 3.0, 1.0)


def test_candle_page_leaves_the_incomplete_oldest_bucket_to_the_next_page() -> None:
    ticks = [Tick(MINUTE + 10, 1.0, None), Tick(2 * MINUTE, 2.0, None), Tick(3 * MINUTE, 3.0, None)]
    page = candle_page(ticks, MINUTE, truncated=True)
    assert [c.start for c in page.candles] == [2 * MINUTE, 3 * MINUTE]
    assert page.next_to == 2 * MINUTE - 1 and not page.partial
    whole = candle_page(ticks, MINUTE, truncated=False)
    assert len(whole.candles) == 3 and whole.next_to is None


def test_candle_page_marks_one_overfull_bucket_partial() -> None:
    page = candle_page([Tick(MINUTE + i, float(i), None) for i in range(5)], MINUTE, truncated=True)
    assert len(page.candles) == 1 and page.partial and page.next_to == MINUTE - 1


# -- the endpoint ---------------------------------------------------------------------------


async def test_candles_endpoint(stack: Any) -> None:
    base = (now_ms() // HOUR - 2) * HOUR  # aligned for every interval below a day
    prices = [
        (base + 1_000, 10.0, 100),
        (base + 30_000, 13.0, 200),
        (base + 59_000, 11.0, 300),
        (base + MINUTE + 5, 12.0, 100),
        (base + 3 * MINUTE, 9.5, 100),
    ]
    for timestamp, price, volume in prices:
        await stack.publish("CDL", price, timestamp=timestamp, volume=volume)

    status, body = await get_json(f"{stack.url}/api/candles/cdl?interval=1m")
    assert status == 200, body
    assert body["symbol"] == "CDL" and body["interval"] == "1m" and body["next"] is None
    assert body["updates"] == 5 and body["partial"] is False
    assert body["candles"] == [
        {"start": base, "open": 10.0, "high": 13.0, "low": 10.0, "close": 11.0, "count": 3, "volume": 600},
        {"start": base + MINUTE, "open": 12.0, "high": 12.0, "low": 12.0, "close": 12.0, "count": 1, "volume": 100},
        {"start": base + 3 * MINUTE, "open": 9.5, "high": 9.5, "low": 9.5, "close": 9.5, "count": 1, "volume": 100},
    ]
    status, body = await get_json(
        f"{stack.url}/api/candles/CDL?interval=5m&from={base + 30_000}&to={base + MINUTE + 5}"
    )
    assert [(c["start"], c["open"], c["close"], c["count"]) for c in body["candles"]] == [(base, 13.0, 12.0, 3)]
    for interval in ("1s", "15m", "1h", "1d"):
        status, body = await get_json(f"{stack.url}/api/candles/CDL?interval={interval}")
        assert status == 200 and sum(c["count"] for c in body["candles"]) == 5


async def test_candles_of_a_large_range_come_in_pages(stack: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("stockstream.http.routes.MAX_SCANNED_UPDATES", 10)
    base = (now_ms() // MINUTE - 30) * MINUTE
    for i in range(34):  # 4 per minute over 9 minutes, minus the last two
        await stack.publish("PGE", 50 + i, timestamp=base + (i // 4) * MINUTE + (i % 4) * 1000)
    seen: dict[int, dict] = {}
    path = f"/api/candles/PGE?interval=1m&from={base}"
    for _ in range(20):
        status, body = await get_json(stack.url + path)
        assert status == 200 and body["limit"] == 10 and body["updates"] <= 10
        for candle in body["candles"]:
            assert candle["start"] not in seen, "a candle appeared on two pages"
            seen[candle["start"]] = candle
        if body["next"] is None:
            break
        path = f"/api/candles/PGE?interval=1m&from={base}&to={body['next']['to']}"
    assert sorted(seen) == [base + m * MINUTE for m in range(9)]
    assert all(c["count"] == 4 for s, c in seen.items() if s < base + 8 * MINUTE)
    assert seen[base]["open"] == 50 and seen[base]["close"] == 53
