"""Shared fixtures: a private Redis, server processes, in-process stacks, clients.

Fixtures
  redis_server   (session) RedisServer: .url .port .kill() .start() .restart() .client()
  redis_url      (function) URL of redis_server after FLUSHALL (restarted if a test killed it)
  raw_publisher  (function) RawRedisPublisher on redis_url: the original SET+PUBLISH path
  servers        (function) ServerFactory: await servers.start(env, redis_url=...) -> ServerProcess
  backend        (function, parametrized) "memory" | "redis", and "cluster" with WITH_CLUSTER=1
                 (only in CLUSTER_MODULES: the core suite run once on a Redis Cluster)
  redis_cluster  (session) RedisCluster of 3 masters + 3 replicas: .url .masters() .owner_of(key)
  cluster_url    (function) URL of a node of redis_cluster after FLUSHALL on every master
  backend_url    (function) the Redis URL for `backend` (None for memory)
  stack          (function) Stack for `backend`: .url .ws_url .publish(symbol, price, **extra)
                 .raw (Redis only) .redis_url; the server runs in the test's event loop
  clients        (function) ClientPool: await clients.sio(url, kind="python"|"node"),
                 await clients.ws(url), await clients.readme(url); all closed at teardown
  node_harness   (session) installs tests/js/node_modules if missing; skips without node
  sio_kind       (function, parametrized) "python" | "node": which Socket.IO client library
  client_kind    (function, parametrized) "python" | "node" | "ws": python-socketio, node
                 socket.io-client, or a raw /live-price WebSocket
  nginx_factory  (function) await nginx_factory(["127.0.0.1:PORT", ...]) -> Nginx in front of
                 those instances, configured as the README documents; skips without nginx
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import pytest

from tests.support.clients import CLIENT_KINDS, SIO_KINDS, ClientPool
from tests.support.inprocess import Stack, inprocess_stack, url_for_backend
from tests.support.nginx import Nginx, nginx_executable_path, start_nginx
from tests.support.node import ensure_node_modules, node_executable
from tests.support.processes import stop_process
from tests.support.publishing import RawRedisPublisher
from tests.support.redis_cluster import RedisCluster
from tests.support.redis_server import RedisServer
from tests.support.servers import ServerFactory

BACKENDS = ("memory", "redis") + (("cluster",) if os.environ.get("WITH_CLUSTER") else ())
# The core tests that also run on a Redis Cluster with WITH_CLUSTER=1 (about a minute):
# subscribe, snapshot, delivery, history, resume, live candles.
CLUSTER_MODULES = ("test_live_price", "test_history", "test_resume", "test_socketio_clients", "test_candle_streams")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    redis_server.ensure_running()
    redis_server.flushall()
    return redis_server.url


@pytest.fixture
async def raw_publisher(redis_url: str) -> AsyncIterator[RawRedisPublisher]:
    publisher = RawRedisPublisher(redis_url)
    try:
        yield publisher
    finally:
        await publisher.close()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[ServerFactory]:
    factory = ServerFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.close_all()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    cluster = RedisCluster(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster_url(redis_cluster: RedisCluster) -> str:
    redis_cluster.wait_healthy()
    redis_cluster.flushall()
    return redis_cluster.url


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "cluster" and request.module.__name__.rsplit(".", 1)[-1] not in CLUSTER_MODULES:
        pytest.skip("runs on one Redis only")
    return request.param


@pytest.fixture
def backend_url(backend: str, request: pytest.FixtureRequest) -> str | None:
    return url_for_backend(backend, request)


@pytest.fixture
async def stack(backend: str, request: pytest.FixtureRequest) -> AsyncIterator[Stack]:
    redis = request.getfixturevalue("backend_url")
    async with inprocess_stack(backend, redis) as ready:
        yield ready


@pytest.fixture
async def clients() -> AsyncIterator[ClientPool]:
    pool = ClientPool()
    try:
        yield pool
    finally:
        await pool.close_all()


@pytest.fixture(scope="session")
def node_harness() -> None:
    if node_executable() is None:
        if os.environ.get("CI"):
            pytest.fail("node is not on PATH (needed for the Node.js client tests)")
        pytest.skip("node is not on PATH")
    ensure_node_modules()


@pytest.fixture(params=SIO_KINDS)
def sio_kind(request: pytest.FixtureRequest) -> str:
    if request.param == "node":
        request.getfixturevalue("node_harness")
    return request.param


@pytest.fixture(params=CLIENT_KINDS)
def client_kind(request: pytest.FixtureRequest) -> str:
    if request.param == "node":
        request.getfixturevalue("node_harness")
    return request.param


@pytest.fixture
def nginx_executable() -> str:
    executable = nginx_executable_path()
    if executable is None:
        pytest.skip("nginx is not installed (Debian: apt-get install -y nginx)")
    return executable


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
