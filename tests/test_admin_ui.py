"""Socket.IO Admin UI support: off by default; when on, behind credentials, streaming unaffected."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

import pytest
import socketio

from tests.support.inprocess import inprocess_stack
from tests.support.waiting import Inbox

ADMIN = {"username": "ops", "password": "s3cret-for-tests"}
ADMIN_ENV = {
    "ADMIN_UI": "true",
    "ADMIN_USER": ADMIN["username"],
    "ADMIN_PASSWORD": ADMIN["password"],
    "SIMULATE_SYMBOLS": "AAPL,MSFT",
    "SIMULATE_RATE": "20",
}
# The server answered and refused the namespace (not: the server could not be reached).
REFUSED = "namespaces failed to connect: /admin"


class AdminClient:
    """A client of the /admin namespace, as the Admin UI connects."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False, logger=False, engineio_logger=False)
        self.events: Inbox[tuple[str, Any]] = Inbox("admin events")

        def on_any(event: str, *args: Any) -> None:
            self.events.put((event, args))

        self.sio.on("*", on_any, namespace="/admin")

    async def connect(self, url: str, auth: Any) -> None:
        await self.sio.connect(url, namespaces=["/admin"], auth=auth, wait_timeout=5)

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.sio.disconnect(), 5)
        except (asyncio.TimeoutError, Exception):
            pass


@pytest.fixture
async def admin_client() -> AsyncIterator[AdminClient]:
    client = AdminClient()
    try:
        yield client
    finally:
        await client.close()


async def test_admin_namespace_is_off_by_default(admin_client: AdminClient) -> None:
    async with inprocess_stack("memory") as stack:
        with pytest.raises(socketio.exceptions.ConnectionError, match=REFUSED):
            await admin_client.connect(stack.url, ADMIN)


@pytest.mark.slow
async def test_admin_ui_needs_credentials_and_leaves_streaming_intact(servers, clients, admin_client) -> None:
    server = await servers.start(ADMIN_ENV, args=["--simulate"])

    intruder = AdminClient()
    try:
        with pytest.raises(socketio.exceptions.ConnectionError, match=REFUSED):
            await intruder.connect(server.url, {"username": ADMIN["username"], "password": "wrong"})
    finally:
        await intruder.close()

    sio = await clients.sio(server.url)
    assert (await sio.subscribe(["AAPL"]))["ok"] is True
    ws = await clients.ws(server.url)
    assert (await ws.subscribe("MSFT"))["ok"] is True

    await admin_client.connect(server.url, ADMIN)
    config = await admin_client.events.next(lambda e: e[0] == "config", what="the config event")
    # Read-only: the UI offers no actions that would change rooms behind the sessions' back.
    assert "JOIN" not in config[1][0]["supportedFeatures"]
    sockets = await admin_client.events.next(lambda e: e[0] == "all_sockets", what="the socket list")
    listed = {s["id"]: s for s in sockets[1][0] if s["nsp"] == "/"}
    assert sio.sio.get_sid() in listed
    assert "AAPL" in listed[sio.sio.get_sid()]["rooms"]
    stats = await admin_client.events.next(lambda e: e[0] == "server_stats", what="server stats")
    assert stats[1][0]["clientsCount"] >= 2

    # Streaming goes on while the admin watches, on both transports.
    seen_sio, seen_ws = len(sio.updates), len(ws.updates)
    await sio.expect_update(lambda u: u["symbol"] == "AAPL")
    await sio.updates.wait_for(lambda items: len(items) >= seen_sio + 5, what="five more AAPL updates")
    await ws.updates.wait_for(lambda items: len(items) >= seen_ws + 5, what="five more MSFT updates")
    assert (await sio.unsubscribe(["AAPL"]))["ok"] is True
    assert server.running
