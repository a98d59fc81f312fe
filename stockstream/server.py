"""Running one instance: the event loop, the listening socket, signals."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading

from aiohttp import web

from .app import create_app, node_of
from .config import Settings
from .tls import server_ssl_context

log = logging.getLogger("stockstream")

SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Closing needs a moment even when draining used the whole budget.
MIN_CLEANUP = 0.5
WATCHDOG_GRACE = 1.0


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
    """Serve until SIGTERM or SIGINT, then shut down gracefully within SHUTDOWN_TIMEOUT.

    The budget is split: half for telling clients and letting their queues
    drain (while /readyz answers 503 and the listener still feeds them), the
    rest for closing what remains, the Redis connections last.
    """
    budget = settings.shutdown_timeout
    # A certificate that cannot be used stops start-up before anything runs.
    ssl_context = server_ssl_context(settings)
    app = create_app(settings)
    node = node_of(app)
    # Requests still running once the listening socket is closed get an
    # eighth of the budget to finish, and as long again once cancelled.
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=budget / 8)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in SIGNALS:
        loop.add_signal_handler(sig, _on_signal, sig, stop, budget)
    shutdown_began: float | None = None
    try:
        await runner.setup()
        site = web.TCPSite(runner, settings.host, settings.port, ssl_context=ssl_context)
        try:
            await site.start()
        except OSError as exc:
            raise RuntimeError(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}") from None
        port = _bound_port(runner, settings.port)
        log.info(
            "stockstream serving on %s (listening on %s)",
            public_url(settings.host, port, tls=ssl_context is not None),
            _listen_address(settings.host, port),
        )
        await stop.wait()
        shutdown_began = loop.time()
        await node.drain(budget / 2)
    finally:
        began = loop.time() if shutdown_began is None else shutdown_began
        try:
            await asyncio.wait_for(runner.cleanup(), max(MIN_CLEANUP, began + budget - loop.time()))
        except asyncio.TimeoutError:
            log.warning("shutdown did not finish within SHUTDOWN_TIMEOUT=%.1fs; exiting anyway", budget)
        finally:
            for sig in SIGNALS:
                loop.remove_signal_handler(sig)
    log.info("stopped")


# A server bound to every interface is opened, on this machine, through localhost.
WILDCARD_HOSTS = ("", "0.0.0.0", "::", "[::]")


def public_url(host: str, port: int, tls: bool = False) -> str:
    """The URL a person can open to reach a server listening on host:port."""
    scheme = "https" if tls else "http"
    host = "localhost" if host in WILDCARD_HOSTS else _bracketed(host)
    default_port = 443 if tls else 80
    return f"{scheme}://{host}" + ("" if port == default_port else f":{port}")


def _listen_address(host: str, port: int) -> str:
    return f"{_bracketed(host)}:{port}"


def _bracketed(host: str) -> str:
    """An IPv6 address in brackets, as URLs and host:port write it."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _bound_port(runner: web.AppRunner, configured: int) -> int:
    """The port actually listened on (PORT=0 lets the system choose one)."""
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return configured


def _on_signal(sig: signal.Signals, stop: asyncio.Event, budget: float) -> None:
    if not stop.is_set():
        log.info("%s received: shutting down within %.1fs", sig.name, budget)
        stop.set()
        # Drain and clean-up are each bounded; the watchdog bounds the rest
        # (a library that ignores cancellation, say), so the process always ends.
        watchdog = threading.Timer(budget + WATCHDOG_GRACE, _force_exit, args=(budget,))
        watchdog.daemon = True
        watchdog.start()
    else:
        # The shutdown is bounded anyway; a second signal does not cut it short.
        log.info("%s received again: shutdown already under way", sig.name)


def _force_exit(budget: float) -> None:
    log.error("still running %.1fs after SHUTDOWN_TIMEOUT=%.1fs; forcing exit", WATCHDOG_GRACE, budget)
    logging.shutdown()
    os._exit(1)


def run(settings: Settings) -> None:
    loop_name = install_event_loop(settings.event_loop)
    log.debug("event loop: %s", loop_name)
    asyncio.run(serve(settings))
