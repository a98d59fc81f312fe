"""Running one instance: the event loop, the listening socket, signals."""
from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from .app import create_app, node_of
from .config import Settings

log = logging.getLogger("stockstream")


def install_event_loop(choice: str) -> str:
    """Use uvloop when asked (or on `auto` when it is installed)."""
    if choice in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise
        else:
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
            return "uvloop"
    return "asyncio"


async def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully within the timeout."""
    app = create_app(settings)
    node = node_of(app)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=settings.shutdown_timeout / 2)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    log.info("stockstream serving on http://%s:%d", settings.host, settings.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        log.info("shutting down")
        # Not ready first, so load balancers stop sending new clients, then
        # tell every client while the listener still serves.
        try:
            await asyncio.wait_for(node.drain(), settings.shutdown_timeout / 2)
        except asyncio.TimeoutError:
            log.warning("clients did not drain in time")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await asyncio.wait_for(runner.cleanup(), settings.shutdown_timeout)
    log.info("stopped")


def run(settings: Settings) -> None:
    loop_name = install_event_loop(settings.event_loop)
    log.debug("event loop: %s", loop_name)
    asyncio.run(serve(settings))
