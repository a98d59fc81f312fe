"""The ingest interface: the simulator publishes through any PricePublisher, and
the Kafka one puts the same update objects on the topic as the CLI does."""

from __future__ import annotations

import asyncio
from typing import Any

from stockstream.kafka_bridge import KafkaPublisher
from stockstream.simulator import Simulator


class FakeProducer:
    """Records what would be sent to the Kafka topic."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(self, update: dict[str, Any]) -> None:
        self.sent.append(update)


async def test_kafka_publisher_sends_one_checked_update_per_price() -> None:
    """KafkaPublisher.publish sends one update object (symbol normalised, timestamp kept, extras kept)."""
    producer = FakeProducer()
    publisher = KafkaPublisher(producer)  # type: ignore[arg-type]  # a stand-in for UpdateProducer
    await publisher.publish("aapl", 189.5, 1_700_000_000_000, volume=300)
    assert producer.sent == [{"symbol": "AAPL", "price": 189.5, "timestamp": 1_700_000_000_000, "volume": 300}]


async def test_the_simulator_publishes_through_a_kafka_publisher() -> None:
    """The simulator drives a KafkaPublisher like the broker's Publisher: one update per symbol per tick."""
    producer = FakeProducer()
    sim = Simulator(KafkaPublisher(producer), ("AAPL", "MSFT"), rate=1000.0, seed=1)  # type: ignore[arg-type]  # a stand-in producer
    task = asyncio.create_task(sim.run())
    try:
        async with asyncio.timeout(5):
            while len(producer.sent) < 4:
                await asyncio.sleep(0.001)
    finally:
        sim.stop()
        await asyncio.wait_for(task, 5)
    assert [u["symbol"] for u in producer.sent[:4]] == ["AAPL", "MSFT", "AAPL", "MSFT"]
    assert all(isinstance(u["price"], float) and u["price"] > 0 and u["volume"] > 0 for u in producer.sent)
