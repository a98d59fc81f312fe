"""Several instances behind nginx on one Redis: both transports through the proxy, and failover.

tests/support/nginx.py holds the configuration the README documents; this
test runs exactly that text (with its own addresses) in front of two instances.
"""

from __future__ import annotations

import pytest

from tests.support.inprocess import atomic_publisher
from tests.support.nginx import render_site
from tests.support.servers import connections_on
from tests.support.waiting import eventually

pytestmark = [pytest.mark.slow, pytest.mark.node]

RECONNECTING = {"reconnection": True, "reconnectionDelay": 100, "reconnectionDelayMax": 500, "timeout": 5000}


async def test_instances_behind_nginx_stream_and_fail_over(
    servers, redis_url, clients, node_harness, nginx_factory
) -> None:
    instances = await servers.start_many(2, redis_url=redis_url)
    nginx = await nginx_factory([f"127.0.0.1:{s.port}" for s in instances])

    node = await clients.sio(nginx.url, kind="node", options=RECONNECTING)  # polling, then upgrade
    polling = await clients.sio(nginx.url, transports=["polling"], reconnection=True)
    ws = await clients.ws(nginx.url)
    for client in (node, polling):
        assert (await client.subscribe(["AAPL"]))["ok"] is True
    assert (await ws.subscribe("AAPL"))["ok"] is True
    await eventually(lambda: node.transport == "websocket", what="socket.io-client to upgrade through nginx")

    async with atomic_publisher(redis_url) as publish:
        await publish("AAPL", 189.0, n=1)
        for client in (node, polling, ws):
            await client.expect_update(lambda u: u.get("n") == 1)

        # All three come from one address, so all are on one instance: kill it, as a crash would.
        counts = [await connections_on(s) for s in instances]
        assert sorted(counts) == [0, 3], counts
        victim, survivor = (instances[0], instances[1]) if counts[0] else (instances[1], instances[0])
        victim.kill()

        for client in (node, polling):
            await client.wait_disconnected(timeout=10)
            await client.timeline.wait_for(
                lambda items: items.count(("connect",)) >= 2, 15.0, "a reconnect through nginx"
            )
            # A new connection has no subscriptions: the client subscribes again.
            assert (await client.subscribe(["AAPL"]))["ok"] is True
        await ws.wait_closed(timeout=10)
        ws = await clients.ws(nginx.url)
        assert (await ws.subscribe("AAPL"))["ok"] is True
        assert await connections_on(survivor) == 3

        await publish("AAPL", 190.0, n=2)
        for client in (node, polling, ws):
            await client.expect_update(lambda u: u.get("n") == 2)
    await eventually(lambda: node.transport == "websocket", what="the reconnected client to upgrade again")
    assert nginx.proc.poll() is None, nginx.log()
    # While nginx still runs, so that the clients' goodbyes reach the server.
    await clients.close_all()


def test_documented_site_renders_for_any_instances() -> None:
    site = render_site("80", ["10.0.0.11:5000", "10.0.0.12:5000"])
    assert "hash $remote_addr consistent;" in site
    assert "    server 10.0.0.12:5000 max_fails=1 fail_timeout=10s;" in site
    assert "{" in site and "{{" not in site
