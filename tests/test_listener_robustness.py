"""The Redis listener under malformed input, and the subscribe/snapshot race."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import pytest

from tests.support.inprocess import atomic_publisher, inprocess_stack
from tests.support.protocol import is_valid_update
from tests.support.waiting import assert_same_json, canonical, now_ms

TS = 1712331900000

# Messages that must never reach a client, each published on stock:AAPL.
MALFORMED: dict[str, bytes] = {
    "not-json": b"not json",
    "truncated-json": b'{"symbol":"AAPL","price":1',
    "empty": b"",
    "json-array": b"[]",
    "json-null": b"null",
    "json-number": b"42",
    "json-string": b'"AAPL"',
    "missing-price": b'{"symbol":"AAPL","timestamp":%d}' % TS,
    "price-string": b'{"symbol":"AAPL","price":"189.45","timestamp":%d}' % TS,
    "price-true": b'{"symbol":"AAPL","price":true,"timestamp":%d}' % TS,
    "price-null": b'{"symbol":"AAPL","price":null,"timestamp":%d}' % TS,
    "price-list": b'{"symbol":"AAPL","price":[1],"timestamp":%d}' % TS,
    "price-NaN": b'{"symbol":"AAPL","price":NaN,"timestamp":%d}' % TS,
    "price-Infinity": b'{"symbol":"AAPL","price":Infinity,"timestamp":%d}' % TS,
    "price-minus-Infinity": b'{"symbol":"AAPL","price":-Infinity,"timestamp":%d}' % TS,
    "price-overflow": b'{"symbol":"AAPL","price":1e999,"timestamp":%d}' % TS,
    "missing-timestamp": b'{"symbol":"AAPL","price":1.5}',
    "negative-timestamp": b'{"symbol":"AAPL","price":1.5,"timestamp":-1}',
    "float-timestamp": b'{"symbol":"AAPL","price":1.5,"timestamp":1712331900000.5}',
    "string-timestamp": b'{"symbol":"AAPL","price":1.5,"timestamp":"1712331900000"}',
    "bool-timestamp": b'{"symbol":"AAPL","price":1.5,"timestamp":true}',
    "missing-symbol": b'{"price":1.5,"timestamp":%d}' % TS,
    "symbol-number": b'{"symbol":5,"price":1.5,"timestamp":%d}' % TS,
    "symbol-empty": b'{"symbol":"","price":1.5,"timestamp":%d}' % TS,
    "symbol-other-channel": b'{"symbol":"MSFT","price":1.5,"timestamp":%d}' % TS,
    "symbol-prefix-of-channel": b'{"symbol":"AAP","price":1.5,"timestamp":%d}' % TS,
    "invalid-utf8": b"\xff\xfe\xfd",
    "invalid-utf8-in-json": b'{"symbol":"AAPL\xff","price":1.5,"timestamp":%d}' % TS,
    "huge-garbage": b"x" * 1_000_000,
    "huge-array": b"[" + b"1," * 400_000 + b"1]",
    "deeply-nested": b'{"symbol":"AAPL","timestamp":1,"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
}


def valid_variants(n: int) -> dict:
    """Valid updates of different shapes; `n` orders them."""
    shapes = [
        {"symbol": "AAPL", "price": 189.45 + n / 100, "timestamp": now_ms()},
        {"symbol": "AAPL", "price": 189 + n, "timestamp": 0},
        {"symbol": "aapl", "price": 190.5, "timestamp": now_ms()},  # belongs to stock:AAPL
        {
            "symbol": "AAPL",
            "price": -0.5,
            "timestamp": now_ms(),
            "volume": 10,
            "meta": {"venue": "XNAS", "flags": [1, 2]},
            "note": "Ünïcode ✓",
        },
    ]
    update = dict(shapes[n % len(shapes)])
    update["n"] = n
    return update


async def test_malformed_messages_never_reach_clients(servers, redis_url, raw_publisher, clients):
    server = await servers.start(redis_url=redis_url)
    sio = await clients.sio(server.url)
    ws = await clients.ws(server.url)
    await sio.subscribe(["AAPL", "MSFT", "AAP"])
    await ws.subscribe("AAPL", "MSFT", "AAP")

    sent = []
    for n, (name, payload) in enumerate(sorted(MALFORMED.items())):
        update = valid_variants(n)
        await raw_publisher.set_and_publish(update, "AAPL")
        sent.append(update)
        receivers = await raw_publisher.publish_only("AAPL", payload)
        assert receivers >= 1, "the server does not listen on stock:AAPL"
    marker = valid_variants(len(MALFORMED))
    marker["marker"] = True
    await raw_publisher.set_and_publish(marker, "AAPL")
    sent.append(marker)

    for client in (sio, ws):
        await client.expect_update(lambda u: u.get("marker") is True, timeout=20, what="the final valid update")
        got = client.updates.items
        invalid = [u for u in got if not is_valid_update(u)]
        assert not invalid, f"{client!r} received invalid updates: {invalid[:5]}"
        assert [canonical(u) for u in got] == [canonical(u) for u in sent], (
            f"{client!r}: valid updates not delivered exactly, once, in order (got n={[u.get('n') for u in got]})"
        )

    assert server.running, f"server died:\n{server.output_tail()}"
    async with aiohttp.ClientSession() as http:
        async with http.get(server.url + "/readyz") as resp:
            assert resp.status == 200, await resp.text()
    # The listener still streams, and snapshots are the last valid update.
    late = await clients.sio(server.url)
    await late.subscribe("AAPL")
    assert_same_json(await late.expect_update(), marker)


async def test_invalid_stored_snapshot_is_not_sent(servers, redis_url, raw_publisher, clients):
    server = await servers.start(redis_url=redis_url)
    await raw_publisher.store_only(b"not json", "AAPL")
    await raw_publisher.store_only(b'{"symbol":"MSFT","price":1,"timestamp":1}', "IBM")
    await raw_publisher.store_only(b'{"symbol":"TSLA","price":"x","timestamp":1}', "TSLA")
    client = await clients.sio(server.url)
    ack = await client.subscribe(["AAPL", "IBM", "TSLA"])
    assert ack.get("ok") is True, ack
    live = await raw_publisher.publish("TSLA", 250.0)
    assert_same_json(await client.expect_update(), live)
    assert len(client.updates) == 1, f"invalid snapshots were sent: {client.updates.items}"


# -- the snapshot race -------------------------------------------------------------------


@contextlib.asynccontextmanager
async def race_setup(backend: str, servers, request):
    """(server url, atomic publish function) on a served instance of `backend`."""
    if backend == "redis":
        url = request.getfixturevalue("redis_url")
        server = await servers.start(redis_url=url)
        async with atomic_publisher(url) as publish:
            yield server.url, publish
    else:
        async with inprocess_stack("memory") as stack:
            yield stack.url, stack.publish


def hot_seqs(client, start: int, end: int) -> list:
    return [u.get("seq") for u in client.updates.items[start:end] if u.get("symbol") == "HOT"]


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_snapshot_then_contiguous_seq_while_publishing_fast(backend, servers, clients, request):
    """Clients subscribe and unsubscribe repeatedly while one symbol is published as fast as
    the publisher can: in each subscription the first update is a snapshot at least as new
    as what was published before the request, then seq goes up by exactly one, and
    nothing comes between the unsubscribe ack and the next subscribe ack."""
    cycles, per_cycle = 5, 40
    async with race_setup(backend, servers, request) as (url, publish):
        last_seq = (await publish("HOT", 1.0))["seq"]
        stop = asyncio.Event()
        published = 0

        async def publisher() -> None:
            nonlocal published, last_seq
            while not stop.is_set():
                for _ in range(10):
                    last_seq = (await publish("HOT", 1.0 + published % 100))["seq"]
                    published += 1
                await asyncio.sleep(0.002)

        racers = [
            await clients.sio(url),
            await clients.sio(url, transports=["websocket"]),
            await clients.ws(url),
            await clients.ws(url),
        ]
        for racer in racers:
            await racer.subscribe("MARK")
        task = asyncio.create_task(publisher())
        try:

            async def run_cycles(client) -> list[str]:
                problems = []
                start = client.last_ack_mark
                for cycle in range(cycles):
                    published_before = last_seq
                    ack = await client.subscribe("HOT")
                    assert ack.get("ok") is True and ack.get("added") == ["HOT"], ack
                    sub_mark = client.last_ack_mark
                    if sub_mark != start:
                        problems.append(
                            f"{client!r} cycle {cycle}: updates between unsubscribe "
                            f"and subscribe acks: {client.updates.items[start:sub_mark]}"
                        )
                    await client.updates.wait_for(
                        lambda items: len(items) - sub_mark >= per_cycle, 20, f"{per_cycle} HOT updates"
                    )
                    ack = await client.unsubscribe("HOT")
                    assert ack.get("ok") is True and ack.get("removed") == ["HOT"], ack
                    start = client.last_ack_mark
                    seqs = hot_seqs(client, sub_mark, start)
                    if not seqs or seqs[0] < published_before:
                        problems.append(
                            f"{client!r} cycle {cycle}: first update seq {seqs[:1]} is "
                            f"older than seq {published_before} published before "
                            f"the subscribe request"
                        )
                    expected = list(range(seqs[0], seqs[0] + len(seqs))) if seqs else []
                    if seqs != expected:
                        gaps = [(a, b) for a, b in zip(seqs, seqs[1:]) if b != a + 1]
                        problems.append(
                            f"{client!r} cycle {cycle}: seq not contiguous from the "
                            f"snapshot {seqs[:1]}: breaks {gaps[:10]}"
                        )
                return problems

            results = await asyncio.gather(*(run_cycles(c) for c in racers))
        finally:
            stop.set()
            await task
        # Nothing for HOT after the last unsubscribe ack: a marker on another symbol,
        # published after all of HOT, arrives after anything that leaked.
        marks = [r.last_ack_mark for r in racers]
        await publish("MARK", 1.0)
        for racer, mark in zip(racers, marks):
            await racer.expect_update(lambda u: u.get("symbol") == "MARK", what="the MARK update")
            leaked = hot_seqs(racer, mark, len(racer.updates))
            assert not leaked, f"{racer!r}: HOT updates after the unsubscribe ack: {leaked[:10]}"
    problems = [p for r in results for p in r]
    assert published >= 200, f"publisher too slow to race anything ({published} updates)"
    assert not problems, "\n".join(problems)
