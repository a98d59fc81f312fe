"""Several server instances on one Redis."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.inprocess import atomic_publisher
from tests.support.waiting import assert_same_json

pytestmark = pytest.mark.slow

SYMBOLS = ["AAPL", "MSFT", "GOOG", "BRK.B"]
INSTANCES = 3
CLIENTS = 30
UPDATES = 320  # spread evenly over SYMBOLS


def symbols_of(index: int) -> list[str]:
    return [SYMBOLS[index % len(SYMBOLS)], SYMBOLS[(index + 1) % len(SYMBOLS)]]


def ns_of(client, symbol: str) -> list[int]:
    return [u.get("n") for u in client.updates_for(symbol)]


async def open_client(clients, index: int, server):
    """Every third client on /live-price; the rest on Socket.IO with various transports."""
    if index % 3 == 0:
        client = await clients.ws(server.url)
        reply = await client.subscribe(*symbols_of(index))
        assert reply.get("type") == "subscribed" and reply.get("ok") is True, reply
    else:
        transports = None if index % 3 == 1 else ["websocket"]
        client = await clients.sio(server.url, transports=transports)
        ack = await client.subscribe(symbols_of(index))
        assert ack.get("ok") is True and ack.get("added") == symbols_of(index), ack
    return client


async def test_every_client_gets_every_update_once_in_order(servers, redis_url, raw_publisher, clients):
    instances = await servers.start_many(INSTANCES, redis_url=redis_url)
    subscribers = await asyncio.gather(*(open_client(clients, i, instances[i % INSTANCES]) for i in range(CLIENTS)))

    counts = {s: 0 for s in SYMBOLS}
    last: dict[str, dict] = {}
    seqs: dict[str, list[int]] = {s: [] for s in SYMBOLS}
    async with atomic_publisher(redis_url) as publish:

        async def publish_round(total: int) -> None:
            for k in range(total):
                symbol = SYMBOLS[k % len(SYMBOLS)]
                counts[symbol] += 1
                n = counts[symbol]
                if k % 2 == 0:
                    update = await publish(symbol, 100 + n / 100, n=n)
                    seqs[symbol].append(update["seq"])
                else:
                    update = await raw_publisher.publish(symbol, 100 + n / 100, n=n)
                last[symbol] = update

        await publish_round(UPDATES)
        per_symbol = UPDATES // len(SYMBOLS)

        async def received_all(client, index: int, upto: int) -> None:
            for symbol in symbols_of(index):
                await client.updates.wait_for(
                    lambda _: upto in ns_of(client, symbol), 30, f"update n={upto} of {symbol} on {client!r}"
                )

        await asyncio.gather(*(received_all(c, i, per_symbol) for i, c in enumerate(subscribers)))
        # One more round: any late duplicate of the first round would come before it.
        await publish_round(len(SYMBOLS))
        await asyncio.gather(*(received_all(c, i, per_symbol + 1) for i, c in enumerate(subscribers)))

    expected = list(range(1, per_symbol + 2))
    problems = []
    for index, client in enumerate(subscribers):
        for symbol in symbols_of(index):
            got = ns_of(client, symbol)
            if got != expected:
                missing = sorted(set(expected) - set(got))
                dupes = sorted({n for n in got if got.count(n) > 1})
                problems.append(
                    f"{client!r} {symbol}: {len(got)} updates, missing {missing[:10]}, "
                    f"duplicated {dupes[:10]}, out of order: {got != sorted(got)}"
                )
        others = [u for u in client.updates.items if u.get("symbol") not in symbols_of(index)]
        if others:
            problems.append(f"{client!r} got unsubscribed symbols: {others[:3]}")
    assert not problems, "\n".join(problems)
    for symbol, values in seqs.items():
        assert values == sorted(values) and len(set(values)) == len(values), (symbol, values)

    # A new client on any instance gets the latest update of each symbol as snapshot.
    for server in instances:
        late = await clients.sio(server.url)
        await late.subscribe(SYMBOLS)
        await late.updates.wait_count(len(SYMBOLS))
        by_symbol = {u["symbol"]: u for u in late.updates.items}
        for symbol in SYMBOLS:
            assert_same_json(by_symbol[symbol], last[symbol])
