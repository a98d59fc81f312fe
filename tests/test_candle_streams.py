"""Live candles (`subscribeCandles`) end to end, with python-socketio,
socket.io-client (Node) and raw /live-price clients, on one instance and on two
sharing a Redis: the first candle equals /api/candles', changes are conflated,
each period ends with one `closed` candle, `unsubscribeCandles` stops them, and
bad requests get typed errors."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.candle_clients import CANDLE_KEYS, Market, as_api_candle
from tests.support.clients import ClientPool
from tests.support.http_api import get_json
from tests.support.inprocess import Stack, atomic_publisher, inprocess_stack
from tests.support.protocol import assert_error_ack, assert_error_object, failed_entries
from tests.support.proxy import switch_proxy
from tests.support.waiting import PROMPT, canonical, eventually, now_ms, period_with_room

HOUR = 3_600_000
SECOND = 1_000
MIN_INTERVAL_MS = 200


async def open_market(clients: ClientPool, url: str, kind: str, **kwargs: Any) -> Market:
    if kind == "ws":
        return Market(await clients.ws(url, **kwargs))
    return Market(await clients.sio(url, kind=kind, **kwargs))


def same(a: Any, b: Any) -> bool:
    """Equal as JSON, whichever side a JavaScript client parsed (189.0 is 189 there)."""
    return canonical(a, js_numbers=True) == canonical(b, js_numbers=True)


async def api_candle(url: str, symbol: str, interval: str, start: int) -> dict[str, Any] | None:
    status, body = await get_json(f"{url}/api/candles/{symbol}?interval={interval}&from={start}")
    assert status == 200, body
    return next((c for c in body["candles"] if c["start"] == start), None)


@contextlib.asynccontextmanager
async def ticking(publish: Callable[[int], Awaitable[Any]], every: float = 0.03) -> AsyncIterator[list[int]]:
    """Publish update n = 1, 2, ... every `every` seconds while the block runs."""
    published: list[int] = []
    stop = asyncio.Event()

    async def run() -> None:
        while not stop.is_set():
            published.append(len(published) + 1)
            await publish(published[-1])
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), every)

    task = asyncio.create_task(run())
    try:
        yield published
    finally:
        stop.set()
        await task


# -- one instance ---------------------------------------------------------------------------


async def test_first_candle_equals_api_candles_then_it_moves(
    stack: Stack, clients: ClientPool, client_kind: str
) -> None:
    """subscribeCandles answers like subscribe, then sends the current candle,
    equal to /api/candles' candle of the period, then the candle with each new
    update (volume summed as /api/candles does), from both publisher kinds."""
    start = await period_with_room(HOUR, 30 * SECOND)
    for i, (price, volume) in enumerate([(10.0, 5), (13.5, None), (9.25, 7)]):
        await stack.publish("CNDL", price, timestamp=start + i, **({"volume": volume} if volume else {}))
    # A third-party SET + PUBLISH, without seq (on a Redis Cluster such updates
    # are not recorded into history, so /api/candles would not count it).
    third_party = stack.raw is not None and stack.backend != "cluster"
    if third_party:
        await stack.raw.publish("CNDL", 11.0, timestamp=start + 3)
    count = 4 if third_party else 3
    expected = await eventually(lambda: _api_with_count(stack.url, start, count), what="history of the period")
    market = await open_market(clients, stack.url, client_kind)
    ack = await market.request("subscribeCandles", {"symbols": ["cndl"], "interval": "1h"})
    assert ack.get("ok") is True and ack["added"] == ["CNDL"] and ack["symbols"] == ["CNDL"], ack
    assert ack["failed"] == [] and ack["interval"] == "1h", ack
    first = await market.wait_candle(lambda c: True, what="the current candle")
    assert set(first) == CANDLE_KEYS and first["symbol"] == "CNDL" and first["interval"] == "1h", first
    assert first["closed"] is False and same(as_api_candle(first), expected), (first, expected)

    await stack.publish("CNDL", 20.0, timestamp=start + 10, volume=3)
    moved = await market.wait_candle(lambda c: c["count"] == count + 1, what="the candle with the new update")
    assert moved["high"] == 20.0 and moved["close"] == 20.0 and moved["volume"] == 15 and not moved["closed"]
    latest = await api_candle(stack.url, "CNDL", "1h", start)
    assert same(as_api_candle(moved), latest), (moved, latest)


async def _api_with_count(url: str, start: int, count: int) -> dict[str, Any] | None:
    candle = await api_candle(url, "CNDL", "1h", start)
    return candle if candle is not None and candle["count"] == count else None


@pytest.mark.parametrize("client_kind", ["python", "ws"], indirect=True)
async def test_updates_are_conflated_and_each_period_closes(clients: ClientPool, client_kind: str) -> None:
    """At 1s candles with updates every 30 ms and CANDLE_MIN_INTERVAL_MS=200, each
    period brings a handful of candles (not one per update), then exactly one
    closed candle equal to /api/candles'; the last period closes at its
    boundary although no update follows."""
    async with inprocess_stack("memory", candle_min_interval_ms=MIN_INTERVAL_MS) as stack:
        market = await open_market(clients, stack.url, client_kind)
        ack = await market.request("subscribeCandles", {"symbol": "TICK", "interval": "1s"})
        assert ack["added"] == ["TICK"], ack
        async with ticking(lambda n: stack.publish("TICK", 100 + n, n=n)) as published:
            await market.wait_events(
                "candle", lambda cs: sum(c["closed"] for c in cs) >= 2, timeout=PROMPT + 3, what="two closed candles"
            )
        last = max(published)
        final = await market.wait_candle(
            lambda c: c["closed"] and c["close"] == 100 + last, what="the closed candle of the last period"
        )
        assert now_ms() >= final["start"] + SECOND, "closed before its period ended"
        candles = market.candles()
        by_start: dict[int, list[dict]] = defaultdict(list)
        for candle in candles:
            by_start[candle["start"]].append(candle)
        assert sorted(by_start) == [c["start"] for c in candles if c["closed"]], "a period without one closed candle"
        for start, events in by_start.items():
            assert [e["closed"] for e in events] == [False] * (len(events) - 1) + [True], (start, events)
            # About 33 updates per period: without conflation as many events.
            assert len(events) <= SECOND // MIN_INTERVAL_MS + 3, f"{len(events)} events in one period: {events}"
            assert [e["count"] for e in events] == sorted(e["count"] for e in events)
            expected = await api_candle(stack.url, "TICK", "1s", start)
            assert same(as_api_candle(events[-1]), expected), (events[-1], expected)
        await asyncio.sleep(0.3)  # nothing more comes once the period closed without updates
        assert market.candles() == candles


async def test_unsubscribe_candles_stops_them(stack: Stack, clients: ClientPool, client_kind: str) -> None:
    """After the unsubscribeCandles ack no candle of that stream arrives, while
    the other interval of the same symbol and the price stream go on."""
    market = await open_market(clients, stack.url, client_kind)
    await market.request("subscribe", {"symbols": ["UNS"]})
    for interval in ("1h", "5m"):
        ack = await market.request("subscribeCandles", {"symbols": ["UNS"], "interval": interval})
        assert ack["added"] == ["UNS"], ack
    await stack.publish("UNS", 1.0)
    await market.wait_candle(lambda c: c["interval"] == "1h" and c["count"] >= 1)
    ack = await market.request("unsubscribeCandles", {"symbol": "uns", "interval": "1h"})
    assert ack == {**ack, "ok": True, "removed": ["UNS"], "symbols": [], "interval": "1h", "failed": []}, ack
    mark = market.marks()
    await stack.publish("UNS", 2.0)
    await market.wait_candle(
        lambda c: c["interval"] == "5m" and c["close"] == 2.0, since=mark, what="the 5m candle that is still followed"
    )
    await market.client.expect_update(lambda u: u.get("price") == 2.0)
    assert [c for c in market.candles(mark) if c["interval"] == "1h"] == [], "a 1h candle after the unsubscribe ack"
    again = await market.request("unsubscribeCandles", {"symbols": ["UNS"], "interval": "1h"})
    assert again["removed"] == [] and again["ok"] is True, again


async def test_one_candle_per_symbol_and_interval_whatever_the_clients(stack: Stack, clients: ClientPool) -> None:
    """Three clients (both transports) following one symbol at one interval share
    one candle stream; each change is one event per client; the stream goes when
    the last client leaves (also by disconnecting), as /metrics shows."""
    markets = [await open_market(clients, stack.url, kind) for kind in ("python", "ws", "python")]
    for market in markets:
        ack = await market.request("subscribeCandles", {"symbol": "SHR", "interval": "1h"})
        assert ack["added"] == ["SHR"], ack
    before = await candle_metrics(stack.url)
    assert before["stockstream_candle_streams_active"] == 1, before
    await stack.publish("SHR", 3.0)
    for market in markets:
        await market.wait_candle(lambda c: c["close"] == 3.0)
    after = await candle_metrics(stack.url)
    assert after["stockstream_candle_events_total"] == before["stockstream_candle_events_total"] + 3, after
    await markets[0].request("unsubscribeCandles", {"symbol": "SHR", "interval": "1h"})
    await markets[1].client.close()
    assert (await candle_metrics(stack.url))["stockstream_candle_streams_active"] == 1
    await markets[2].client.close()
    await eventually(lambda: _no_streams(stack.url), what="the stream to go with its last client")


async def candle_metrics(url: str) -> dict[str, float]:
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as resp:
        text = await resp.text()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("stockstream_candle_")
    }


async def _no_streams(url: str) -> bool:
    return (await candle_metrics(url))["stockstream_candle_streams_active"] == 0


async def test_bad_candle_requests_get_typed_errors(clients: ClientPool, client_kind: str) -> None:
    """An unknown interval fails the symbols (invalid_interval) and subscribes
    nothing; wrong shapes are invalid_payload; more streams than MAX_SUBSCRIPTIONS
    is too_many_subscriptions and leaves the set as it was."""
    async with inprocess_stack("memory", max_subscriptions=3) as stack:
        market = await open_market(clients, stack.url, client_kind)
        ack = await market.request("subscribeCandles", {"symbols": ["AAA", "not a symbol"], "interval": "2m"})
        assert ack.get("ok") is True and ack["added"] == [] and ack["symbols"] == [], ack
        assert ack["failed"] == (failed_entries(["not a symbol"]) + failed_entries(["AAA"], "invalid_interval")), ack
        bad_forms: list[Any] = [
            {"symbols": ["AAA"]},
            {"symbols": "AAA", "interval": "1m"},
            {"symbols": [1], "interval": "1m"},
            {"symbol": "AAA", "interval": 60},
            {"symbols": [], "interval": "1m"},
        ]
        if not market.ws:
            bad_forms += ["AAA", ["AAA"], None]
        for payload in bad_forms:
            assert_error(market, await market.request("subscribeCandles", payload), "invalid_payload")
        ack = await market.request("subscribeCandles", {"symbols": ["A1", "A2", "A3"], "interval": "1m"})
        assert ack["added"] == ["A1", "A2", "A3"], ack
        for payload in ({"symbol": "A4", "interval": "1s"}, {"symbols": ["B1", "B2", "B3", "B4"], "interval": "1m"}):
            assert_error(market, await market.request("subscribeCandles", payload), "too_many_subscriptions")
        ack = await market.request("unsubscribeCandles", {"symbols": ["A1"], "interval": "1x"})
        assert ack["removed"] == [] and ack["failed"] == failed_entries(["A1"], "invalid_interval"), ack
        ack = await market.request("unsubscribeCandles", {"symbols": ["A1"], "interval": "1m"})
        assert ack["symbols"] == ["A2", "A3"], ack
        # Without an ack callback, the failed symbols come as an `error` event
        # (a /live-price reply frame always lists them in `failed`).
        await market.send("subscribeCandles", {"symbols": ["ZZZ"], "interval": "7m"})
        if market.ws:
            reply = await market.client.replies.wait_for(
                lambda rs: next((r for r in rs if r.get("type") == "candlesSubscribed" and "id" not in r), None)
            )
            assert reply["failed"] == failed_entries(["ZZZ"], "invalid_interval"), reply
        else:
            error = (await market.wait_events("error", lambda es: es, what="an error event"))[-1]
            assert_error_object(error, "invalid_interval")
            assert error["symbols"] == ["ZZZ"], error


def assert_error(market: Market, answer: dict[str, Any], code: str) -> None:
    if market.ws:
        assert answer.get("type") == "error", answer
        assert_error_object(answer, code)
    else:
        assert_error_ack(answer, code)


# -- an interrupted feed ------------------------------------------------------------------------


@pytest.mark.slow
async def test_candle_is_read_again_after_the_feed_was_interrupted(
    redis_server: Any, redis_url: str, clients: ClientPool
) -> None:
    """Updates published while this instance's connection to Redis is cut are in
    the current candle once it is back: the candle of the period is read again
    from history, and equals /api/candles'."""
    await period_with_room(HOUR, 30 * SECOND)  # every update below falls in one 1h candle
    async with switch_proxy(redis_server.port) as proxy:
        async with (
            inprocess_stack("redis", f"redis://127.0.0.1:{proxy.port}/0") as stack,
            atomic_publisher(redis_url) as publish,
        ):
            market = await open_market(clients, stack.url, "python")
            ack = await market.request("subscribeCandles", {"symbol": "GAP", "interval": "1h"})
            assert ack["added"] == ["GAP"], ack
            first = await publish("GAP", 10.0, volume=1)
            start = first["timestamp"] // HOUR * HOUR
            await publish("GAP", 11.0, volume=1)
            await market.wait_candle(lambda c: c["count"] == 2)
            proxy.refusing = True
            proxy.cut()
            await eventually(lambda: not stack.broker.ready, what="the instance to notice the cut")
            for price in (15.0, 9.0, 12.0):  # never reach this instance's listener
                await publish("GAP", price, volume=2)
            proxy.refusing = False
            candle = await market.wait_candle(
                lambda c: c["count"] == 5,
                timeout=PROMPT * 3,
                what="the candle with the updates published during the cut",
            )
            assert (candle["high"], candle["low"], candle["close"], candle["volume"]) == (15.0, 9.0, 12.0, 8), candle
            assert same(as_api_candle(candle), await api_candle(stack.url, "GAP", "1h", start))
            await publish("GAP", 13.0, volume=1)
            moved = await market.wait_candle(lambda c: c["count"] == 6)
            assert moved["close"] == 13.0 and moved["volume"] == 9, moved


