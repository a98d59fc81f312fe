"""Throttled and `*` streams as the tests see them, for every client kind."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from .inprocess import atomic_publisher, running_app
from .publishing import RawRedisPublisher


async def open_client(clients: Any, kind: str, url: str) -> Any:
    """A python-socketio, socket.io-client (node) or raw /live-price client."""
    if kind == "ws":
        return await clients.ws(url)
    return await clients.sio(url, kind=kind)


async def subscribe(client: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """The object form of subscribe, answered by its ack (or `subscribed` frame)."""
    if client.kind == "ws":
        return await client.request({"action": "subscribe", **payload})
    return await client.subscribe(payload)


async def unsubscribe(client: Any, payload: dict[str, Any]) -> dict[str, Any]:
    if client.kind == "ws":
        return await client.request({"action": "unsubscribe", **payload})
    return await client.unsubscribe(payload)


def error_code(reply: dict[str, Any]) -> str | None:
    """The error code of a failed request's answer, whichever transport."""
    if reply.get("type") == "error":
        return reply.get("code")
    error = reply.get("error")
    return error.get("code") if reply.get("ok") is False and isinstance(error, dict) else None


def arrival_times(client: Any) -> list[float]:
    """From now on, the monotonic arrival time of every update the client records."""
    times: list[float] = []
    inbox = client.updates
    put = inbox.put

    def stamped(item: Any) -> None:
        times.append(time.monotonic())
        put(item)

    inbox.put = stamped  # type: ignore[method-assign]
    return times


def batches(client: Any) -> list[list[dict[str, Any]]]:
    """Every `stockUpdates` list received so far, in order."""
    if client.kind == "ws":
        return [r["updates"] for r in client.replies.items if r.get("type") == "stockUpdates"]
    return [e[2][0] for e in client.timeline.items if e[0] == "event" and e[1] == "stockUpdates"]


def batch_inbox(client: Any) -> Any:
    """The inbox whose growth shows new batches (for waiting)."""
    return client.replies if client.kind == "ws" else client.timeline


class TwoInstances:
    """Two serving instances on one Redis (clients on the second), and both kinds of
    publisher: stockstream's (atomic, with seq) and a third party's SET + PUBLISH."""

    def __init__(self, urls: list[str], publish: Any, raw: RawRedisPublisher) -> None:
        self.urls = urls
        self.ours = publish
        self.raw = raw

    async def publish(self, kind: str, symbol: str, price: float) -> dict[str, Any]:
        if kind == "ours":
            return await self.ours(symbol, price)
        return await self.raw.publish(symbol, price)


class two_instances:
    """async with two_instances(redis_url, cluster=False, **settings) as pair: ..."""

    def __init__(self, redis_url: str, cluster: bool = False, **overrides: Any) -> None:
        self.redis_url = redis_url
        self.cluster = cluster
        self.overrides = overrides
        if cluster:
            self.overrides.setdefault("redis_cluster", True)
        self._stack: Any = None

    async def __aenter__(self) -> TwoInstances:
        self._stack = contextlib.AsyncExitStack()
        urls = []
        for _ in range(2):
            _, port = await self._stack.enter_async_context(running_app(self.redis_url, **self.overrides))
            urls.append(f"http://127.0.0.1:{port}")
        publish = await self._stack.enter_async_context(atomic_publisher(self.redis_url, redis_cluster=self.cluster))
        raw = RawRedisPublisher(self.redis_url, cluster=self.cluster)
        self._stack.push_async_callback(raw.close)
        return TwoInstances(urls, publish, raw)

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()
