"""Every Redis client is built in `broker/clients.py`, each with the options its use needs
(no Redis needed, but for one check against a password-protected redis-server)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import redis.asyncio as aioredis

import stockstream
from stockstream.broker import clients

PACKAGE = Path(stockstream.__file__).parent
# What builds a redis-py client or pool.
BUILDERS = {"from_url", "from_pool", "Redis", "RedisCluster", "ConnectionPool", "BlockingConnectionPool"}


def builders_in(path: Path) -> list[str]:
    """`file:line name` of every call in `path` to a redis-py client or pool constructor."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in BUILDERS:
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {name}")
    return found


def test_redis_clients_are_built_in_one_module() -> None:
    """No module but broker/clients.py constructs a Redis client (the benchmark, which plays a
    third-party publisher with its own clients, aside)."""
    assert builders_in(PACKAGE / "broker" / "clients.py"), "the scan finds the builders where they are"
    elsewhere = [
        hit
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != PACKAGE / "broker" / "clients.py" and "bench" not in path.relative_to(PACKAGE).parts
        for hit in builders_in(path)
    ]
    assert not elsewhere, "Redis clients built outside broker/clients.py:\n" + "\n".join(elsewhere)


def _retries(client: aioredis.Redis) -> int:
    return client.connection_pool.connection_kwargs["retry"]._retries


async def test_each_client_keeps_its_options() -> None:
    """The command client waits on a blocking pool of 64 connections (5 s) and owns it; pub/sub
    clients never retry inside redis-py; every broker connection gives up connecting after 5 s;
    the probe's connect timeout is the one asked for."""
    url = "redis://127.0.0.1:1/0"
    command = clients.command_client(url)
    pool = command.connection_pool
    assert isinstance(pool, aioredis.BlockingConnectionPool)
    assert (pool.max_connections, pool.timeout) == (64, 5.0)
    assert pool.connection_kwargs["socket_connect_timeout"] == 5.0
    assert command.auto_close_connection_pool  # closing the broker's client closes its pool
    listener = clients.listener_client(url)
    shard = clients.shard_listener_client(url, "127.0.0.1", 1)
    recorder = clients.recorder_client(url)
    assert _retries(listener) == _retries(shard) == _retries(recorder) == 0
    assert listener.connection_pool.connection_kwargs["socket_connect_timeout"] == 5.0
    assert shard.connection_pool.connection_kwargs["socket_connect_timeout"] == 5.0
    probe = clients.probe_client(url, 2.5)
    assert probe.connection_pool.connection_kwargs["socket_connect_timeout"] == 2.5
    cluster = clients.cluster_client(url)
    assert cluster.nodes_manager.connection_kwargs["socket_connect_timeout"] == 5.0
    for client in (command, listener, shard, recorder, probe):
        await client.aclose()
    await cluster.aclose()


async def test_node_clients_keep_the_cluster_urls_credentials_and_tls() -> None:
    """A client of one cluster node (the listener's shard connections, the
    Socket.IO manager's) connects to that node with the user, password and TLS
    of the cluster's URL, not just its address."""
    url = "rediss://reader:s3cret@10.0.0.1:7000/0?ssl_cert_reqs=none"
    for client in (
        clients.shard_listener_client(url, "10.0.0.2", 7001),
        clients.manager_shard_client(url, "10.0.0.2", 7001),
    ):
        pool = client.connection_pool
        kwargs = pool.connection_kwargs
        assert (kwargs["host"], kwargs["port"]) == ("10.0.0.2", 7001)
        assert (kwargs["username"], kwargs["password"]) == ("reader", "s3cret")
        assert issubclass(pool.connection_class, aioredis.SSLConnection)
        await client.aclose()
    plain = clients.shard_listener_client("redis://10.0.0.1:7000", "10.0.0.2", 7001)
    assert plain.connection_pool.connection_class is aioredis.Connection
    await plain.aclose()


async def test_a_node_client_logs_in_to_a_password_protected_node(tmp_path: Path) -> None:
    """Against a real redis-server with a password, a node client built from a
    URL that carries the password answers PING; one without is refused."""
    from redis.exceptions import AuthenticationError, ResponseError
    from tests.support.redis_server import RedisServer

    server = RedisServer(tmp_path)
    server.start()
    try:
        server.client().config_set("requirepass", "s3cret")
        good = clients.shard_listener_client("redis://:s3cret@127.0.0.1:1/0", "127.0.0.1", server.port)
        bad = clients.shard_listener_client("redis://127.0.0.1:1/0", "127.0.0.1", server.port)
        try:
            assert await good.ping() is True
            with pytest.raises((AuthenticationError, ResponseError)):
                await bad.ping()
        finally:
            await good.aclose()
            await bad.aclose()
    finally:
        server.stop()
