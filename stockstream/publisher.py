"""Publishing prices: the one way updates enter stockstream's own pipeline.

Every producer (API, CLI, simulator, Kafka bridge) publishes through a
Broker's atomic publish: snapshot, `seq`, history entry and fan-out together.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

from .broker import Broker, create_broker
from .config import Settings
from .symbols import normalize_symbol
from .updates import Update, validate_fields


def now_ms() -> int:
    return int(time.time() * 1000)


def make_update(symbol: str, price: float, timestamp: int | None = None, **extra: Any) -> dict[str, Any]:
    """A checked update object; raises ValueError (SymbolError, InvalidUpdate) if not valid."""
    update = {**extra, "symbol": normalize_symbol(symbol), "price": price,
              "timestamp": now_ms() if timestamp is None else timestamp}
    # symbol, price, timestamp first: the order clients see, as in the original.
    ordered = {"symbol": update.pop("symbol"), "price": update.pop("price"), "timestamp": update.pop("timestamp")}
    ordered.update(update)
    validate_fields(ordered)
    return ordered


class Publisher:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    async def publish(self, symbol: str, price: float, timestamp: int | None = None, **extra: Any) -> dict[str, Any]:
        """Publish one price; returns the update as clients receive it (with `seq`)."""
        update = await self.broker.publish(make_update(symbol, price, timestamp, **extra))
        assert update is not None
        return update.to_dict()

    async def publish_update(self, update: dict[str, Any], dedupe: tuple[str, int] | None = None) -> Update | None:
        """Publish an update object as received (e.g. from Kafka); None if deduplicated."""
        fields = dict(update)
        fields["symbol"] = normalize_symbol(fields.get("symbol"))
        validate_fields(fields)
        return await self.broker.publish(fields, dedupe=dedupe)


async def publish(symbol: str, price: float, timestamp: int | None = None, *,
                  settings: Settings | None = None, **extra: Any) -> dict[str, Any]:
    """Publish one price to the Redis of `settings` (default: from the environment)."""
    settings = settings or Settings.from_env()
    if not settings.backend_url:
        raise RuntimeError("publishing from another process needs Redis: set REDIS_URL or REDIS_HOST")
    broker = create_broker(settings)
    try:
        return await Publisher(broker).publish(symbol, price, timestamp, **extra)
    finally:
        await broker.close()


def send_price_update(symbol: str, price: float, **extra: Any) -> dict[str, Any]:
    """Synchronous publish, like the original `sendPriceUpdate(symbol, price)`."""
    return asyncio.run(publish(symbol, price, **extra))
