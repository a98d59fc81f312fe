"""A stockstream server running inside the test's event loop, with the project's publisher.

Used where a test must publish in a controlled way on either backend: the embedded
(memory) backend is only reachable from inside the server's process.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp import web

from .publishing import RawRedisPublisher
from .waiting import eventually, free_port

# The served process bounds its graceful shutdown (SHUTDOWN_TIMEOUT, 10 s by default);
# an in-process app must not hang a test longer.
CLEANUP_TIMEOUT = 15.0

PublishFn = Callable[..., Awaitable[dict[str, Any]]]


@dataclass
class Stack:
    """A ready server and ways to publish to it.

    publish(symbol, price, **extra) -> the update as published (with "seq" when the
    project's publisher adds one). raw: the original SET+PUBLISH path (Redis backend only).
    """

    backend: str
    url: str
    port: int
    publish: PublishFn
    app: Any = None
    redis_url: str | None = None
    raw: RawRedisPublisher | None = None

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1) + "/live-price"

    @property
    def broker(self) -> Any:
        from stockstream.app import broker_of

        return broker_of(self.app)


def url_for_backend(backend: str, request: Any) -> str | None:
    """The Redis URL a backend runs on (a fresh redis_url / cluster_url), None for memory."""
    if backend == "redis":
        return request.getfixturevalue("redis_url")
    if backend == "cluster":
        return request.getfixturevalue("cluster_url")
    return None


def settings_for(redis_url: str | None, port: int, **overrides: Any) -> Any:
    from stockstream.config import Settings

    overrides.setdefault("log_level", "warning")
    return Settings.from_env({}, host="127.0.0.1", port=port, redis_url=redis_url or "", **overrides)


async def wait_ready(url: str, timeout: float = 20.0) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:

        async def ready() -> bool:
            try:
                async with http.get(url + "/readyz") as resp:
                    return resp.status == 200
            except (aiohttp.ClientError, OSError):
                return False

        await eventually(ready, timeout, f"{url}/readyz to answer 200", interval=0.05)


@contextlib.asynccontextmanager
async def running_app(
    redis_url: str | None = None, *, serve: bool = True, **overrides: Any
) -> AsyncIterator[tuple[web.Application, int]]:
    """create_app(settings) run by an AppRunner in this loop; serve=False runs only the
    start-up and clean-up hooks (a publishing-only instance)."""
    from stockstream.app import create_app

    port = free_port()
    app = create_app(settings_for(redis_url, port, **overrides))
    # As the served process does, bound how long clean-up waits for open requests.
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    try:
        if serve:
            site = web.TCPSite(runner, "127.0.0.1", port)
            await site.start()
            await wait_ready(f"http://127.0.0.1:{port}")
        yield app, port
    finally:
        try:
            await asyncio.wait_for(runner.cleanup(), CLEANUP_TIMEOUT)
        except asyncio.TimeoutError:
            raise AssertionError(
                f"the server's clean-up (on_shutdown/on_cleanup hooks) did not finish within {CLEANUP_TIMEOUT}s"
            ) from None


def project_publisher(app: web.Application) -> PublishFn:
    """The project's own (atomic) publisher bound to the app's broker."""
    from stockstream.app import broker_of
    from stockstream.publisher import Publisher

    publisher = Publisher(broker_of(app))

    async def publish(symbol: str, price: float, **extra: Any) -> dict[str, Any]:
        return await publisher.publish(symbol, price, **extra)

    return publish


@contextlib.asynccontextmanager
async def atomic_publisher(redis_url: str, **overrides: Any) -> AsyncIterator[PublishFn]:
    """The project's publisher on a Redis (a cluster with redis_cluster=True), outside any
    serving instance."""
    from stockstream.broker import create_broker
    from stockstream.publisher import Publisher

    broker = create_broker(settings_for(redis_url, free_port(), **overrides))
    publisher = Publisher(broker)
    try:
        yield publisher.publish
    finally:
        await broker.close()


@contextlib.asynccontextmanager
async def inprocess_stack(backend: str, redis_url: str | None = None, **overrides: Any) -> AsyncIterator[Stack]:
    """backend: "memory", "redis", or "cluster" (redis_url then names a cluster node)."""
    shared = backend in ("redis", "cluster")
    if shared and not redis_url:
        raise ValueError(f"the {backend} backend needs a redis_url")
    if backend == "cluster":
        overrides.setdefault("redis_cluster", True)
    async with running_app(redis_url if shared else None, **overrides) as (app, port):
        raw = RawRedisPublisher(redis_url, cluster=backend == "cluster") if shared else None
        try:
            yield Stack(
                backend=backend,
                url=f"http://127.0.0.1:{port}",
                port=port,
                publish=project_publisher(app),
                app=app,
                redis_url=redis_url if shared else None,
                raw=raw,
            )
        finally:
            if raw is not None:
                await raw.close()
