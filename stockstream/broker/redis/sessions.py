"""Recoverable Socket.IO sessions (connection state recovery) kept in Redis.

A disconnected session's state is saved under its pid for the recovery
window, readable by any instance, and taken (GETDEL) by the instance the
client reconnects to: two instances offered the same pid cannot both
recover it.
"""

from __future__ import annotations

from typing import Any

from .. import SessionStore
from ..keys import KeyLayout
from .errors import unavailable_on_failure


class RedisSessionStore(SessionStore):
    """Sessions in the broker's Redis (or cluster), over its command client."""

    def __init__(self, client: Any, keys: KeyLayout) -> None:
        self._redis = client
        self._keys = keys

    async def save(self, pid: str, data: bytes, ttl: float) -> None:
        with unavailable_on_failure():
            await self._redis.set(self._keys.session(pid), data, px=max(1, int(ttl * 1000)))

    async def take(self, pid: str) -> bytes | None:
        with unavailable_on_failure():
            value: bytes | None = await self._redis.getdel(self._keys.session(pid))
        return value
