"""Framing shared by both transports."""

from __future__ import annotations

import asyncio
import socket
from typing import Any, Callable, Collection

import orjson

from ..errors import ClientError, ErrorCode
from ..outbox import Item
from ..updates import ws_frame, ws_text_frame

# A client that does not read cannot complete a closing handshake: after this
# long its connection is cut.
ABORT_AFTER = 2.0


def text_frame(text: str) -> bytes:
    return ws_text_frame(text.encode())


def binary_frame(data: bytes) -> bytes:
    return ws_frame(data, 0x82)


def write_items(
    transport: asyncio.Transport, items: Collection[Item], limit: int | None, frame_of: Callable[[Item], bytes]
) -> bool:
    """A connection's pending items in one write, unless more than `limit`
    bytes already wait to be sent: then nothing, and False. A closing
    connection takes (and drops) everything."""
    if transport.is_closing():
        return True
    if limit is not None and transport.get_write_buffer_size() > limit:
        return False
    if len(items) == 1:
        for item in items:
            transport.write(frame_of(item))
    else:
        transport.write(b"".join([frame_of(item) for item in items]))
    return True


def dumps(value: Any) -> str:
    """JSON text; raises orjson.JSONEncodeError (a TypeError) for what JSON
    decoders accept but orjson refuses to write: lone surrogates, integers
    beyond 64 bits."""
    return orjson.dumps(value).decode()


def failed_by_code(failed: list[dict[str, str]]) -> list[ClientError]:
    """Per-symbol failures grouped into one error per code, for clients without acks."""
    groups: dict[str, list[str]] = {}
    for entry in failed:
        groups.setdefault(entry["code"], []).append(entry["symbol"])
    messages = {
        ErrorCode.INVALID_SYMBOL.value: "not valid symbols",
        ErrorCode.FORBIDDEN_SYMBOL.value: "not entitled to these symbols",
        ErrorCode.INVALID_INTERVAL.value: "no live candles at this interval",
    }
    return [ClientError(ErrorCode(code), messages.get(code, code), symbols=symbols) for code, symbols in groups.items()]


def abort_later(transport: asyncio.Transport | None) -> None:
    """Cut a connection that has not closed by itself in time."""
    if transport is not None:
        asyncio.get_running_loop().call_later(ABORT_AFTER, transport.abort)


def bound_send_buffer(transport: asyncio.BaseTransport | None, outbound_bytes: int) -> None:
    """Keep the kernel's send buffer within the connection's outbound budget.

    Linux grows a socket's send buffer to megabytes for a client that stops
    reading; the bytes would sit there unseen, so the client would count as
    behind (conflated, then dropped) only long after. The kernel doubles the
    value set, so half the budget is asked for.
    """
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, max(4096, outbound_bytes // 2))
        except OSError:
            pass  # not a TCP socket (a Unix socket, say): nothing to bound
