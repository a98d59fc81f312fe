"""Throttled subscriptions end to end: two instances on one Redis, every client kind.

A throttled client gets at most one update per symbol per period, always the
latest, the last of a burst always, never an older one after a newer.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from tests.support.market import (
    arrival_times,
    error_code,
    open_client,
    subscribe,
    two_instances,
    unsubscribe,
)
from tests.support.waiting import PROMPT

PERIOD_MS = 500
# Arrivals may bunch by this much on a loaded machine (the server spaces its emissions
# by the full period; the client's reading can lag behind one and not the next).
MARGIN_S = 0.25
BURST = 50
BURST_GAP_S = 0.03


async def burst(pair, publisher: str, symbol: str, first: int = 1) -> tuple[list[float], float]:
    """BURST increasing prices of `symbol`, BURST_GAP_S apart; the prices and how long it took."""
    prices = [float(first + i) for i in range(BURST)]
    started = time.monotonic()
    for price in prices:
        await pair.publish(publisher, symbol, price)
        await asyncio.sleep(BURST_GAP_S)
    return prices, time.monotonic() - started


def assert_throttled(prices: list[float], times: list[float], duration: float, last: float) -> None:
    """The bounds of one throttled stream: increasing, spaced, few, ending with `last`."""
    assert prices == sorted(set(prices)), f"older after newer, or repeated: {prices}"
    assert prices[-1] == last
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap >= PERIOD_MS / 1000 - MARGIN_S for gap in gaps), f"too close: {gaps}"
    # At most one per period over the burst, plus the leading and trailing edges.
    assert len(prices) <= duration / (PERIOD_MS / 1000) + 2, (len(prices), duration)


@pytest.mark.parametrize("publisher", ["ours", "raw"])
async def test_a_throttled_stream_keeps_its_bounds(redis_url, clients, client_kind, publisher):
    """Snapshot at once; then at most one update per period, spaced by the period, the
    latest each time and never older after newer, and the burst's last value arrives."""
    async with two_instances(redis_url) as pair:
        await pair.publish(publisher, "THR", 0.5)
        client = await open_client(clients, client_kind, pair.urls[1])
        times = arrival_times(client)
        ack = await subscribe(client, {"symbol": "THR", "throttle": PERIOD_MS})
        assert ack["ok"] is True and ack["added"] == ["THR"] and ack["throttle"] == PERIOD_MS, ack
        snapshot = await client.expect_update(timeout=PROMPT)
        assert snapshot["price"] == 0.5
        sent, duration = await burst(pair, publisher, "THR")
        await client.updates.wait_for(
            lambda items: items[-1]["price"] == sent[-1], PROMPT, "the burst's last price (trailing edge)"
        )
        live = client.updates.items[1:]
        assert_throttled([u["price"] for u in live], times[1:], duration, sent[-1])
        assert len(live) < BURST / 3


@pytest.mark.parametrize("cluster", [False, True], ids=["redis", "cluster"])
async def test_mixed_subscribers_of_one_symbol_each_get_their_promise(request, clients, cluster):
    """On one symbol and instance (on one Redis, and on a Redis Cluster): an unthrottled
    client gets every update once, in order; clients at two periods each get a throttled
    stream ending with the last."""
    url = request.getfixturevalue("cluster_url" if cluster else "redis_url")
    async with two_instances(url, cluster=cluster) as pair:
        url = pair.urls[1]
        plain = await open_client(clients, "python", url)
        slow = await open_client(clients, "ws", url)
        fast = await open_client(clients, "python", url)
        slow_times, fast_times = arrival_times(slow), arrival_times(fast)
        assert (await subscribe(plain, {"symbol": "MIX"}))["ok"] is True
        assert (await subscribe(slow, {"symbol": "MIX", "throttle": PERIOD_MS}))["ok"] is True
        assert (await subscribe(fast, {"symbol": "MIX", "throttle": 100}))["ok"] is True
        sent, duration = await burst(pair, "ours", "MIX")
        await plain.updates.wait_count(BURST, PROMPT)
        assert [u["price"] for u in plain.updates.items] == sent
        for client in (slow, fast):
            await client.updates.wait_for(lambda items: items and items[-1]["price"] == sent[-1], PROMPT)
        assert_throttled([u["price"] for u in slow.updates.items], slow_times, duration, sent[-1])
        fast_prices = [u["price"] for u in fast.updates.items]
        assert fast_prices == sorted(set(fast_prices)) and len(fast_prices) < BURST
        assert all(b - a >= 0.1 - MARGIN_S / 2 for a, b in itertools.pairwise(fast_times))


