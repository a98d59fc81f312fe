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
from .updates import CheckedUpdate, InvalidUpdate, Update


def now_ms() -> int:
    return int(time.time() * 1000)


def checked_price(symbol: str, price: float, timestamp: int | None = None, **extra: Any) -> CheckedUpdate:
    """One price as a checked update; raises ValueError (SymbolError, InvalidUpdate) if not valid."""
    fields = {**extra, "symbol": symbol, "price": price}
    if timestamp is not None:
        fields["timestamp"] = timestamp
    return checked_update(fields)


def make_update(symbol: str, price: float, timestamp: int | None = None, **extra: Any) -> dict[str, Any]:
    """A checked update object, as put on a Kafka topic; raises ValueError (SymbolError, InvalidUpdate) if not valid."""
    return checked_price(symbol, price, timestamp, **extra).to_dict()


def checked_update(data: Any) -> CheckedUpdate:
    """The check of an update our own producers publish (API, CLI, HTTP,
    simulator): symbol uppercased, `timestamp` the current time when absent.
    Raises ValueError (SymbolError, InvalidUpdate) if not valid."""
    if not isinstance(data, dict):
        raise InvalidUpdate("an update is a JSON object")
    rest = dict(data)
    # symbol, price, timestamp first: the order clients see, as in the original.
    update = {
        "symbol": normalize_symbol(rest.pop("symbol", None)),
        "price": rest.pop("price", None),
        "timestamp": rest.pop("timestamp") if "timestamp" in rest else now_ms(),
    }
    update.update(rest)
    return CheckedUpdate(update)


def received_update(data: dict[str, Any]) -> CheckedUpdate:
    """The check of an update object received from a feed (a Kafka record):
    symbol uppercased, every other field as given, nothing filled in (a record
    without a timestamp is refused). Raises ValueError (SymbolError, InvalidUpdate)."""
    fields = dict(data)
    fields["symbol"] = normalize_symbol(fields.get("symbol"))
    return CheckedUpdate(fields)


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
        stored = await self.publish_checked(checked_price(symbol, price, timestamp, **extra))
        return stored.to_dict()

    async def publish_checked(self, update: CheckedUpdate) -> Update:
        """Publish an update checked where it entered."""
        stored = await self.broker.publish(update)
        assert stored is not None  # only a dedupe key makes the broker skip one
        return stored

    async def publish_update(self, update: CheckedUpdate, dedupe: tuple[str, int] | None = None) -> Update | None:
        """Publish an update of an at-least-once feed (e.g. Kafka, checked by
        `received_update`); None if `dedupe` shows it was published before."""
        return await self.broker.publish(update, dedupe=dedupe)


def _backend_settings(settings: Settings | None) -> Settings:
    settings = settings or Settings.from_env()
    if not settings.backend_url:
        raise RuntimeError("publishing from another process needs Redis: set REDIS_URL or REDIS_HOST")
    return settings


async def publish(
    symbol: str, price: float, timestamp: int | None = None, *, settings: Settings | None = None, **extra: Any
) -> dict[str, Any]:
    """Publish one price to the Redis of `settings` (default: from the environment)."""
    settings = _backend_settings(settings)
    return await publish_checked(checked_price(symbol, price, timestamp, **extra), settings=settings)


async def publish_checked(update: CheckedUpdate, *, settings: Settings | None = None) -> dict[str, Any]:
    """Publish a checked update to the Redis of `settings` (default: from the
    environment); returns it as clients receive it (with `seq`)."""
    settings = _backend_settings(settings)
    broker = create_broker(settings)
    try:
        stored = await Publisher(broker).publish_checked(update)
    finally:
        await broker.close()
    return stored.to_dict()


def send_price_update(symbol: str, price: float, **extra: Any) -> dict[str, Any]:
    """Synchronous publish, like the original `sendPriceUpdate(symbol, price)`."""
    return asyncio.run(publish(symbol, price, **extra))
