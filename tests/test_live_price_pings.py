"""Protocol-level pings on `/live-price` (PING_INTERVAL, PING_TIMEOUT).

The server sends a WebSocket ping frame every PING_INTERVAL seconds; a client
that answers with pongs (every browser and WebSocket library does) stays
connected as long as it likes, and one that does not answer within
PING_TIMEOUT (a half-open connection, a frozen client) is closed (1011) and
its session released.
"""

from __future__ import annotations

import struct
import time
from typing import AsyncIterator

import pytest

from tests.support.inprocess import Stack, inprocess_stack
from tests.support.raw_ws import RawWebSocket
from tests.support.waiting import PROMPT, eventually

INTERVAL = 1  # whole seconds, as the settings take them
TIMEOUT = 1
SEVERAL_HEARTBEATS = 3 * (INTERVAL + TIMEOUT)
PING, PONG, CLOSE = 0x9, 0xA, 0x8


@pytest.fixture
async def fast_pings() -> AsyncIterator[Stack]:
    async with inprocess_stack("memory", None, ping_interval=INTERVAL, ping_timeout=TIMEOUT) as stack:
        yield stack


def session_count(stack: Stack) -> int:
    from stockstream.app import node_of

    return len(node_of(stack.app).services.sessions)


async def test_client_that_never_answers_pings_is_closed(fast_pings: Stack) -> None:
    """A client that reads but never answers pings gets a ping, then a close
    frame 1011 once PING_TIMEOUT has passed, and its connection ends."""
    ws = await RawWebSocket.open("127.0.0.1", fast_pings.port, "/live-price", rcvbuf=None)
    try:
        await eventually(lambda: session_count(fast_pings) == 1, PROMPT, "the session to exist")
        started = time.monotonic()
        frames = await ws.drain(timeout=SEVERAL_HEARTBEATS + 5)
        elapsed = time.monotonic() - started
        opcodes = [opcode for opcode, _ in frames]
        assert PING in opcodes, f"no ping frame, got opcodes {opcodes}"
        assert opcodes[-1] == CLOSE, f"the connection did not end with a close frame: {opcodes}"
        assert struct.unpack("!H", frames[-1][1][:2])[0] == 1011
        assert ws.eof, "the server left the connection open"
        # Not before the interval and the timeout; well within a few heartbeats.
        assert INTERVAL + TIMEOUT - 0.5 <= elapsed <= SEVERAL_HEARTBEATS + 4, elapsed
        await eventually(lambda: session_count(fast_pings) == 0, PROMPT, "the session to be released")
    finally:
        ws.close()


async def test_client_that_answers_pings_stays_open(fast_pings: Stack) -> None:
    """A client answering every ping with a pong is pinged again and again,
    and stays connected and served well past PING_INTERVAL + PING_TIMEOUT."""
    ws = await RawWebSocket.open("127.0.0.1", fast_pings.port, "/live-price", rcvbuf=None)
    try:
        pings = 0
        deadline = time.monotonic() + SEVERAL_HEARTBEATS
        while time.monotonic() < deadline:
            assert await ws.read_some(0.1), f"the server closed a client that answers pings ({ws.error})"
            for opcode, payload in ws.frames():
                assert opcode != CLOSE, "the server closed a client that answers pings"
                if opcode == PING:
                    pings += 1
                    await ws.send_frame(payload, PONG)
        assert pings >= 2, f"only {pings} pings in {SEVERAL_HEARTBEATS}s with PING_INTERVAL={INTERVAL}"
        await ws.send_text('{"action": "subscribe", "symbol": "AAPL", "id": 1}')
        reply = await ws.next_text()
        assert '"type":"subscribed"' in reply and '"id":1' in reply, reply
        assert session_count(fast_pings) == 1
    finally:
        ws.close()


async def test_unsolicited_pongs_and_client_pings_are_harmless(fast_pings: Stack) -> None:
    """A pong nobody asked for is ignored, and a client's own ping is answered
    with a pong carrying its payload."""
    ws = await RawWebSocket.open("127.0.0.1", fast_pings.port, "/live-price", rcvbuf=None)
    try:
        await ws.send_frame(b"early", PONG)
        await ws.send_frame(b"hello", PING)
        deadline = time.monotonic() + PROMPT
        answered = False
        while not answered and time.monotonic() < deadline:
            assert await ws.read_some(0.1), "the server closed the connection"
            answered = any(opcode == PONG and payload == b"hello" for opcode, payload in ws.frames())
        assert answered, "no pong for the client's ping"
    finally:
        ws.close()
