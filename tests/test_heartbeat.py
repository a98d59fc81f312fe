"""Socket.IO heartbeats: PING_INTERVAL and PING_TIMEOUT.

Clients that answer the server's pings stay connected and keep streaming for as
long as they like; a client that stops answering is disconnected once
PING_TIMEOUT has passed, and its connection is closed, not left open.
"""
from __future__ import annotations

import asyncio
import json
import time
from typing import AsyncIterator

import pytest

from tests.support.clients import ClientPool
from tests.support.inprocess import Stack, inprocess_stack
from tests.support.protocol import assert_subscribe_ack
from tests.support.raw_ws import RawWebSocket
from tests.support.waiting import assert_same_json, eventually

INTERVAL = 1  # Engine.IO announces whole seconds
TIMEOUT = 1
# Long enough for several heartbeats to have been missed (or answered).
SEVERAL_HEARTBEATS = 3 * (INTERVAL + TIMEOUT)


@pytest.fixture
async def fast_heartbeats(clients: ClientPool) -> AsyncIterator[Stack]:
    async with inprocess_stack("memory", None, ping_interval=INTERVAL, ping_timeout=TIMEOUT) as stack:
        try:
            yield stack
        finally:
            await clients.close_all()


def connection_count(stack: Stack) -> int:
    from stockstream.app import node_of
    return len(node_of(stack.app).hub.sessions)


async def raw_engineio(stack: Stack) -> tuple[RawWebSocket, dict]:
    ws = await RawWebSocket.open("127.0.0.1", stack.port, "/socket.io/?EIO=4&transport=websocket", rcvbuf=None)
    opened = await ws.next_text()
    assert opened.startswith("0{"), opened
    await ws.send_text("40")
    assert (await ws.next_text()).startswith("40")
    return ws, json.loads(opened[1:])


async def test_open_packet_announces_the_configured_heartbeat(fast_heartbeats: Stack) -> None:
    ws, handshake = await raw_engineio(fast_heartbeats)
    try:
        assert handshake["pingInterval"] == INTERVAL * 1000
        assert handshake["pingTimeout"] == TIMEOUT * 1000
    finally:
        ws.close()


async def test_client_that_stops_answering_pings_is_closed(fast_heartbeats: Stack) -> None:
    ws, _ = await raw_engineio(fast_heartbeats)
    try:
        await eventually(lambda: connection_count(fast_heartbeats) == 1, 5, "the session to exist")
        # Reads everything, answers nothing.
        frames = await ws.drain(timeout=SEVERAL_HEARTBEATS + 5)
        texts = [payload.decode() for opcode, payload in frames if opcode == 0x1]
        assert "2" in texts, f"no ping was sent: {texts!r}"
        assert ws.eof, f"the connection is still open after {SEVERAL_HEARTBEATS + 5:.0f}s without pongs: {texts!r}"
        await eventually(lambda: connection_count(fast_heartbeats) == 0, 5, "the session to be released")
    finally:
        ws.close()


async def test_raw_client_answering_pings_stays_connected(fast_heartbeats: Stack) -> None:
    ws, _ = await raw_engineio(fast_heartbeats)
    try:
        pings = 0
        deadline = time.monotonic() + SEVERAL_HEARTBEATS
        while time.monotonic() < deadline:
            assert await ws.read_some(0.1), f"the server closed a client that answered its pings ({ws.error})"
            for opcode, payload in ws.frames():
                if payload == b"2":
                    pings += 1
                    await ws.send_text("3")
        assert pings >= 3, f"only {pings} pings in {SEVERAL_HEARTBEATS:.1f}s with PING_INTERVAL={INTERVAL}"
        await ws.send_text('421["subscribe","AAPL"]')
        assert (await ws.next_text()).startswith("431")
        published = await fast_heartbeats.publish("AAPL", 10.5)
        while True:
            text = await ws.next_text()
            if text.startswith('42["stockUpdate"'):
                assert_same_json(json.loads(text[2:])[1], published)
                break
    finally:
        ws.close()


async def test_socketio_clients_outlive_many_heartbeats(fast_heartbeats: Stack, clients: ClientPool) -> None:
    """Both client libraries, on their default transports and on long-polling only."""
    connected = await asyncio.gather(*(
        clients.sio(fast_heartbeats.url, kind=kind, **options)
        for kind in ("python", "node") for options in ({}, {"transports": ["polling"]})))
    for client in connected:
        assert_subscribe_ack(await client.subscribe("AAPL"), ["AAPL"], ["AAPL"])
    await asyncio.sleep(SEVERAL_HEARTBEATS)  # the thing under test is time passing
    for client in connected:
        assert not client.disconnected.is_set(), f"{client!r} disconnected: {client.disconnect_reason!r}"
    published = await fast_heartbeats.publish("AAPL", 11.25)
    for client in connected:
        assert_same_json(await client.expect_update(), published)
