"""Every use stockstream makes of aiohttp's non-public names.

Checked against aiohttp 3.14.5: tests/test_library_internals.py reads aiohttp
and fails, naming what changed, on an upgrade.

Once a WebSocket handshake is answered, its connection is handed to a
protocol object of ours (`take_over`), so that nothing of aiohttp's (the
request and its headers, the handler's task, its parser, reader and writer)
stays alive for the connection's life. That rests on:
- `RequestHandler._message_tail`: the bytes that arrived after the upgrade
  request, kept there while no payload parser is set (aiohttp only sets one in
  `WebSocketResponse.prepare`, which is not used here);
- `RequestHandler.connection_lost(None)`, called on the handler whose
  transport was taken (its `transport` attribute first set to None, else it
  closes it): it leaves the server's list of connections (so
  aiohttp's shutdown no longer waits for it), cancels its keep-alive timer
  and forgets the transport; it does not cancel the running handler task
  unless the server was built with `handler_cancellation` (checked here);
- `RequestHandler.finish_response`, which, after the handler returns,
  calls only the returned response's `prepare` and `write_eof`: `Detached`
  makes both do nothing, so nothing more is written.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

CHECKED_VERSION = "3.14.5"


class Detached(web.StreamResponse):
    """What a handler returns once its connection was taken: aiohttp writes nothing more.

    Its status (101) is what aiohttp's access log shows for the upgrade.
    """

    def __init__(self) -> None:
        super().__init__(status=101)

    async def prepare(self, request: web.BaseRequest) -> Any:
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


def take_over(request: web.BaseRequest, protocol: asyncio.Protocol, response_head: bytes) -> asyncio.Transport:
    """Write `response_head` and give the request's connection to `protocol`;
    aiohttp forgets the connection. The handler must then return `Detached()`."""
    handler: Any = request.protocol
    transport = request.transport
    if transport is None or transport.is_closing():
        raise ConnectionResetError("the client left before the handshake was answered")
    if getattr(getattr(handler, "_manager", None), "handler_cancellation", False):
        # connection_lost below would cancel the very task taking the connection over.
        raise RuntimeError("WebSocket take-over needs an aiohttp server without handler_cancellation")
    tail: bytes = handler._message_tail
    handler._message_tail = b""
    transport.set_protocol(protocol)
    handler.transport = None  # so that connection_lost does not close it
    handler.connection_lost(None)
    transport.write(response_head)
    protocol.connection_made(transport)
    if tail:
        protocol.data_received(tail)
    if not transport.is_closing() and not transport.is_reading():
        # aiohttp may have paused reading while the handler ran.
        transport.resume_reading()
    return transport
