"""Every Redis client stockstream opens, built here with the options its use needs.

Checked against redis-py 8.1. An option given in REDIS_URL (e.g.
`socket_connect_timeout`) wins over the ones set here: redis-py lets the
URL's query override keyword arguments.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

# A Redis host that drops packets would otherwise hold a connect for the
# operating system's TCP timeout (minutes).
CONNECT_TIMEOUT = 5.0
# Commands of one instance share at most this many connections.
COMMAND_CONNECTIONS = 64
# How long a command waits for a free connection of the pool.
POOL_WAIT = 5.0


def _no_retries() -> Retry:
    """No retries inside redis-py, for pub/sub connections: a silent reconnect
    would resubscribe without the resync (or the gap check) that must follow."""
    return Retry(NoBackoff(), 0)


def command_client(url: str) -> aioredis.Redis:
    """The broker's client for commands and scripts (publish, snapshots, history, sessions).

    A blocking pool: a burst of subscribes waits for a connection instead of
    failing past the pool's cap. The client owns the pool: closing it closes the pool.
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=COMMAND_CONNECTIONS, timeout=POOL_WAIT, socket_connect_timeout=CONNECT_TIMEOUT
    )
    return aioredis.Redis.from_pool(pool)


def listener_client(url: str) -> aioredis.Redis:
    """The client of the broker listener's pub/sub connection: no retries (see `_no_retries`)."""
    return aioredis.Redis.from_url(url, retry=_no_retries(), socket_connect_timeout=CONNECT_TIMEOUT)


def recorder_client(url: str) -> aioredis.Redis:
    """The history recorder's client (its pub/sub and its scripts): no retries,
    since a reconnect would hide a gap in the subscription. Its connect timeout
    is redis-py's default (5 s in redis-py 8)."""
    return aioredis.Redis.from_url(url, retry=_no_retries())


def probe_client(url: str, timeout: float) -> aioredis.Redis:
    """A client for one start-up check: its connect gives up after `timeout`
    seconds, so an unreachable Redis is reported at once rather than retried."""
    return aioredis.Redis.from_url(url, socket_connect_timeout=timeout)


def cluster_client(url: str) -> RedisCluster:
    """The cluster broker's client for commands and scripts: redis-py routes
    each keyed command to the master owning its slot and follows redirections."""
    return RedisCluster.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT)


def _node_client(url: str, host: str, port: int, **options: Any) -> aioredis.Redis:
    """A plain client of one cluster node, with what the cluster's URL says
    besides the address: user, password, TLS and its query options."""
    kwargs: dict[str, Any] = dict(parse_url(url))
    kwargs.pop("db", None)  # a cluster has database 0 only
    connection_class = kwargs.pop("connection_class", aioredis.Connection)
    kwargs.update(options, host=host, port=port)
    pool = aioredis.ConnectionPool(connection_class=connection_class, **kwargs)
    return aioredis.Redis.from_pool(pool)


def shard_listener_client(url: str, host: str, port: int) -> aioredis.Redis:
    """The cluster listener's pub/sub connection to one master: a plain client
    (redis-py's cluster pub/sub reads one shard at a time), no retries (see `_no_retries`)."""
    return _node_client(url, host, port, retry=_no_retries(), socket_connect_timeout=CONNECT_TIMEOUT)


def manager_cluster_client(url: str) -> RedisCluster:
    """The Socket.IO cluster manager's client for `SPUBLISH` and slot-map reads:
    redis-py's defaults, as python-socketio's own Redis manager uses them."""
    return RedisCluster.from_url(url)


def manager_shard_client(url: str, host: str, port: int) -> aioredis.Redis:
    """The Socket.IO cluster manager's `SSUBSCRIBE` connection to the master
    owning its channel: redis-py's defaults; the manager reconnects on any failure."""
    return _node_client(url, host, port)
