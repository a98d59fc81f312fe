"""The Node: every long-lived part of one stockstream instance, wired once."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import socketio

from .auth import TokenVerifier
from .broker import create_broker
from .config import Settings, redact_url
from .errors import ClientError, ErrorCode
from .hub import Hub
from .outbox import FlushScheduler
from .publisher import Publisher
from .session import Services, Session
from .simulator import Simulator
from .transports.socketio_transport import SocketIOTransport
from .transports.websocket import WebSocketTransport

log = logging.getLogger("stockstream")

ADMIN_NAMESPACE = "/admin"
ADMIN_STOP_WAIT = 0.5
DRAIN_POLL = 0.02
# Of a drain's budget, the share for queues to empty; the rest is for closing.
FLUSH_SHARE = 0.75
MIN_CLOSE_WAIT = 0.05

SHUTDOWN_NOTICE = ClientError(ErrorCode.SERVER_SHUTDOWN, "the server is shutting down; reconnect to another instance")


class Node:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.broker = create_broker(settings)
        self.hub = Hub(self.broker)
        self.scheduler = FlushScheduler(self.settings.write_delay)
        self.services = Services(settings, self.hub, self.broker, TokenVerifier(settings), self.scheduler)
        self.publisher = Publisher(self.broker)
        self.socketio = SocketIOTransport(self.services)
        self.websocket = WebSocketTransport(self.services)
        self.simulator = (
            Simulator(self.publisher, settings.simulate_symbols, settings.simulate_rate) if settings.simulate else None
        )
        self.admin_ui = instrument_admin_ui(self.socketio.server, settings) if settings.admin_ui else None
        self.draining = False
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def ready(self) -> bool:
        return self.broker.ready and not self.draining

    async def start(self) -> None:
        await self.broker.start(self.hub)
        if self.broker.embedded:
            log.info("no Redis configured: using the embedded in-process backend (one instance only)")
        else:
            log.info("using Redis backend at %s", redact_url(self.settings.backend_url or ""))
        if self.admin_ui is not None:
            log.info(
                "Socket.IO Admin UI enabled (read-only) on namespace %s for user %r",
                ADMIN_NAMESPACE,
                self.settings.admin_user,
            )
        if self.simulator is not None:
            self._tasks.append(asyncio.create_task(self.simulator.run(), name="stockstream-simulator"))
            log.info(
                "simulator publishing %d symbols at %.1f updates/s each",
                len(self.settings.simulate_symbols),
                self.settings.simulate_rate,
            )

    async def drain(self, budget: float | None = None) -> None:
        """Before stopping: tell every client, let their queues empty, close them; within `budget` seconds.

        /readyz answers 503 from the start, so load balancers send new clients
        elsewhere, while the listener keeps feeding the clients still here.
        """
        if self.draining:
            return
        self.draining = True
        loop = asyncio.get_running_loop()
        budget = self.settings.shutdown_timeout / 2 if budget is None else budget
        end = loop.time() + budget
        flushed_by = loop.time() + budget * FLUSH_SHARE
        told: set[Session] = set()
        closing: dict[Session, asyncio.Future[None]] = {}
        while True:
            # Clients that connect while draining are told as well.
            for session in set(self.services.sessions) - told:
                session.notify_shutdown(SHUTDOWN_NOTICE)
                told.add(session)
            self.scheduler.flush_now()
            # Each client is let go once everything queued for it has left,
            # so a stalled one does not keep the others waiting.
            for session in told - closing.keys():
                if session.drained:
                    closing[session] = asyncio.ensure_future(session.close(going_away=True))
            if len(closing) == len(told) or loop.time() >= flushed_by:
                break
            await asyncio.sleep(DRAIN_POLL)
        for session in told - closing.keys():
            closing[session] = asyncio.ensure_future(session.close(going_away=True))
        if closing:
            # A close can wait on the client (a long-poll that never comes
            # back): those still open at the end are cut when the server stops.
            _, open_still = await asyncio.wait(closing.values(), timeout=max(MIN_CLOSE_WAIT, end - loop.time()))
            if open_still:
                log.warning("%d connections did not close in time; cutting them", len(open_still))
        log.info("told %d clients about the shutdown and closed their connections", len(told))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.admin_ui is not None:
            await stop_admin_ui(self.admin_ui)
            self.admin_ui = None
        await self.socketio.shutdown()
        self.websocket.shutdown()
        self.scheduler.close()
        self.services.heartbeats.close()
        await self.broker.close()


def instrument_admin_ui(server: socketio.AsyncServer, settings: Settings) -> Any:
    """Serve the Socket.IO Admin UI's events on ADMIN_NAMESPACE, behind ADMIN_USER/ADMIN_PASSWORD.

    Read-only: a socket's rooms mirror the subscriptions its session owns, so
    joining or leaving rooms from the UI would leave the two disagreeing.
    """
    return server.instrument(
        auth={"username": settings.admin_user, "password": settings.admin_password},
        mode="development",
        read_only=True,
        namespace=ADMIN_NAMESPACE,
    )


async def stop_admin_ui(admin: Any) -> None:
    # The instrumentation patches python-socketio's classes for the whole
    # process: undo it, so another server in this process starts clean.
    admin.uninstrument()
    try:
        # Its stats loop notices the stop only after its next interval.
        await asyncio.wait_for(admin.shutdown(), ADMIN_STOP_WAIT)
    except asyncio.TimeoutError:
        pass
