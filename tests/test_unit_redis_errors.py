"""Every failure a Redis command can raise reaches the broker's callers as BackendUnavailable."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from stockstream.broker import BackendUnavailable
from stockstream.broker.redis.errors import unavailable_on_failure


@pytest.mark.parametrize(
    "failure",
    [
        RedisConnectionError("connection refused"),
        RedisTimeoutError("read timed out"),
        ResponseError("CLUSTERDOWN the cluster is down"),
        RedisClusterException("no node covers slot 42"),
        ConnectionResetError("reset by peer"),
        asyncio.TimeoutError(),
    ],
)
def test_redis_failures_become_backend_unavailable(failure: BaseException) -> None:
    """Redis errors, cluster errors (no RedisError), socket errors and timeouts
    all raise BackendUnavailable, naming Redis and keeping the cause."""
    with pytest.raises(BackendUnavailable, match="^redis: ") as raised:
        with unavailable_on_failure():
            raise failure
    assert raised.value.__cause__ is failure


def test_other_errors_pass_through() -> None:
    """A bug (or a cancellation) is not disguised as an outage."""
    with pytest.raises(KeyError):
        with unavailable_on_failure():
            raise KeyError("u")
    with pytest.raises(asyncio.CancelledError):
        with unavailable_on_failure():
            raise asyncio.CancelledError()


async def test_a_broker_without_its_redis_answers_backend_unavailable() -> None:
    """Every command path of the Redis broker (publish, reads, history, sessions)
    raises BackendUnavailable when nothing listens at REDIS_URL."""
    from tests.support.waiting import free_port

    from stockstream.broker.redis.broker import RedisBroker
    from stockstream.config import Settings
    from stockstream.updates import CheckedUpdate

    url = f"redis://127.0.0.1:{free_port()}/0"
    broker = RedisBroker(url, Settings.from_env({"REDIS_URL": url}))
    try:
        calls = [
            broker.publish(CheckedUpdate({"symbol": "ERR", "price": 1.0, "timestamp": 1})),
            broker.snapshots(["ERR"]),
            broker.history("ERR"),
            broker.symbols_with_price(10),
            broker.sessions.save("p", b"s", 1),
            broker.sessions.take("p"),
        ]
        for call in calls:
            with pytest.raises(BackendUnavailable):
                await asyncio.wait_for(call, 10)
    finally:
        await broker.close()
