"""Engine.IO under Socket.IO: heartbeats (PING_INTERVAL, PING_TIMEOUT) and the
upgrade from long-polling to WebSocket.

Clients that answer the server's pings stay connected and keep streaming for as
long as they like; a client that stops answering is disconnected once
PING_TIMEOUT has passed, and its connection is closed, not left open. An
upgrade that goes wrong closes the WebSocket and leaves long-polling working.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import AsyncIterator

import aiohttp
import pytest

from tests.support.clients import ClientPool
from tests.support.inprocess import Stack, inprocess_stack
from tests.support.protocol import assert_subscribe_ack
from tests.support.raw_ws import RawWebSocket, open_socketio
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

    return len(node_of(stack.app).services.sessions)


async def test_open_packet_announces_the_configured_heartbeat(fast_heartbeats: Stack) -> None:
    ws, handshake = await open_socketio("127.0.0.1", fast_heartbeats.port)
    try:
        assert handshake["pingInterval"] == INTERVAL * 1000
        assert handshake["pingTimeout"] == TIMEOUT * 1000
    finally:
        ws.close()


async def test_client_that_stops_answering_pings_is_closed(fast_heartbeats: Stack) -> None:
    ws, _ = await open_socketio("127.0.0.1", fast_heartbeats.port)
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
    ws, _ = await open_socketio("127.0.0.1", fast_heartbeats.port)
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
    connected = await asyncio.gather(
        *(
            clients.sio(fast_heartbeats.url, kind=kind, **options)
            for kind in ("python", "node")
            for options in ({}, {"transports": ["polling"]})
        )
    )
    for client in connected:
        assert_subscribe_ack(await client.subscribe("AAPL"), ["AAPL"], ["AAPL"])
    await asyncio.sleep(SEVERAL_HEARTBEATS)  # the thing under test is time passing
    for client in connected:
        assert not client.disconnected.is_set(), f"{client!r} disconnected: {client.disconnect_reason!r}"
    published = await fast_heartbeats.publish("AAPL", 11.25)
    for client in connected:
        assert_same_json(await client.expect_update(), published)


class PollingClient:
    """Engine.IO long-polling by hand, as a client does before it upgrades: a
    background loop polls, answers pings and keeps every other packet."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.url = url + "/socket.io/?EIO=4&transport=polling"
        self.sid = ""
        self.packets: asyncio.Queue[str] = asyncio.Queue()
        self._loop: asyncio.Task[None] | None = None

    async def open(self) -> None:
        opened = await self._get()
        assert opened.startswith("0{"), opened
        self.sid = json.loads(opened[1:])["sid"]
        await self.post("40")
        self._loop = asyncio.create_task(self._poll())
        await self.expect("40")

    async def close(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)

    async def _get(self) -> str:
        async with self.http.get(self.url + (f"&sid={self.sid}" if self.sid else "")) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.text()

    async def post(self, payload: str) -> None:
        async with self.http.post(f"{self.url}&sid={self.sid}", data=payload) as resp:
            assert resp.status == 200, await resp.text()

    async def _poll(self) -> None:
        while True:
            packets = (await self._get()).split("\x1e")  # packets are joined by a record separator
            for packet in packets:
                if packet == "2":
                    await self.post("3")
                elif packet != "6":
                    self.packets.put_nowait(packet)
            if packets == ["6"]:
                await asyncio.sleep(0.05)  # the server answers NOOP at once while an upgrade is tried

    async def expect(self, prefix: str, timeout: float = 5) -> str:
        deadline = time.monotonic() + timeout
        while True:
            assert self._loop is not None and not self._loop.done(), f"long-polling failed: {self._loop}"
            try:
                packet = await asyncio.wait_for(self.packets.get(), 0.2)
            except asyncio.TimeoutError:
                assert time.monotonic() < deadline, f"no {prefix!r} packet by long-polling within {timeout}s"
                continue
            if packet.startswith(prefix):
                return packet


@contextlib.asynccontextmanager
async def long_polling(stack: Stack) -> AsyncIterator[PollingClient]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        polling = PollingClient(http, stack.url)
        await polling.open()
        try:
            yield polling
        finally:
            await polling.close()


@contextlib.asynccontextmanager
async def upgrade_attempt(stack: Stack, sid: str) -> AsyncIterator[RawWebSocket]:
    ws = await RawWebSocket.open(
        "127.0.0.1", stack.port, f"/socket.io/?EIO=4&transport=websocket&sid={sid}", rcvbuf=None
    )
    try:
        yield ws
    finally:
        ws.close()


def server_closed(ws: RawWebSocket, frames: list[tuple[int, bytes]]) -> bool:
    """The server closed the WebSocket: a close frame, or the connection ended."""
    return ws.eof or any(opcode == 0x8 for opcode, _ in frames)


async def test_wrong_probe_closes_the_websocket_and_polling_goes_on(fast_heartbeats: Stack) -> None:
    async with long_polling(fast_heartbeats) as polling:
        async with upgrade_attempt(fast_heartbeats, polling.sid) as ws:
            await ws.send_text("2nope")
            frames = await ws.drain(timeout=5)
            assert server_closed(ws, frames), f"the failed upgrade's WebSocket was not closed: {frames!r}"
        await asyncio.sleep(SEVERAL_HEARTBEATS)  # heartbeats go on by long-polling
        await polling.post('421["subscribe","AAPL"]')
        ack = json.loads((await polling.expect("431"))[3:])[0]
        assert_subscribe_ack(ack, ["AAPL"], ["AAPL"])
        published = await fast_heartbeats.publish("AAPL", 12.5)
        update = json.loads((await polling.expect('42["stockUpdate"'))[2:])[1]
        assert_same_json(update, published)


async def test_upgrade_left_unfinished_is_closed(fast_heartbeats: Stack) -> None:
    async with long_polling(fast_heartbeats) as polling, upgrade_attempt(fast_heartbeats, polling.sid) as ws:
        await ws.send_text("2probe")
        assert await ws.next_text() == "3probe"
        # ... and never the upgrade packet: given up after the ping interval and timeout.
        frames = await ws.drain(timeout=INTERVAL + TIMEOUT + 5)
        assert server_closed(ws, frames), f"the unfinished upgrade's WebSocket is still open: {frames!r}"
