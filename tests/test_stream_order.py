"""A snapshot and the live updates after it form one increasing sequence, whatever the
instance, client library, transport, publisher and timing of the subscribe.

Three instances share one Redis. Five clients (python-socketio and node socket.io-client,
each over websocket and over long-polling, and a /live-price client) subscribe at random moments into a stream
published in bursts whose updates share one timestamp, by stockstream's publisher (with
`seq`) and by a third party (SET then PUBLISH, `timestamp` only). Some clients subscribe,
unsubscribe and subscribe again mid-stream. Seeded: a failure names its round.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Any

import redis.asyncio as aioredis

from stockstream.broker.redis.broker import RedisBroker
from stockstream.config import Settings
from stockstream.updates import CheckedUpdate
from tests.support.publishing import channel_of

BURST = 20  # updates sharing one timestamp
BURSTS_PER_ROUND = 15
ROUNDS_PER_KIND = 6
CLIENT_KINDS = [("python", "websocket"), ("python", "polling"), ("node", "websocket"), ("node", "polling")]


class LivePriceClient:
    """A /live-price client with the Socket.IO clients' subscribe/unsubscribe shape."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.updates = ws.updates
        self.name = "live-price"
        self.errors = ws.replies

    @property
    def disconnect_reason(self) -> Any:
        return self.ws.close_code

    @property
    def connected(self) -> bool:
        return not self.ws.closed.is_set()

    async def subscribe(self, symbols: list[str], timeout: float) -> dict[str, Any]:
        reply = await self.ws.subscribe(*symbols, timeout=timeout)
        return {"ok": reply.get("type") == "subscribed", **reply}

    async def unsubscribe(self, symbols: list[str], timeout: float) -> dict[str, Any]:
        reply = await self.ws.unsubscribe(*symbols, timeout=timeout)
        return {"ok": reply.get("type") == "unsubscribed", **reply}


class Publisher:
    """Publishes one symbol's numbered updates in bursts that share a timestamp."""

    def __init__(self, kind: str, redis_url: str) -> None:
        self.kind = kind
        self.n = 0
        if kind == "stockstream":
            self.broker = RedisBroker(redis_url, Settings.from_env({"REDIS_URL": redis_url}))
        else:
            self.redis = aioredis.from_url(redis_url, socket_timeout=5)

    async def burst(self, symbol: str) -> None:
        timestamp = int(time.time() * 1000)
        updates = []
        for _ in range(BURST):
            self.n += 1
            updates.append({"symbol": symbol, "price": 100.0 + self.n / 100, "timestamp": timestamp, "n": self.n})
        if self.kind == "stockstream":
            for update in updates:
                await self.broker.publish(CheckedUpdate(update))
        else:
            # One connection, commands in order, not atomic: a read can fall between
            # an update's SET and its PUBLISH.
            async with self.redis.pipeline(transaction=False) as pipe:
                for update in updates:
                    body = json.dumps(update, separators=(",", ":"))
                    pipe.set(channel_of(symbol), body)
                    pipe.publish(channel_of(symbol), body)
                await pipe.execute()

    async def close(self) -> None:
        if self.kind == "stockstream":
            await self.broker.close()
        else:
            await self.redis.aclose()


def check_sequence(numbers: list[int], where: str) -> None:
    assert numbers, f"{where}: nothing received"
    for before, after in zip(numbers, numbers[1:]):
        assert after > before, f"{where}: {after} after {before} in {numbers}"


async def run_round(publisher: Publisher, clients: list[Any], symbol: str, rng: random.Random, where: str) -> None:
    duration_bursts = BURSTS_PER_ROUND
    marks = [len(c.updates.items) for c in clients]
    resubscribers = set(rng.sample(range(len(clients)), 1))

    async def subscriber(index: int) -> int:
        client = clients[index]
        await asyncio.sleep(rng.uniform(0.0, 0.15))
        ack = await client.subscribe([symbol], timeout=10)
        assert ack.get("ok") is True, f"{where} {client.name}: {ack}"
        if index in resubscribers:
            await asyncio.sleep(rng.uniform(0.0, 0.05))
            assert client.connected, (
                f"{where} {client.name} was disconnected ({client.disconnect_reason}): {client.errors.items}"
            )
            assert (await client.unsubscribe([symbol], timeout=10)).get("ok") is True
            mark = len(client.updates.items)
            assert (await client.subscribe([symbol], timeout=10)).get("ok") is True
            return mark
        return marks[index]

    tasks = [asyncio.create_task(subscriber(i)) for i in range(len(clients))]
    for _ in range(duration_bursts):
        await publisher.burst(symbol)
        await asyncio.sleep(0.01)  # let subscribes fall between bursts and inside them
    starts = await asyncio.gather(*tasks)
    last = publisher.n
    for client, start in zip(clients, starts):
        # Every client reaches the last update published (conflation may skip some before).
        await client.updates.wait_for(
            lambda items, s=start: any(
                isinstance(u, dict) and u.get("symbol") == symbol and u.get("n") == last for u in items[s:]
            ),
            timeout=15,
        )
        numbers = [u["n"] for u in client.updates.items[start:] if isinstance(u, dict) and u.get("symbol") == symbol]
        check_sequence(numbers, f"{where} {client.name}")
        await client.unsubscribe([symbol], timeout=10)


async def test_snapshot_and_live_updates_form_one_increasing_sequence(servers, redis_url, clients, node_harness):
    """Whatever the instance, library, transport, publisher and subscribe timing, each client's
    updates of a symbol after its subscribe are strictly increasing in publish order (never an
    update older than one already delivered, never one twice) and reach the last one published."""
    instances = await servers.start_many(3, redis_url=redis_url)
    pool = []
    for i, (kind, transport) in enumerate(CLIENT_KINDS):
        pool.append(await clients.sio(instances[i % 3].url, kind=kind, transports=[transport]))
    pool.append(LivePriceClient(await clients.ws(instances[1].url)))
    # A fifth client keeps a room open on an instance, so joiners there start from the room.
    keeper = await clients.sio(instances[0].url, transports=["websocket"])
    rng = random.Random(20261205)
    for kind in ("stockstream", "third-party"):
        publisher = Publisher(kind, redis_url)
        try:
            for round_no in range(ROUNDS_PER_KIND):
                symbol = f"ORD{kind[0].upper()}{round_no}"
                if round_no % 2:
                    assert (await keeper.subscribe([symbol])).get("ok") is True
                await run_round(publisher, pool, symbol, rng, f"{kind} round {round_no} ({symbol})")
        finally:
            await publisher.close()
    for instance in instances:
        assert instance.running, instance.output_tail()
