"""What stockstream relies on below aiohttp's public API (transports/aiohttp_internals.py).

WebSocket connections are taken from aiohttp once their handshake is answered.
Checked against aiohttp 3.14.5: an upgrade that changes a name or behaviour
listed in aiohttp_internals.py fails here, naming it, instead of somewhere
deep in an end-to-end test. Fast: reads aiohttp's source, plus one in-process
server for the take-over itself.
"""

from __future__ import annotations

import asyncio
import inspect

import aiohttp
import pytest
from aiohttp import web, web_protocol

from stockstream.transports import aiohttp_internals


def _require(condition: bool, relied_on: str) -> None:
    if not condition:
        pytest.fail(f"aiohttp changed: {relied_on} (relied on by transports/aiohttp_internals.py)", pytrace=False)


def test_checked_version() -> None:
    """The version aiohttp_internals.py was checked against is the one installed:
    after an upgrade, re-read aiohttp's RequestHandler and move CHECKED_VERSION."""
    _require(
        aiohttp.__version__ == aiohttp_internals.CHECKED_VERSION,
        f"version {aiohttp.__version__}, checked against {aiohttp_internals.CHECKED_VERSION}",
    )


def test_request_handler_keeps_the_upgrade_tail() -> None:
    """Bytes after an upgrade request wait in `RequestHandler._message_tail` while no payload parser is set."""
    source = inspect.getsource(web_protocol.RequestHandler.data_received)
    _require(
        "self._message_tail = tail" in source and "self._message_tail += data" in source,
        "RequestHandler.data_received keeps the bytes after an upgrade in _message_tail",
    )


def test_connection_lost_forgets_the_connection() -> None:
    """`connection_lost` leaves the server's list, closes only a transport it still
    holds (force_close), and cancels the handler task only with handler_cancellation."""
    lost = inspect.getsource(web_protocol.RequestHandler.connection_lost)
    _require("self._manager.connection_lost(self, exc)" in lost, "connection_lost removes the handler from its server")
    _require(
        "if handler_cancellation and self._task_handler is not None" in lost,
        "connection_lost cancels the handler task only with handler_cancellation",
    )
    force = inspect.getsource(web_protocol.RequestHandler.force_close)
    _require("if self.transport is not None" in force, "force_close closes the transport only if it still has one")


def test_finish_response_calls_only_prepare_and_write_eof() -> None:
    """After the handler returns, aiohttp writes through the response's `prepare` and `write_eof` only."""
    source = inspect.getsource(web_protocol.RequestHandler.finish_response)
    _require(
        "await prepare_meth(request)" in source and "await resp.write_eof()" in source,
        "finish_response calls resp.prepare(request) and resp.write_eof()",
    )


async def test_take_over_hands_the_connection_to_our_protocol() -> None:
    """Through a real server: after the take-over our protocol gets the bytes
    that followed the request, aiohttp's server no longer counts the
    connection, and its handler has finished."""
    received: list[bytes] = []
    made = asyncio.Event()
    finished = asyncio.Event()

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            made.set()

        def data_received(self, data: bytes) -> None:
            received.append(data)
            self.transport.write(data)  # type: ignore[attr-defined]

    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            aiohttp_internals.take_over(
                request,
                Echo(),
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            )
            return aiohttp_internals.Detached()
        finally:
            finished.set()

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        # The bytes after the request come in the same write: they wait in aiohttp's tail.
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nearly")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101"), head
        await asyncio.wait_for(made.wait(), 5)
        await asyncio.wait_for(finished.wait(), 5)
        writer.write(b"-later")
        echoed = b""
        while echoed != b"early-later":
            chunk = await asyncio.wait_for(reader.read(100), 5)
            assert chunk, f"closed after {echoed!r}"
            echoed += chunk
        assert b"".join(received) == b"early-later"
        assert runner.server is not None
        _require(not runner.server.connections, "the server forgets a connection whose handler called connection_lost")
        writer.close()
    finally:
        await runner.cleanup()
