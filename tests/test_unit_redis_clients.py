"""Every Redis client is built in `broker/clients.py`, each with the options its use needs (no Redis needed)."""
from __future__ import annotations

import ast
from pathlib import Path

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
    elsewhere = [hit for path in sorted(PACKAGE.rglob("*.py"))
                 if path != PACKAGE / "broker" / "clients.py" and "bench" not in path.relative_to(PACKAGE).parts
                 for hit in builders_in(path)]
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
    shard = clients.shard_listener_client("127.0.0.1", 1)
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
