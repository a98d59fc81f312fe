"""A price simulator: a random walk over well-known symbols."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import signal
import time

from typing import TYPE_CHECKING

from .backoff import Backoff
from .config import redact_url
from .publisher import PricePublisher, Publisher

if TYPE_CHECKING:
    from .config import Settings

log = logging.getLogger("stockstream.simulator")

START_PRICES = {
    "AAPL": 189.45,
    "MSFT": 415.20,
    "GOOGL": 152.80,
    "AMZN": 178.30,
    "NVDA": 880.10,
    "META": 495.60,
    "TSLA": 172.60,
    "BRK.B": 408.90,
    "JPM": 195.40,
    "V": 277.30,
    "JNJ": 152.10,
    "WMT": 60.20,
    "XOM": 118.70,
    "PG": 161.80,
    "MA": 470.50,
    "HD": 345.20,
    "KO": 60.40,
    "PEP": 168.90,
    "^GSPC": 5204.30,
    "BTC-USD": 67250.00,
}
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Daily volatility of about 2%, spread over the ticks of a trading day.
STEP_VOLATILITY = 0.0004


class Simulator:
    def __init__(
        self, publisher: PricePublisher, symbols: tuple[str, ...], rate: float, seed: int | None = None
    ) -> None:
        self._publisher = publisher
        self._symbols = symbols
        self._interval = 1.0 / rate
        self._random = random.Random(seed)
        self._prices = {s: START_PRICES.get(s, self._random.uniform(20, 500)) for s in symbols}
        self.published = 0
        self._stopping = asyncio.Event()

    def next_price(self, symbol: str) -> float:
        price = self._prices[symbol] * math.exp(self._random.gauss(0, STEP_VOLATILITY))
        self._prices[symbol] = price
        return round(price, 4 if price < 1 else 2)

    async def run(self, duration: float | None = None) -> None:
        """Publish one update per symbol every interval, for `duration` seconds, until stop(), or forever."""
        backoff = Backoff(initial=0.2, cap=5.0)
        started = time.monotonic()
        end = math.inf if duration is None else started + duration
        tick = started
        failing = False
        while not self._stopping.is_set() and time.monotonic() < end:
            try:
                for symbol in self._symbols:
                    if self._stopping.is_set():
                        return
                    await self._publisher.publish(
                        symbol, self.next_price(symbol), volume=self._random.randint(1, 500) * 100
                    )
                    self.published += 1
                backoff.reset()
                if failing:
                    failing = False
                    log.info("simulator publishing again")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep simulating through backend outages
                delay = backoff.next()
                # One warning per outage; its retries go to debug.
                (log.debug if failing else log.warning)("simulator cannot publish (%s); retrying", exc)
                failing = True
                await self._pause(min(delay, end - time.monotonic()))
                tick = time.monotonic()
                continue
            tick += self._interval
            await self._pause(min(tick, end) - time.monotonic())

    def stop(self) -> None:
        """End run() after the update being published, so `published` counts exactly what went out."""
        self._stopping.set()

    async def _pause(self, delay: float) -> None:
        if delay > 0:
            try:
                await asyncio.wait_for(self._stopping.wait(), delay)
            except asyncio.TimeoutError:
                pass


async def simulate(
    settings: "Settings", *, kafka: bool = False, duration: float | None = None, seed: int | None = None
) -> int:
    """`python -m stockstream simulate`: publish to Redis, or produce to Kafka,
    until `duration` ends or SIGINT/SIGTERM; says what it does when it starts and stops."""
    from .broker import create_broker

    if kafka:
        from .kafka_bridge import KafkaPublisher, UpdateProducer

        async with UpdateProducer(settings) as producer:
            sim = Simulator(KafkaPublisher(producer), settings.simulate_symbols, settings.simulate_rate, seed)
            await _run_reporting(
                sim, settings, f"Kafka topic {settings.kafka_topic} at {settings.kafka_bootstrap}", duration
            )
        return 0
    if not settings.backend_url:
        raise RuntimeError(
            "simulate needs Redis (REDIS_URL or REDIS_HOST), or --kafka; "
            "`python run.py --simulate` runs a simulator inside the server instead"
        )
    broker = create_broker(settings)
    try:
        sim = Simulator(Publisher(broker), settings.simulate_symbols, settings.simulate_rate, seed)
        await _run_reporting(sim, settings, f"Redis at REDIS_URL={redact_url(settings.backend_url)}", duration)
    finally:
        await broker.close()
    return 0


async def _run_reporting(sim: Simulator, settings: "Settings", target: str, duration: float | None) -> None:
    symbols = settings.simulate_symbols
    log.info(
        "simulating %d symbols (%s) at %g updates/s each into %s; %s",
        len(symbols),
        ", ".join(symbols),
        settings.simulate_rate,
        target,
        f"stopping after {duration:g}s" if duration is not None else "Ctrl-C to stop",
    )
    loop = asyncio.get_running_loop()
    began = loop.time()
    running = asyncio.ensure_future(sim.run(duration))
    stopped_by: list[str] = []

    def stop(sig: signal.Signals) -> None:
        stopped_by.append(sig.name)
        if len(stopped_by) == 1:
            sim.stop()
        else:
            running.cancel()  # a second signal does not wait for a publish that hangs

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop, sig)
    try:
        await running
    except asyncio.CancelledError:
        if not running.cancelled() or len(stopped_by) < 2:
            raise
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
    why = f"{stopped_by[0]} received" if stopped_by else "duration reached"
    log.info("simulator stopped (%s): published %d updates in %.1fs", why, sim.published, loop.time() - began)