@pytest.mark.parametrize("value", [99, 60001, 0, -100, "1000", 1000.5, True, [500], {"ms": 500}])
async def test_a_bad_throttle_fails_the_whole_request(redis_url, clients, value):
    """`throttle` outside 100-60000 or not an integer answers invalid_payload on both
    transports, and the subscription set stays as it was."""
    async with two_instances(redis_url) as pair:
        for kind in ("python", "ws"):
            client = await open_client(clients, kind, pair.urls[1])
            assert (await subscribe(client, {"symbol": "AAPL"}))["ok"] is True
            reply = await subscribe(client, {"symbols": ["MSFT"], "throttle": value})
            assert error_code(reply) == "invalid_payload", reply
            again = await subscribe(client, {"symbol": "IBM"})
            assert again["symbols"] == ["AAPL", "IBM"], again


async def test_a_later_subscribe_changes_the_throttle_without_gap_or_repeat(redis_url, clients):
    """Subscribing again to a throttled symbol without throttle makes it unthrottled at once
    (the update its period still held arrives then), and with a throttle throttles it
    again: every update seen once, in order."""
    async with two_instances(redis_url) as pair:
        client = await open_client(clients, "python", pair.urls[1])
        ack = await subscribe(client, {"symbol": "CHG", "throttle": 60000})
        assert ack["added"] == ["CHG"]
        await pair.publish("ours", "CHG", 1.0)  # leading edge: at once
        await client.updates.wait_count(1, PROMPT)
        await pair.publish("ours", "CHG", 2.0)  # held for a minute
        await pair.publish("ours", "CHG", 3.0)
        ack = await subscribe(client, {"symbol": "CHG"})
        assert ack["ok"] is True and ack["added"] == [] and ack["symbols"] == ["CHG"] and "throttle" not in ack
        await client.updates.wait_count(2, PROMPT)
        await pair.publish("ours", "CHG", 4.0)
        await pair.publish("ours", "CHG", 5.0)
        await client.updates.wait_count(4, PROMPT)
        assert [u["price"] for u in client.updates.items] == [1.0, 3.0, 4.0, 5.0]
        ack = await subscribe(client, {"symbol": "CHG", "throttle": 60000})
        assert ack["throttle"] == 60000 and ack["added"] == []
        await pair.publish("ours", "CHG", 6.0)  # a new group: leading edge, at once
        await client.updates.wait_count(5, PROMPT)
        await pair.publish("ours", "CHG", 7.0)  # held: only at the period's end
        ack = await unsubscribe(client, {"symbol": "CHG"})
        assert ack["removed"] == ["CHG"]
        # After the unsubscribe ack nothing of CHG: a later update of another symbol
        # arrives alone.
        assert (await subscribe(client, {"symbol": "OTHER"}))["ok"] is True
        await pair.publish("ours", "OTHER", 1.0)
        await client.expect_update(lambda u: u["symbol"] == "OTHER")
        assert [u["price"] for u in client.updates_for("CHG")] == [1.0, 3.0, 4.0, 5.0, 6.0]


async def test_throttle_with_since_replays_in_full_then_throttles(redis_url, clients):
    """`sinceSeq` with `throttle`: the missed updates come in full, oldest first, then
    live updates are throttled."""
    async with two_instances(redis_url) as pair:
        stored = [await pair.publish("ours", "RES", float(p)) for p in range(1, 6)]
        client = await open_client(clients, "python", pair.urls[1])
        ack = await subscribe(client, {"symbol": "RES", "sinceSeq": stored[1]["seq"], "throttle": PERIOD_MS})
        assert ack["recovered"] is True and ack["throttle"] == PERIOD_MS
        await client.updates.wait_count(3, PROMPT)
        assert [u["price"] for u in client.updates.items] == [3.0, 4.0, 5.0]
        times = arrival_times(client)
        sent, duration = await burst(pair, "ours", "RES", first=6)
        await client.updates.wait_for(lambda items: items[-1]["price"] == sent[-1], PROMPT)
        assert_throttled([u["price"] for u in client.updates.items[3:]], times, duration, sent[-1])
