"""Kafka ingest: price updates from a Kafka topic, published atomically into Redis.

`python -m stockstream kafka-bridge` consumes the topic in a consumer group
(bridges in one group share its partitions) and publishes every valid record
through the broker's atomic publish, keyed by `(topic:partition, offset)`:
the publish skips an offset at or below the last one applied for that
partition, so a record read again after a crash or a rebalance is not
delivered twice. Offsets are committed only after Redis accepted the records
(at-least-once from Kafka, once into Redis). Records that are not valid
updates are skipped, counted, logged (rate-limited) and, when a dead-letter
topic is configured, copied there with the reason in a header.

`UpdateProducer` and `produce` are the producing side (`publish --kafka`,
`simulate --kafka`): records are keyed by symbol, so each symbol's updates
stay in one partition and keep their order.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Awaitable, Iterable, TypeVar

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord, TopicPartition
from redis.exceptions import RedisError

from .backoff import Backoff
from .broker import BackendUnavailable, create_broker
from .broker.clients import probe_client
from .broker.malformed import MalformedLog
from .config import Settings
from .publisher import Publisher, make_update, received_update
from .stop_signals import StopSignals
from .updates import InvalidUpdate, load_message

log = logging.getLogger("stockstream.kafka")
T = TypeVar("T")

POLL_MS = 500
MAX_RECORDS = 500
# Heartbeats every second let a rebalance (a bridge joining or leaving) settle quickly.
HEARTBEAT_MS = 1000
ERROR_HEADER = "stockstream-error"
SOURCE_HEADER = "stockstream-source"
REDIS_CHECK_TIMEOUT = 5.0
# A consumer stopped while it joins its group would otherwise wait for the
# join to finish (seconds, at the broker's pace) before leaving it.
CLIENT_STOP_TIMEOUT = 2.0


async def run_bridge(settings: Settings, signals: StopSignals) -> int:
    broker = create_broker(settings)
    bridge = Bridge(settings, Publisher(broker))
    signals.listen(bridge.stop)
    try:
        await bridge.run()
    finally:
        await broker.close()
        signals.forget()
    return 0


async def _check_redis(url: str) -> None:
    """Fail at start-up with one clear line rather than retrying a Redis that is not there."""
    client = probe_client(url, REDIS_CHECK_TIMEOUT)
    try:
        await asyncio.wait_for(client.ping(), REDIS_CHECK_TIMEOUT)
    except (RedisError, OSError, asyncio.TimeoutError) as exc:
        raise RuntimeError(f"cannot reach Redis: {exc or type(exc).__name__}") from None
    finally:
        await client.aclose()


# -- consuming --------------------------------------------------------------------


@dataclass
class BridgeStats:
    consumed: int = 0
    published: int = 0
    duplicates: int = 0  # already published before (a record read again)
    rejected: int = 0


class _Stopping(Exception):
    """The bridge was asked to stop while starting or waiting for Redis."""


def decode_record(value: bytes | None) -> dict[str, Any]:
    """A record's value as an update object, its fields still to check (`received_update`)."""
    if value is None:
        raise InvalidUpdate("record has no value")
    data = load_message(value)
    if not isinstance(data, dict):
        raise InvalidUpdate("an update is a JSON object")
    return data


def source_of(record: ConsumerRecord) -> str:
    return f"{record.topic}:{record.partition}@{record.offset}"


