"""Publishing prices: the one way updates enter stockstream's own pipeline.

Every producer (API, CLI, simulator, Kafka bridge) publishes through a
Broker's atomic publish: snapshot, `seq`, history entry and fan-out together.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

from .broker import Broker, create_broker
from .config import Settings
from .symbols import normalize_symbol
from .updates import InvalidUpdate, Update, validate_fields


def now_ms() -> int:
    return int(time.time() * 1000)


def make_update(symbol: str, price: float, timestamp: int | None = None, **extra: Any) -> dict[str, Any]:
    """A checked update object; raises ValueError (SymbolError, InvalidUpdate) if not valid."""
    fields = {**extra, "symbol": symbol, "price": price}
    if timestamp is not None:
        fields["timestamp"] = timestamp
    return checked_update(fields)


def checked_update(data: Any) -> dict[str, Any]:
    """A validated copy of an update object: symbol uppercased, `timestamp` the
    current time when absent. Raises ValueError (SymbolError, InvalidUpdate) if not valid."""
    if not isinstance(data, dict):
        raise InvalidUpdate("an update is a JSON object")
    rest = dict(data)
    # symbol, price, timestamp first: the order clients see, as in the original.
    update = {"symbol": normalize_symbol(rest.pop("symbol", None)), "price": rest.pop("price", None),
              "timestamp": rest.pop("timestamp") if "timestamp" in rest else now_ms()}
    update.update(rest)
    validate_fields(update)
    return update


class PricePublisher(Protocol):
    """What a source of prices (the simulator, the CLI) publishes through:
    `Publisher` into a broker, or `kafka_bridge.KafkaPublisher` onto the topic."""

    async def publish(self, symbol: str, price: float, timestamp: int | None = None, **extra: Any) -> object:
        """Publish one price."""


class Publisher:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    async def publish(self, symbol: str, price: float, timestamp: int | None = None, **extra: Any) -> dict[str, Any]:
        """Publish one price; returns the update as clients receive it (with `seq`)."""
        stored = await self.publish_checked(make_update(symbol, price, timestamp, **extra))
        return stored.to_dict()

    async def publish_checked(self, update: dict[str, Any]) -> Update:
        """Publish an update that `checked_update` returned."""
        stored = await self.broker.publish(update)
        assert stored is not None  # only a dedupe key makes the broker skip one
        return stored

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
