"""Several instances behind nginx on one Redis: both transports through the proxy, and failover.

NGINX_SITE is the configuration the README documents; this test runs exactly
that text (with its own addresses) in front of two instances.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest

from tests.support.inprocess import atomic_publisher
from tests.support.processes import stop_process
from tests.support.waiting import eventually, free_port

pytestmark = [pytest.mark.slow, pytest.mark.node]

# For the http context (e.g. /etc/nginx/conf.d/stockstream.conf). Placeholders:
# {listen} (e.g. 80) and {servers} (one `server HOST:PORT ...;` line per instance).
NGINX_SITE = """\
# WebSocket upgrades pass through to the instance; plain requests send Connection: close.
map $http_upgrade $connection_upgrade {{
    default upgrade;
    ''      close;
}}

upstream stockstream {{
    # Sticky sessions: every request of a Socket.IO long-polling session must
    # reach the instance that holds it, so pick the instance by client address.
    # (Behind another proxy, restore the client address with the realip module.)
    hash $remote_addr consistent;
    # An instance that refuses connections is skipped for fail_timeout, and
    # its clients' reconnects go to the others.
{servers}
}}

server {{
    listen {listen};

    location / {{
        proxy_pass http://stockstream;
        proxy_http_version 1.1;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection $connection_upgrade;
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;

        # Streams are long-lived and flow to the client as they come.
        proxy_buffering off;
        # Longer than Socket.IO's ping interval (25 s) and a long-poll's wait.
        proxy_read_timeout 1h;
        proxy_send_timeout 1h;
        # A dead instance is found fast and the request retried on the next one.
        proxy_connect_timeout 2s;
        proxy_next_upstream error timeout;
    }}
}}
"""

UPSTREAM_SERVER = "    server {address} max_fails=1 fail_timeout=10s;"

# What the test adds around the site to run nginx unprivileged in a directory of its own.
NGINX_MAIN = """\
daemon off;
master_process off;
pid {prefix}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {prefix}/stockstream.conf;
}}
"""


def render_site(listen: str, addresses: list[str]) -> str:
    servers = "\n".join(UPSTREAM_SERVER.format(address=a) for a in addresses)
    return NGINX_SITE.format(listen=listen, servers=servers)


class Nginx:
    def __init__(self, prefix: Path, port: int, proc: subprocess.Popen) -> None:
        self.prefix = prefix
        self.port = port
        self.proc = proc

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return (self.prefix / "nginx.log").read_text(errors="replace")


@pytest.fixture
def nginx_executable() -> str:
    executable = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if executable is None:
        pytest.skip("nginx is not installed (Debian: apt-get install -y nginx)")
    return executable


async def start_nginx(executable: str, prefix: Path, addresses: list[str]) -> Nginx:
    prefix.mkdir(parents=True, exist_ok=True)
    port = free_port()
    (prefix / "stockstream.conf").write_text(render_site(f"127.0.0.1:{port}", addresses))
    (prefix / "nginx.conf").write_text(NGINX_MAIN.format(prefix=prefix))
    with open(prefix / "nginx.log", "wb") as log:
        proc = subprocess.Popen([executable, "-p", str(prefix), "-e", "stderr", "-c", str(prefix / "nginx.conf")],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    nginx = Nginx(prefix, port, proc)

    async def serving() -> bool:
        assert proc.poll() is None, f"nginx exited with {proc.returncode}: {nginx.log()}"
        try:
            async with aiohttp.ClientSession() as http, http.get(nginx.url + "/healthz") as resp:
                return resp.status == 200
        except aiohttp.ClientError:
            return False
    await eventually(serving, 10.0, "nginx to proxy /healthz")
    return nginx


@pytest.fixture
async def nginx_factory(nginx_executable: str, tmp_path: Path) -> AsyncIterator[Any]:
    started: list[Nginx] = []

    async def start(addresses: list[str]) -> Nginx:
        nginx = await start_nginx(nginx_executable, tmp_path / f"nginx-{len(started)}", addresses)
        started.append(nginx)
        return nginx
    try:
        yield start
    finally:
        for nginx in started:
            stop_process(nginx.proc)


async def connections_on(server) -> float:
    """Open client connections of one instance, from its /metrics."""
    async with aiohttp.ClientSession() as http, http.get(server.url + "/metrics") as resp:
        text = await resp.text()
    return sum(float(line.split()[1]) for line in text.splitlines()
               if line.startswith("stockstream_connections_active{"))


RECONNECTING = {"reconnection": True, "reconnectionDelay": 100, "reconnectionDelayMax": 500, "timeout": 5000}


async def test_instances_behind_nginx_stream_and_fail_over(servers, redis_url, clients, node_harness,
                                                           nginx_factory) -> None:
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
            await client.timeline.wait_for(lambda items: items.count(("connect",)) >= 2, 15.0,
                                           "a reconnect through nginx")
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
