"""WRITE_DELAY: updates wait up to that long so that several share one write.

With the default (0) a client that gets an update every 20 ms gets a write per
update; with a delay its updates arrive in fewer writes, all of them, in order,
each at most about the delay late. On both transports.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.support.clients import ClientPool
from tests.support.inprocess import inprocess_stack
from tests.support.waiting import assert_same_json

UPDATES = 10
SPACING = 0.02


async def stream_and_count_writes(clients: ClientPool, transport: str, write_delay: float) -> dict[str, Any]:
    """Publish UPDATES updates SPACING apart to one subscribed client; the socket
    writes the server made for them, and how late the last one arrived."""
    from stockstream.app import node_of

    async with inprocess_stack("memory", None, write_delay=write_delay) as stack:
        try:
            if transport == "socketio":
                client: Any = await clients.sio(stack.url, transports=["websocket"])
                await client.subscribe("AAPL")
            else:
                client = await clients.ws(stack.url)
                await client.subscribe("AAPL")
            stats = node_of(stack.app).scheduler.stats
            await asyncio.sleep(write_delay + 0.1)  # the ack's write is done
            writes_before = stats.writes
            published = []
            for i in range(UPDATES):
                published.append(await stack.publish("AAPL", 100 + i))
                await asyncio.sleep(SPACING)
            last_published = time.monotonic()
            for expected in published:
                assert_same_json(await client.expect_update(), expected)
            return {"writes": stats.writes - writes_before, "last_late": time.monotonic() - last_published}
        finally:
            await clients.close_all()


@pytest.mark.parametrize("transport", ["socketio", "websocket"])
async def test_write_delay_batches_updates_into_fewer_writes(clients: ClientPool, transport: str) -> None:
    at_once = await stream_and_count_writes(clients, transport, 0.0)
    assert at_once["writes"] >= UPDATES - 1, f"without a delay each update should have its own write: {at_once}"
    delayed = await stream_and_count_writes(clients, transport, 0.1)
    # 10 updates over 0.2 s with a 0.1 s delay: about 3 writes.
    assert delayed["writes"] <= UPDATES // 2, f"WRITE_DELAY=0.1 did not batch: {delayed}"
    assert delayed["last_late"] < 0.1 + 0.5, f"the last update waited far longer than the delay: {delayed}"
