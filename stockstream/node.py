"""The Node: every long-lived part of one stockstream instance, wired once."""
from __future__ import annotations

import asyncio
import logging

from .auth import TokenVerifier
from .broker import create_broker
from .config import Settings
from .errors import ClientError, ErrorCode
from .hub import Hub
from .outbox import FlushScheduler
from .publisher import Publisher
from .session import Services
from .simulator import Simulator
from .transports.socketio import SocketIOTransport
from .transports.websocket import WebSocketTransport

log = logging.getLogger("stockstream")

SHUTDOWN_NOTICE = ClientError(ErrorCode.SERVER_SHUTDOWN, "the server is shutting down; reconnect to another instance")


class Node:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.broker = create_broker(settings)
        self.hub = Hub(self.broker)
        self.scheduler = FlushScheduler()
        self.services = Services(settings, self.hub, self.broker, TokenVerifier(settings), self.scheduler)
        self.publisher = Publisher(self.broker)
        self.socketio = SocketIOTransport(self.services)
        self.websocket = WebSocketTransport(self.services)
        self.simulator = (Simulator(self.publisher, settings.simulate_symbols, settings.simulate_rate)
                          if settings.simulate else None)
        self.draining = False
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def ready(self) -> bool:
        return self.broker.ready and not self.draining

    async def start(self) -> None:
        await self.broker.start(self.hub)
        if self.broker.kind == "memory":
            log.info("no Redis configured: using the embedded in-process backend (one instance only)")
        else:
            log.info("using Redis backend at %s", _redact(self.settings.backend_url or ""))
        if self.simulator is not None:
            self._tasks.append(asyncio.create_task(self.simulator.run(), name="stockstream-simulator"))
            log.info("simulator publishing %d symbols at %.1f updates/s each",
                     len(self.settings.simulate_symbols), self.settings.simulate_rate)

    async def drain(self) -> None:
        """Before stopping: tell every client, give their queues a bounded time to empty."""
        if self.draining:
            return
        self.draining = True
        sessions = list(self.hub.sessions)
        for session in sessions:
            session.outbox.push(session.connection.error_text(SHUTDOWN_NOTICE))
        self.scheduler.flush_now()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.shutdown_timeout / 2
        while loop.time() < deadline and any(s.outbox.pending() or s.connection.backlog() for s in sessions):
            self.scheduler.flush_now()
            await asyncio.sleep(0.02)
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.socketio.shutdown()
        self.scheduler.close()
        await self.broker.close()


def _redact(url: str) -> str:
    """A Redis URL without its password, for logs."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.split('@', 1)[1]}"