# -- two instances ----------------------------------------------------------------------------


@pytest.mark.slow
async def test_two_instances_send_identical_candles(
    servers: Any, redis_url: str, raw_publisher: Any, clients: ClientPool
) -> None:
    """Clients of two instances sharing a Redis, fed by both publisher kinds, get
    the same closed candles, equal to /api/candles', and the same first candle."""
    instances = await servers.start_many(2, redis_url=redis_url, env={"CANDLE_MIN_INTERVAL_MS": "100"})
    markets = [Market(await clients.sio(instances[0].url)), Market(await clients.ws(instances[1].url))]
    async with atomic_publisher(redis_url) as publish:

        async def one(n: int) -> Any:
            if n % 3 == 0:
                return await raw_publisher.publish("TWO", 50 + n / 8, n=n)
            return await publish("TWO", 50 + n / 8, n=n, volume=n)

        await one(1)
        for market in markets:
            ack = await market.request("subscribeCandles", {"symbols": ["TWO"], "interval": "1s"})
            assert ack["added"] == ["TWO"], ack
        async with ticking(one, every=0.04):
            for market in markets:
                await market.wait_events(
                    "candle",
                    lambda cs: sum(c["closed"] for c in cs) >= 2,
                    timeout=PROMPT + 3,
                    what="two closed candles",
                )
    closed = [{c["start"]: c for c in m.candles() if c["closed"]} for m in markets]
    await eventually(
        lambda: all(max(closed[0]) in {c["start"] for c in m.candles() if c["closed"]} for m in markets),
        what="the last period closed on both",
    )
    closed = [{c["start"]: c for c in m.candles() if c["closed"]} for m in markets]
    common = sorted(set(closed[0]) & set(closed[1]))
    assert len(common) >= 2, closed
    for start in common:
        assert closed[0][start] == closed[1][start], (closed[0][start], closed[1][start])
        expected = await api_candle(instances[0].url, "TWO", "1s", start)
        assert as_api_candle(closed[0][start]) == expected, (closed[0][start], expected)
