"""nginx in front of stockstream instances, configured as the README documents.

NGINX_SITE is the configuration the README's "Behind nginx" section shows;
tests run exactly that text (with their own addresses).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import aiohttp

from .waiting import eventually, free_port

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


async def start_nginx(executable: str, prefix: Path, addresses: list[str]) -> Nginx:
    prefix.mkdir(parents=True, exist_ok=True)
    port = free_port()
    (prefix / "stockstream.conf").write_text(render_site(f"127.0.0.1:{port}", addresses))
    (prefix / "nginx.conf").write_text(NGINX_MAIN.format(prefix=prefix))
    with open(prefix / "nginx.log", "wb") as log:
        proc = subprocess.Popen(
            [executable, "-p", str(prefix), "-e", "stderr", "-c", str(prefix / "nginx.conf")],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
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


def nginx_executable_path() -> str | None:
    return shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