class Bridge:
    def __init__(self, settings: Settings, publisher: Publisher) -> None:
        self._settings = settings
        self._publisher = publisher
        self._consumer: AIOKafkaConsumer | None = None
        self._dead_letters: AIOKafkaProducer | None = None
        # Per partition, the offset to commit next: everything below it is in Redis.
        self._done: dict[TopicPartition, int] = {}
        self._stopping = asyncio.Event()
        self._rejections = MalformedLog(log)
        self.stats = BridgeStats()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Consume until stop(); commits what was published before returning.

        A stop at any point (while Redis is checked, while Kafka is connecting,
        while consuming) ends it cleanly, with the summary line."""
        settings = self._settings
        log.info(
            "kafka bridge starting: topic %s, group %s, from %s",
            settings.kafka_topic,
            settings.kafka_group,
            settings.kafka_bootstrap,
        )
        try:
            await self._unless_stopped(_check_redis(settings.backend_url or ""))
            consumer = self._consumer = AIOKafkaConsumer(
                bootstrap_servers=settings.kafka_bootstrap,
                group_id=settings.kafka_group,
                client_id="stockstream-kafka-bridge",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                heartbeat_interval_ms=HEARTBEAT_MS,
            )
            consumer.subscribe([settings.kafka_topic], listener=_CommitOnRevoke(self))
            await self._unless_stopped(_start(consumer, settings.kafka_bootstrap))
            if settings.kafka_dead_letter_topic:
                self._dead_letters = AIOKafkaProducer(
                    bootstrap_servers=settings.kafka_bootstrap, acks="all", client_id="stockstream-dead-letters"
                )
                await self._unless_stopped(_start(self._dead_letters, settings.kafka_bootstrap))
            log.info(
                "kafka bridge ready: topic %s, group %s, from %s%s",
                settings.kafka_topic,
                settings.kafka_group,
                settings.kafka_bootstrap,
                f", rejects to {settings.kafka_dead_letter_topic}" if self._dead_letters else "",
            )
            await self._consume(consumer)
        except _Stopping:
            pass
        finally:
            await self._commit()
            for client in (self._consumer, self._dead_letters):
                if client is not None:
                    await _stop(client)
            s = self.stats
            log.info(
                "kafka bridge stopped: %d records, %d published, %d duplicates skipped, %d rejected",
                s.consumed,
                s.published,
                s.duplicates,
                s.rejected,
            )

    async def _unless_stopped(self, step: Awaitable[T]) -> T:
        """Await a start-up step, or give it up (and raise _Stopping) once asked to stop."""
        task = asyncio.ensure_future(step)
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if task.cancelled():
            raise _Stopping()
        return task.result()

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        backoff = Backoff(initial=0.2, cap=10.0)
        while not self._stopping.is_set():
            try:
                batch = await consumer.getmany(timeout_ms=POLL_MS, max_records=MAX_RECORDS)
                await asyncio.gather(*(self._drain(tp, records) for tp, records in batch.items()))
                await self._commit()
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except _Stopping:
                return
            except Exception as exc:  # noqa: BLE001 - the bridge keeps consuming through any failure
                log.warning("kafka bridge: %s", exc or type(exc).__name__)
                await self._pause(backoff.next())

    async def _drain(self, tp: TopicPartition, records: list[ConsumerRecord]) -> None:
        """Publish one partition's records in order."""
        for record in records:
            if self._stopping.is_set():
                return  # not committed: read again (and deduplicated) after a restart
            try:
                await self._handle(record)
            except _Stopping:
                raise
            except Exception:
                # Read this record again on the next poll rather than skip it.
                self._rewind(tp, record.offset)
                raise
            self._done[tp] = record.offset + 1

    async def _handle(self, record: ConsumerRecord) -> None:
        self.stats.consumed += 1
        try:
            update = received_update(decode_record(record.value))
        except ValueError as exc:  # InvalidUpdate, SymbolError
            await self._reject(record, exc)
            return
        backoff = Backoff(initial=0.1, cap=5.0)
        while True:
            try:
                published = await self._publisher.publish_update(
                    update, dedupe=(f"{record.topic}:{record.partition}", record.offset)
                )
            except BackendUnavailable as exc:
                if self._stopping.is_set():
                    raise _Stopping() from None
                delay = backoff.next()
                log.warning("kafka bridge cannot publish %s (%s); retrying in %.1fs", source_of(record), exc, delay)
                await self._pause(delay)
                continue
            if published is None:
                self.stats.duplicates += 1
            else:
                self.stats.published += 1
            return

    async def _reject(self, record: ConsumerRecord, reason: Exception) -> None:
        self.stats.rejected += 1
        source = source_of(record)
        self._rejections.record(source.encode(), reason)
        if self._dead_letters is None:
            return
        headers = [*(record.headers or ()), (ERROR_HEADER, str(reason).encode()), (SOURCE_HEADER, source.encode())]
        try:
            await self._dead_letters.send_and_wait(
                self._settings.kafka_dead_letter_topic, value=record.value, key=record.key, headers=headers
            )
        except KafkaError as exc:
            log.error("kafka bridge could not dead-letter %s: %s", source, exc)

    def _rewind(self, tp: TopicPartition, offset: int) -> None:
        try:
            assert self._consumer is not None
            self._consumer.seek(tp, offset)
        except Exception as exc:  # noqa: BLE001 - the partition moved away; its new owner reads it
            log.debug("kafka bridge could not rewind %s: %s", tp, exc)

    async def _commit(self) -> None:
        consumer = self._consumer
        if consumer is None or not self._done:
            return
        assigned = consumer.assignment()
        offsets = {tp: offset for tp, offset in self._done.items() if tp in assigned}
        self._done.clear()
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except Exception as exc:  # noqa: BLE001 - uncommitted records are read again and skipped as duplicates
            log.warning("kafka bridge could not commit offsets (%s); those records will be read again", exc)

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake up at once when asked to stop."""
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except asyncio.TimeoutError:
            pass


class _CommitOnRevoke(ConsumerRebalanceListener):
    """Commits what was published before partitions move to another bridge."""

    def __init__(self, bridge: Bridge) -> None:
        self._bridge = bridge

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._bridge._commit()

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        shown = ", ".join(f"{tp.topic}:{tp.partition}" for tp in sorted(assigned)) or "none"
        log.info("kafka bridge partitions assigned: %s", shown)


async def _start(client: AIOKafkaConsumer | AIOKafkaProducer, bootstrap: str) -> None:
    try:
        await client.start()
    except KafkaError as exc:
        await client.stop()
        raise RuntimeError(f"cannot reach Kafka at {bootstrap}: {exc}") from None


async def _stop(client: AIOKafkaConsumer | AIOKafkaProducer) -> None:
    try:
        await asyncio.wait_for(client.stop(), CLIENT_STOP_TIMEOUT)
    except asyncio.TimeoutError:
        log.warning("kafka bridge: the Kafka client did not stop within %.0fs; leaving it", CLIENT_STOP_TIMEOUT)
    except KafkaError as exc:
        log.warning("kafka bridge: stopping the Kafka client failed: %s", exc)


# -- producing --------------------------------------------------------------------


class UpdateProducer:
    """Produces update objects to the configured topic, keyed by symbol."""

    def __init__(self, settings: Settings) -> None:
        if not settings.kafka_bootstrap:
            raise RuntimeError("no Kafka to produce to: give --bootstrap HOST:PORT or set KAFKA_BOOTSTRAP")
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None

    async def __aenter__(self) -> "UpdateProducer":
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self._settings.kafka_bootstrap, acks="all", linger_ms=5, client_id="stockstream-producer"
        )
        await _start(self._producer, self._settings.kafka_bootstrap)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def send(self, update: dict[str, Any]) -> None:
        """Produce one update; returns once Kafka acknowledged it."""
        await (await self._enqueue(update))

    async def send_many(self, updates: Iterable[dict[str, Any]]) -> None:
        """Produce updates in order; returns once Kafka acknowledged all of them."""
        pending = [await self._enqueue(update) for update in updates]
        await asyncio.gather(*pending)

    async def _enqueue(self, update: dict[str, Any]) -> "asyncio.Future[Any]":
        if self._producer is None:
            raise RuntimeError("UpdateProducer is used outside `async with`")
        symbol = update.get("symbol")
        key = symbol.upper().encode() if isinstance(symbol, str) else None
        return await self._producer.send(self._settings.kafka_topic, orjson.dumps(update), key=key)


class KafkaPublisher:
    """A PricePublisher whose prices go onto the Kafka topic (the simulator's `--kafka`)."""

    def __init__(self, producer: UpdateProducer) -> None:
        self._producer = producer

    async def publish(self, symbol: str, price: float, timestamp: int | None = None, **extra: Any) -> None:
        await self._producer.send(make_update(symbol, price, timestamp, **extra))


async def produce(settings: Settings, updates: list[dict[str, Any]]) -> None:
    """Produce `updates` to the Kafka topic of `settings`."""
    async with UpdateProducer(settings) as producer:
        await producer.send_many(updates)
