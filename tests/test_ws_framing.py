"""RFC 6455 framing of the WebSockets stockstream serves itself (transports/ws_protocol.py).

Once aiohttp has answered the handshake the connection is framed by
stockstream's own protocol object: fragmented messages are reassembled (a
multi-byte character may be split between fragments), control frames may come
between fragments, the size limit counts a message's fragments together
(close 1009), the closing handshake is answered, and bytes sent right behind
the upgrade request are not lost. Checked on /live-price and Socket.IO alike.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import time
from collections.abc import AsyncIterator

import pytest

from tests.support.inprocess import Stack, inprocess_stack
from tests.support.raw_ws import RawWebSocket, open_socketio
from tests.support.waiting import PROMPT

TEXT, CONTINUATION, CLOSE, PING, PONG = 0x1, 0x0, 0x8, 0x9, 0xA
LIMIT = 2048


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    async with inprocess_stack("memory", None, max_message_bytes=LIMIT) as stack:
        yield stack


async def open_live(stack: Stack) -> RawWebSocket:
    return await RawWebSocket.open("127.0.0.1", stack.port, "/live-price", rcvbuf=None)


async def frames_until_closed(ws: RawWebSocket, timeout: float = PROMPT) -> list[tuple[int, bytes]]:
    frames = await ws.drain(timeout)
    assert ws.eof, f"the server did not close the connection (frames {frames})"
    return frames


async def test_fragmented_message_with_a_split_character_is_one_request(stack: Stack) -> None:
    """A text message in three fragments, a ping between them and a
    three-byte character cut across two of them, is read as one request."""
    ws = await open_live(stack)
    try:
        message = json.dumps({"action": "subscribe", "symbol": "AAPL", "id": "€uro"}, ensure_ascii=False).encode()
        cut = message.index("€".encode()) + 1  # inside the character's three bytes
        await ws.send_frame(message[:cut], TEXT, fin=False)
        await ws.send_frame(b"between", PING)
        await ws.send_frame(message[cut : cut + 5], CONTINUATION, fin=False)
        await ws.send_frame(message[cut + 5 :], CONTINUATION, fin=True)
        reply = json.loads(await ws.next_text())
        assert reply["type"] == "subscribed" and reply["id"] == "€uro", reply
    finally:
        ws.close()


async def test_fragments_over_the_limit_together_close_with_1009(stack: Stack) -> None:
    """Fragments each under MAX_MESSAGE_BYTES but over it together close the connection with 1009."""
    ws = await open_live(stack)
    try:
        chunk = b"x" * (LIMIT // 2)
        await ws.send_frame(b'{"action": "subscribe", "pad": "' + chunk, TEXT, fin=False)
        await ws.send_frame(chunk, CONTINUATION, fin=False)
        await ws.send_frame(chunk + b'"}', CONTINUATION, fin=True)
        frames = await frames_until_closed(ws)
        closes = [payload for opcode, payload in frames if opcode == CLOSE]
        assert closes and struct.unpack("!H", closes[0][:2])[0] == 1009, frames
    finally:
        ws.close()


async def test_closing_handshake_is_answered(stack: Stack) -> None:
    """A client's close frame is answered with a close frame echoing its code, then the server closes TCP."""
    ws = await open_live(stack)
    try:
        await ws.send_frame(struct.pack("!H", 1000) + b"bye", CLOSE)
        frames = await frames_until_closed(ws)
        assert frames and frames[-1][0] == CLOSE and struct.unpack("!H", frames[-1][1][:2])[0] == 1000, frames
    finally:
        ws.close()


async def test_frame_sent_with_the_upgrade_request_is_read(stack: Stack) -> None:
    """A frame arriving in the same packet as the upgrade request (before the
    101 answer was read) is not lost in the hand-over from aiohttp."""
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.port)
    try:
        payload = b'{"action": "subscribe", "symbol": "MSFT", "id": 7}'
        mask = os.urandom(4)
        frame = bytes((0x81, 0x80 | len(payload))) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        writer.write(
            b"GET /live-price HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n" + frame
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), PROMPT)
        assert head.startswith(b"HTTP/1.1 101"), head
        assert b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head  # RFC 6455's own example key and answer
        deadline = loop.time() + PROMPT
        received = b""
        while b'"id":7' not in received and loop.time() < deadline:
            received += await asyncio.wait_for(reader.read(4096), max(0.01, deadline - loop.time()))
        assert b'"type":"subscribed"' in received and b'"id":7' in received, received
    finally:
        writer.close()


async def test_not_an_upgrade_is_answered_400(stack: Stack) -> None:
    """A plain GET, or a handshake with a bad key or version, gets HTTP 400, not a WebSocket."""
    for extra in (
        b"",
        b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n",
        b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", stack.port)
        try:
            writer.write(b"GET /live-price HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), PROMPT)
            assert head.startswith(b"HTTP/1.1 400"), (extra, head)
        finally:
            writer.close()


async def test_socketio_fragmented_packet_and_closing(stack: Stack) -> None:
    """On Socket.IO's WebSocket too: a fragmented Socket.IO event is one packet
    (answered through its ack), and a close frame is answered."""
    ws, _ = await open_socketio("127.0.0.1", stack.port)
    try:
        packet = b'421["subscribe","AAPL"]'
        await ws.send_frame(packet[:6], TEXT, fin=False)
        await ws.send_frame(packet[6:], CONTINUATION, fin=True)
        deadline = time.monotonic() + PROMPT
        while not (text := await ws.next_text()).startswith("431"):
            assert time.monotonic() < deadline, "no ack"
        assert json.loads(text[3:])[0]["ok"] is True, text
        await ws.send_frame(struct.pack("!H", 1000), CLOSE)
        frames = await frames_until_closed(ws)
        assert any(opcode == CLOSE for opcode, _ in frames), frames
    finally:
        ws.close()
