"""History: retention, and history queries over HTTP, Socket.IO and /live-price."""

from __future__ import annotations

import contextlib
from typing import Any, AsyncIterator

import pytest
import redis.asyncio as aioredis

from tests.support.http_api import get_json, publish_series
from tests.support.inprocess import inprocess_stack, url_for_backend
from tests.support.waiting import now_ms


# -- retention ----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def stack_for(backend: str, request: pytest.FixtureRequest, **overrides: Any) -> AsyncIterator[Any]:
    redis_url = url_for_backend(backend, request)
    async with inprocess_stack(backend, redis_url, **overrides) as stack:
        yield stack


async def stream_node_size(redis_url: str) -> int:
    client = aioredis.from_url(redis_url)
    try:
        return int((await client.config_get("stream-node-max-entries"))["stream-node-max-entries"])
    finally:
        await client.aclose()


async def test_history_keeps_the_newest_max_entries(backend: str, request: pytest.FixtureRequest) -> None:
    async with stack_for(backend, request, history_max_entries=40) as stack:
        for i in range(300):
            await stack.publish("RET", 100 + i)
        kept = [u.seq for u in await stack.broker.history("RET", limit=5000)]
        assert kept == list(range(kept[0], 301)), "history must be the newest updates, in order"
        if backend == "memory":
            assert len(kept) == 40
        else:
            # Redis trims whole stream nodes: at least the setting, at most a node more.
            assert 40 <= len(kept) <= 40 + await stream_node_size(stack.redis_url)


async def test_history_drops_updates_older_than_max_age(backend: str, request: pytest.FixtureRequest) -> None:
    async with stack_for(backend, request, history_max_age=60) as stack:
        old = now_ms() - 3_600_000
        for i in range(250):
            await stack.publish("AGE", 50 + i, timestamp=old + i)
        fresh = [await stack.publish("AGE", 10 + i) for i in range(5)]
        kept = await stack.broker.history("AGE", limit=5000)
        assert [u.seq for u in kept][-5:] == [u["seq"] for u in fresh]
        stale = [u for u in kept if u.timestamp < now_ms() - 60_000]
        if backend == "memory":
            assert stale == []
        else:
            assert len(stale) <= await stream_node_size(stack.redis_url)


async def test_history_can_be_switched_off(backend: str, request: pytest.FixtureRequest) -> None:
    async with stack_for(backend, request, history_max_entries=0) as stack:
        await stack.publish("OFF", 1.5)
        assert await stack.broker.history("OFF") == []
        assert (await stack.broker.snapshots(["OFF"]))["OFF"] is not None


# -- queries --------------------------------------------------------------------------------


async def test_history_query_over_http_socketio_and_live_price(stack: Any, clients: Any) -> None:
    base = now_ms() - 10_000
    published = await publish_series(stack, "HIS", 30, base, 10)
    window = [u for u in published if base + 50 <= u["timestamp"] <= base + 150]

    status, body = await get_json(f"{stack.url}/api/history/his?from={base + 50}&to={base + 150}")
    assert status == 200 and body == {"symbol": "HIS", "updates": window}
    status, body = await get_json(f"{stack.url}/api/history/HIS?limit=5")
    assert status == 200 and body["updates"] == published[-5:]

    sio = await clients.sio(stack.url)
    ack = await sio.call("history", {"symbol": "his", "from": base + 50, "to": base + 150})
    assert ack == {"ok": True, "symbol": "HIS", "updates": window}
    ack = await sio.call("history", {"symbol": "HIS", "limit": 3})
    assert ack["updates"] == published[-3:]

    ws = await clients.ws(stack.url)
    reply = await ws.request({"action": "history", "symbol": "HIS", "from": base + 50, "to": base + 150})
    assert reply["type"] == "history" and reply["updates"] == window
