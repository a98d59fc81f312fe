"""Subscribing to `*` (every symbol) end to end: who may, snapshots, new symbols from
both kinds of publisher, and the throttled market overview (`stockUpdates`)."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from stockstream.auth import mint_token
from stockstream.config import Settings
from tests.support.inprocess import inprocess_stack
from tests.support.market import (
    batch_inbox,
    batches,
    error_code,
    open_client,
    subscribe,
    two_instances,
    unsubscribe,
)
from tests.support.waiting import PROMPT

SECRET = "w" * 40
PERIOD_MS = 500
MARGIN_S = 0.25


def token(**claims) -> str:
    return mint_token(Settings.from_env({}, jwt_secret=SECRET), "trader", **claims)


async def authenticate(client, jwt: str) -> None:
    if client.kind == "ws":
        reply = await client.request({"action": "authenticate", "token": jwt})
    else:
        reply = await client.call("authenticate", jwt)
    assert reply["ok"] is True, reply


async def test_who_may_subscribe_to_every_symbol(clients):
    """`*` needs a token whose symbols claim holds "*" (a list of symbols, or no claim,
    is forbidden_symbol, failed alone beside valid symbols); WILDCARD_ENABLED=false
    forbids it to everyone."""
    async with inprocess_stack("memory", jwt_secret=SECRET) as stack:
        for kind in ("python", "ws"):
            for claims, allowed in [
                ({"symbols": ["AAPL"]}, False),
                ({}, False),
                ({"symbols": ["*"]}, True),
                ({"symbols": ["AAPL", "*"]}, True),
            ]:
                client = await open_client(clients, kind, stack.url)
                await authenticate(client, token(**claims))
                ack = await subscribe(client, {"symbols": ["*", "AAPL"]})
                assert ack["ok"] is True, ack
                if allowed:
                    assert ack["added"] == ["*", "AAPL"] and ack["symbols"] == ["*", "AAPL"], ack
                else:
                    assert ack["added"] == ["AAPL"], ack
                    assert ack["failed"] == [{"symbol": "*", "code": "forbidden_symbol"}], ack
            # Without auth, `*` is allowed (auth off).
            anonymous = await open_client(clients, kind, stack.url)
            assert (await subscribe(anonymous, {"symbol": "*"}))["added"] == ["*"]
    async with inprocess_stack("memory", wildcard_enabled=False) as stack:
        client = await open_client(clients, "python", stack.url)
        ack = await subscribe(client, {"symbol": "*"})
        assert ack["added"] == [] and ack["failed"] == [{"symbol": "*", "code": "forbidden_symbol"}], ack
        ws = await open_client(clients, "ws", stack.url)
        await ws.send({"action": "subscribe", "symbol": "*"})
        error = await ws.next_reply()
        assert error_code(error) is None and error["failed"][0]["code"] == "forbidden_symbol", error


async def test_wildcard_counts_as_one_subscription(clients):
    """`*` takes one place of MAX_SUBSCRIPTIONS, whatever the number of symbols."""
    async with inprocess_stack("memory", max_subscriptions=2) as stack:
        client = await open_client(clients, "python", stack.url)
        for i in range(5):
            await stack.publish(f"S{i}", 1.0)
        ack = await subscribe(client, {"symbols": ["aapl", "*"]})
        assert ack["added"] == ["AAPL", "*"] and ack["symbols"] == ["*", "AAPL"], ack
        reply = await subscribe(client, {"symbol": "MSFT"})
        assert error_code(reply) == "too_many_subscriptions", reply


@pytest.mark.parametrize("cluster", [False, True], ids=["redis", "cluster"])
async def test_wildcard_gets_snapshots_then_every_symbol_from_both_publishers(request, clients, client_kind, cluster):
    """A `*` client on the second instance gets a snapshot of each priced symbol, then
    updates of symbols that did not exist when it subscribed, from stockstream's
    publisher and from a third party's SET + PUBLISH (SPUBLISH on a cluster); it no
    longer gets them after unsubscribing `*`."""
    url = request.getfixturevalue("cluster_url" if cluster else "redis_url")
    async with two_instances(url, cluster=cluster, wildcard_discovery_interval=0.2) as pair:
        await pair.publish("ours", "OLD.A", 1.0)
        await pair.publish("raw", "OLD-B", 2.0)
        client = await open_client(clients, client_kind, pair.urls[1])
        ack = await subscribe(client, {"symbol": "*"})
        assert ack["added"] == ["*"] and ack["symbols"] == ["*"], ack
        snapshots = await client.updates.wait_count(2, PROMPT)
        assert sorted((u["symbol"], u["price"]) for u in snapshots) == [("OLD-B", 2.0), ("OLD.A", 1.0)]
        # New symbols: a cluster finds third parties' by scanning, so keep publishing.
        for publisher, symbol in [("ours", "NEW1"), ("raw", "NEW2")]:
            deadline = time.monotonic() + PROMPT * 2
            price = 0.0
            while not client.updates_for(symbol):
                assert time.monotonic() < deadline, f"{symbol} from {publisher} never arrived"
                price += 1
                await pair.publish(publisher, symbol, price)
                await asyncio.sleep(0.05)
            await pair.publish(publisher, symbol, 1000.0)
            await client.expect_update(lambda u, s=symbol: u["symbol"] == s and u["price"] == 1000.0)
            prices = [u["price"] for u in client.updates_for(symbol)]
            assert prices == sorted(set(prices)), prices
        ack = await unsubscribe(client, {"symbol": "*"})
        assert ack["removed"] == ["*"] and ack["symbols"] == [], ack
        seen = len(client.updates.items)
        assert (await subscribe(client, {"symbol": "LAST"}))["ok"] is True
        await pair.publish("ours", "NEW1", 2000.0)
        await pair.publish("ours", "LAST", 1.0)
        await client.expect_update(lambda u: u["symbol"] == "LAST")
        assert [u["symbol"] for u in client.updates.items[seen:]] == ["LAST"]


async def test_an_explicit_subscription_and_wildcard_deliver_a_symbol_once(redis_url, clients):
    """A symbol subscribed on its own and through `*` arrives once per update, in order."""
    async with two_instances(redis_url) as pair:
        client = await open_client(clients, "python", pair.urls[1])
        assert (await subscribe(client, {"symbols": ["ONCE", "*"]}))["ok"] is True
        for price in range(1, 21):
            await pair.publish("ours", "ONCE", float(price))
        await client.updates.wait_for(lambda items: items and items[-1]["price"] == 20.0, PROMPT)
        assert [u["price"] for u in client.updates_for("ONCE")] == [float(p) for p in range(1, 21)]


async def test_throttled_wildcard_is_a_market_overview(redis_url, clients, client_kind):
    """`*` with a throttle: the snapshots as `stockUpdates` lists, then at most one
    `stockUpdates` per period with the latest update of each symbol that changed, none
    older than one already received, the last of every symbol arriving; no single
    `stockUpdate` at all."""
    async with two_instances(redis_url) as pair:
        await pair.publish("ours", "MKT0", 1.0)
        client = await open_client(clients, client_kind, pair.urls[1])
        ack = await subscribe(client, {"symbol": "*", "throttle": PERIOD_MS})
        assert ack["added"] == ["*"] and ack["throttle"] == PERIOD_MS
        inbox = batch_inbox(client)
        await inbox.wait_for(lambda _: batches(client), PROMPT, "the snapshot batch")
        assert [(u["symbol"], u["price"]) for u in batches(client)[0]] == [("MKT0", 1.0)]
        times: list[float] = []
        put = inbox.put

        def stamped(item):
            put(item)
            if len(batches(client)) > len(times) + 1:
                times.append(time.monotonic())

        inbox.put = stamped
        symbols = ["MKT1", "MKT2", "MKT3"]
        started = time.monotonic()
        for step in range(1, 31):
            for index, symbol in enumerate(symbols):
                if step % (index + 1) == 0:
                    await pair.publish("raw" if index == 2 else "ours", symbol, float(step))
            await asyncio.sleep(0.03)
        duration = time.monotonic() - started
        last = {"MKT1": 30.0, "MKT2": 30.0, "MKT3": 30.0}

        def done(_):
            latest = {}
            for batch in batches(client):
                latest.update({u["symbol"]: u["price"] for u in batch})
            return all(latest.get(s) == p for s, p in last.items())

        await inbox.wait_for(done, PROMPT, "every symbol's last price")
        live = batches(client)[1:]
        assert len(live) <= duration / (PERIOD_MS / 1000) + 2, len(live)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(gap >= PERIOD_MS / 1000 - MARGIN_S for gap in gaps), gaps
        seen: dict[str, float] = {}
        for batch in live:
            assert len({u["symbol"] for u in batch}) == len(batch), batch
            for u in batch:
                assert u["price"] > seen.get(u["symbol"], 0.0), (u, seen)
                seen[u["symbol"]] = u["price"]
        assert not client.updates.items


async def test_a_token_without_wildcard_drops_it(clients):
    """Re-authenticating with a token whose symbols claim lacks "*" drops `*` (listed in
    `revoked`): only the symbols subscribed on their own still stream."""
    async with inprocess_stack("memory", jwt_secret=SECRET) as stack:
        client = await open_client(clients, "python", stack.url)
        await authenticate(client, token(symbols=["*"]))
        assert (await subscribe(client, {"symbols": ["*", "KEEP"]}))["added"] == ["*", "KEEP"]
        reply = await client.call("authenticate", token(symbols=["KEEP"]))
        assert reply["ok"] is True and reply["revoked"] == ["*"], reply
        await stack.publish("GONE", 1.0)
        await stack.publish("KEEP", 2.0)
        await client.expect_update(lambda u: u["symbol"] == "KEEP")
        assert [u["symbol"] for u in client.updates.items] == ["KEEP"]


async def test_subscribing_to_wildcard_at_another_period_starts_it_afresh(clients):
    """`*` subscribed again with a throttle after being unthrottled is listed in `added`,
    starts with its snapshots again, and then sends `stockUpdates` lists instead of
    single updates."""
    async with inprocess_stack("memory") as stack:
        await stack.publish("AFR", 1.0)
        client = await open_client(clients, "ws", stack.url)
        assert (await subscribe(client, {"symbol": "*"}))["added"] == ["*"]
        await client.expect_update(lambda u: u["symbol"] == "AFR")
        ack = await subscribe(client, {"symbol": "*", "throttle": 100})
        assert ack["added"] == ["*"] and ack["symbols"] == ["*"] and ack["throttle"] == 100, ack
        await client.replies.wait_for(lambda _: batches(client), PROMPT, "the snapshot list")
        assert [u["price"] for u in batches(client)[0]] == [1.0]
        seen = len(client.updates.items)
        await stack.publish("AFR", 2.0)
        await client.replies.wait_for(lambda _: len(batches(client)) == 2, PROMPT, "a live list")
        assert [u["price"] for u in batches(client)[1]] == [2.0]
        assert len(client.updates.items) == seen


async def test_on_a_cluster_stockstream_publishers_announce_new_symbols(cluster_url, clients):
    """With the cluster's scans a minute apart, a symbol first published by stockstream's
    publisher (another process) still reaches a `*` client on another instance within
    moments: its first update is announced to every instance, which subscribes it."""
    async with two_instances(cluster_url, cluster=True, wildcard_discovery_interval=60.0) as pair:
        client = await open_client(clients, "python", pair.urls[1])
        assert (await subscribe(client, {"symbol": "*"}))["added"] == ["*"]
        deadline = time.monotonic() + PROMPT
        price = 0.0
        while not client.updates_for("ANN"):
            assert time.monotonic() < deadline, "the announced symbol never arrived"
            price += 1
            await pair.publish("ours", "ANN", price)
            await asyncio.sleep(0.05)
