"""A price simulator: a random walk over well-known symbols."""
from __future__ import annotations

import asyncio
import logging
import math
import random
import time

from typing import TYPE_CHECKING

from .backoff import Backoff
from .publisher import Publisher

if TYPE_CHECKING:
    from .config import Settings

log = logging.getLogger("stockstream.simulator")

START_PRICES = {
    "AAPL": 189.45, "MSFT": 415.20, "GOOGL": 152.80, "AMZN": 178.30, "NVDA": 880.10,
    "META": 495.60, "TSLA": 172.60, "BRK.B": 408.90, "JPM": 195.40, "V": 277.30,
    "JNJ": 152.10, "WMT": 60.20, "XOM": 118.70, "PG": 161.80, "MA": 470.50,
    "HD": 345.20, "KO": 60.40, "PEP": 168.90, "^GSPC": 5204.30, "BTC-USD": 67250.00,
}
# Daily volatility of about 2%, spread over the ticks of a trading day.
STEP_VOLATILITY = 0.0004


class Simulator:
    def __init__(self, publisher: Publisher, symbols: tuple[str, ...], rate: float, seed: int | None = None) -> None:
        self._publisher = publisher
        self._symbols = symbols
        self._interval = 1.0 / rate
        self._random = random.Random(seed)
        self._prices = {s: START_PRICES.get(s, self._random.uniform(20, 500)) for s in symbols}
        self.published = 0

    def next_price(self, symbol: str) -> float:
        price = self._prices[symbol] * math.exp(self._random.gauss(0, STEP_VOLATILITY))
        self._prices[symbol] = price
        return round(price, 4 if price < 1 else 2)

    async def run(self, duration: float | None = None) -> None:
        """Publish one update per symbol every interval, for `duration` seconds or forever."""
        backoff = Backoff(initial=0.2, cap=5.0)
        started = time.monotonic()
        tick = started
        while duration is None or time.monotonic() - started < duration:
            try:
                for symbol in self._symbols:
                    await self._publisher.publish(symbol, self.next_price(symbol),
                                                  volume=self._random.randint(1, 500) * 100)
                    self.published += 1
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep simulating through backend outages
                delay = backoff.next()
                log.warning("simulator cannot publish (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                tick = time.monotonic()
                continue
            tick += self._interval
            await asyncio.sleep(max(0.0, tick - time.monotonic()))


class _KafkaPublisher:
    """Publisher-shaped producer: the simulator's updates go to the Kafka topic."""

    def __init__(self, producer: "object") -> None:
        self._producer = producer

    async def publish(self, symbol: str, price: float, timestamp: int | None = None, **extra: object) -> None:
        from .publisher import make_update
        await self._producer.send(make_update(symbol, price, timestamp, **extra))  # type: ignore[attr-defined]


async def simulate(settings: "Settings", *, kafka: bool = False, duration: float | None = None,
                   seed: int | None = None) -> int:
    """`python -m stockstream simulate`: publish to Redis, or produce to Kafka."""
    from .broker import create_broker
    if kafka:
        from .kafka_bridge import UpdateProducer
        async with UpdateProducer(settings) as producer:
            sim = Simulator(_KafkaPublisher(producer), settings.simulate_symbols, settings.simulate_rate, seed)  # type: ignore[arg-type]
            await sim.run(duration)
        return 0
    if not settings.backend_url:
        raise RuntimeError("simulate needs Redis (REDIS_URL or REDIS_HOST), or --kafka; "
                           "`python run.py --simulate` runs a simulator inside the server instead")
    broker = create_broker(settings)
    try:
        sim = Simulator(Publisher(broker), settings.simulate_symbols, settings.simulate_rate, seed)
        await sim.run(duration)
        log.info("published %d updates", sim.published)
    finally:
        await broker.close()
    return 0
