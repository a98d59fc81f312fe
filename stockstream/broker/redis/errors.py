"""Every failure of a Redis command, as the one error the broker's callers handle.

redis-py raises RedisError (connection, timeout, response errors), its
cluster client also RedisClusterException (no reachable node, slots not
covered, which is no RedisError), and a socket may raise OSError (a
TimeoutError included). Callers of the broker see BackendUnavailable only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from redis.exceptions import RedisClusterException, RedisError

from .. import BackendUnavailable

# What a Redis command may raise when Redis cannot serve it right now.
REDIS_FAILURES: tuple[type[BaseException], ...] = (RedisError, RedisClusterException, OSError)


@contextmanager
def unavailable_on_failure() -> Iterator[None]:
    """Run the block's commands; a Redis failure raises BackendUnavailable."""
    try:
        yield
    except REDIS_FAILURES as exc:
        raise BackendUnavailable(f"redis: {exc}") from exc
