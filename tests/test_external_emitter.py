"""The python-socketio Redis manager is attached: an emit from an external
`write_only` emitter, addressed to a symbol's room, reaches that room's Socket.IO
clients on every instance, and only while they are subscribed."""

from __future__ import annotations

import asyncio
from typing import Any

import socketio


async def test_external_emitter_reaches_room_members_on_every_instance(servers: Any, redis_url: str) -> None:
    first, second = await servers.start_many(2, {}, redis_url=redis_url)
    news: dict[str, asyncio.Queue] = {}
    sockets = []
    for name, server, symbol in (("a", first, "AAPL"), ("b", second, "AAPL"), ("c", second, "MSFT")):
        client = socketio.AsyncClient()
        queue = news[name] = asyncio.Queue()
        client.on("news", queue.put_nowait)
        await client.connect(server.url, transports=["websocket"])
        ack = await client.call("subscribe", symbol, timeout=10)
        assert ack["ok"] is True
        sockets.append(client)
    emitter = socketio.AsyncRedisManager(redis_url, write_only=True)
    try:
        await emitter.emit("news", {"headline": "AAPL beats"}, room="AAPL", namespace="/")
        for name in ("a", "b"):
            assert await asyncio.wait_for(news[name].get(), 10) == {"headline": "AAPL beats"}
        ack = await sockets[0].call("unsubscribe", "AAPL", timeout=10)
        assert ack["removed"] == ["AAPL"]
        await emitter.emit("news", {"headline": "second"}, room="AAPL", namespace="/")
        await emitter.emit("news", {"headline": "to all"}, namespace="/")
        # Each instance handles the manager's messages in order: a client that
        # gets "to all" first did not get "second".
        assert await asyncio.wait_for(news["b"].get(), 10) == {"headline": "second"}
        for name in ("a", "b", "c"):
            assert await asyncio.wait_for(news[name].get(), 10) == {"headline": "to all"}
        # Binary payloads travel as WebSocket binary frames (Socket.IO attachments).
        await emitter.emit("news", {"chart": b"\x89PNG\x00\xff"}, room="MSFT", namespace="/")
        assert await asyncio.wait_for(news["c"].get(), 10) == {"chart": b"\x89PNG\x00\xff"}
    finally:
        for client in sockets:
            await client.disconnect()
        await emitter.redis.aclose() if emitter.redis is not None else None
