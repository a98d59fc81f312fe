"""Publishing price updates the way third-party publishers do: straight into Redis."""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from .waiting import now_ms


def make_update(symbol: str, price: float, **extra: Any) -> dict[str, Any]:
    """An update as the original design's sendPriceUpdate() builds it, plus extra fields."""
    update: dict[str, Any] = {"symbol": symbol, "price": price, "timestamp": now_ms()}
    update.update(extra)
    return update


def channel_of(symbol: str) -> str:
    return "stock:" + symbol.upper()


class RawRedisPublisher:
    """The original publisher: `SET stock:X json` then `PUBLISH stock:X json` (two commands).

    With cluster=True, what a third-party publisher does on a Redis Cluster:
    `SET stock:{X} json` then `SPUBLISH stock:{X} json`.
    """

    def __init__(self, redis_url: str, cluster: bool = False, retries: bool = True) -> None:
        """`retries=False`: a command whose connection fails raises instead of being sent
        again (a retry after a lost reply would publish the same message twice)."""
        self.cluster = cluster
        options: dict[str, Any] = {"socket_timeout": 5}
        if not retries:
            options["retry"] = Retry(NoBackoff(), 0)
        self.redis: Any = (
            RedisCluster.from_url(redis_url, **options) if cluster else aioredis.from_url(redis_url, **options)
        )

    def _key(self, symbol: str) -> str:
        return "stock:{" + symbol.upper() + "}" if self.cluster else channel_of(symbol)

    async def _publish(self, key: str, payload: bytes) -> int:
        if self.cluster:
            node = self.redis.get_node_from_key(key)
            return await self.redis.execute_command("SPUBLISH", key, payload, target_nodes=node)
        return await self.redis.publish(key, payload)

    async def publish(self, symbol: str, price: float, **extra: Any) -> dict[str, Any]:
        update = make_update(symbol, price, **extra)
        await self.set_and_publish(update)
        return update

    async def set_and_publish(self, update: dict[str, Any] | str | bytes, symbol: str | None = None) -> None:
        """SET + PUBLISH of one message; `symbol` names the channel (default: the update's)."""
        payload = _payload(update)
        key = self._key(symbol or update["symbol"])  # type: ignore[index]  # without `symbol`, the update is a dict
        await self.redis.set(key, payload)
        await self._publish(key, payload)

    async def publish_only(self, symbol: str, payload: dict[str, Any] | str | bytes) -> int:
        """PUBLISH without SET (e.g. a malformed message); returns the receiver count."""
        return await self._publish(self._key(symbol), _payload(payload))

    async def store_only(self, update: dict[str, Any] | str | bytes, symbol: str | None = None) -> None:
        """SET the snapshot key only."""
        key = self._key(symbol or update["symbol"])  # type: ignore[index]  # without `symbol`, the update is a dict
        await self.redis.set(key, _payload(update))

    async def close(self) -> None:
        await self.redis.aclose()


def _payload(update: dict[str, Any] | str | bytes) -> bytes:
    if isinstance(update, bytes):
        return update
    if isinstance(update, str):
        return update.encode()
    return json.dumps(update, separators=(",", ":")).encode()
