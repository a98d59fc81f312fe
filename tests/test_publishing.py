"""The ways in: the publish CLI, the sync and async Python API, the simulator,
and the README's quick start (`python run.py --simulate`, no Redis)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from stockstream.broker.redis.broker import RedisBroker
from stockstream.config import Settings
from stockstream.updates import CheckedUpdate
from tests.support.servers import REPO_ROOT, server_environment
from tests.support.waiting import eventually, free_port, now_ms


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stockstream", *args],
        cwd=REPO_ROOT,
        env=server_environment(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


async def test_publish_command_stores_counts_records_and_streams(servers: Any, redis_url: str, clients: Any) -> None:
    server = await servers.start({}, redis_url=redis_url)
    client = await clients.sio(server.url)
    await client.subscribe("AAPL")
    result = await asyncio.to_thread(
        run_cli, "publish", "aapl", "189.45", "--extra", "volume=1200", "--redis-url", redis_url
    )
    assert result.returncode == 0, result.stderr
    published = json.loads(result.stdout)
    assert published["symbol"] == "AAPL" and published["price"] == 189.45
    assert published["volume"] == 1200 and published["seq"] == 1
    received = await client.expect_update(lambda u: u.get("seq") == 1)
    assert received == published
    redis = aioredis.Redis.from_url(redis_url)
    try:
        assert json.loads(await redis.get("stock:AAPL")) == published
        assert int(await redis.get("stock:AAPL:seq")) == 1
        entries = await redis.xrange("stock:AAPL:history")
        assert [json.loads(fields[b"u"]) for _, fields in entries] == [published]
    finally:
        await redis.aclose()


async def test_publish_command_refuses_bad_input(redis_url: str) -> None:
    for args in (["publish", "not a symbol!", "1"], ["publish", "AAPL", "nan"]):
        result = await asyncio.to_thread(run_cli, *args, "--redis-url", redis_url)
        assert result.returncode == 1, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


async def test_send_price_update_is_the_original_sync_call(redis_url: str) -> None:
    probe = (
        "from stockstream.publisher import send_price_update;"
        "import json; print(json.dumps(send_price_update('MSFT', 415.2)))"
    )
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", probe],
        cwd=REPO_ROOT,
        env=server_environment({}, redis_url=redis_url),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    update = json.loads(result.stdout)
    assert update["symbol"] == "MSFT" and update["price"] == 415.2 and update["seq"] == 1
    assert isinstance(update["timestamp"], int)


async def test_simulate_command_walks_every_symbol(redis_url: str) -> None:
    result = await asyncio.to_thread(
        run_cli,
        "simulate",
        "--symbols",
        "AAPL,btc-usd",
        "--rate",
        "20",
        "--duration",
        "1",
        "--seed",
        "7",
        "--redis-url",
        redis_url,
    )
    assert result.returncode == 0, result.stderr
    redis = aioredis.Redis.from_url(redis_url)
    try:
        for symbol in ("AAPL", "BTC-USD"):
            assert int(await redis.get(f"stock:{symbol}:seq")) >= 10
            latest = json.loads(await redis.get(f"stock:{symbol}"))
            assert latest["symbol"] == symbol and latest["price"] > 0
    finally:
        await redis.aclose()


async def test_quick_start_serves_live_prices_without_redis() -> None:
    """The README's first command: `python run.py --simulate`, nothing else installed."""
    port = free_port()
    env = server_environment({"LOG_LEVEL": "info", "SIMULATE_RATE": "10"})
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "run.py",
        "--simulate",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        cwd=REPO_ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with aiohttp.ClientSession() as http:

            async def ready() -> bool:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            await eventually(ready, timeout=20, what="run.py --simulate to be ready")
            async with http.ws_connect(f"http://127.0.0.1:{port}/live-price") as ws:
                await ws.send_str(json.dumps({"action": "subscribe", "symbol": "AAPL"}))
                seqs = []
                async with asyncio.timeout(10):
                    while len(seqs) < 3:
                        message = json.loads((await ws.receive()).data)
                        if "type" not in message:
                            assert message["symbol"] == "AAPL" and message["price"] > 0
                            seqs.append(message["seq"])
                assert seqs == sorted(seqs) and len(set(seqs)) == 3
    finally:
        proc.terminate()
        _, stderr = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0
    assert b"embedded in-process backend" in stderr


@pytest.mark.parametrize("layout", ["redis", "cluster"])
async def test_a_publish_sent_again_after_a_lost_reply_is_published_once(
    request: pytest.FixtureRequest, layout: str
) -> None:
    """redis-py sends a command again when its connection fails, even when only
    the reply was lost. The publish script run twice with the same arguments
    (what such a retry is) stores, counts, records and publishes the update
    once, and the second run answers the first one's seq."""
    cluster = layout == "cluster"
    url = request.getfixturevalue("cluster_url" if cluster else "redis_url")
    broker = RedisBroker(url, Settings.from_env({"REDIS_URL": url, "REDIS_CLUSTER": str(cluster).lower()}))
    keys = broker.keys
    script = broker.store._publish_script
    answers: list[Any] = []

    async def executed_then_sent_again(keys: list[str], args: list[Any]) -> Any:
        answers.append(await script(keys=keys, args=args))  # its reply lost on the way back
        answers.append(await script(keys=keys, args=args))
        return answers[-1]

    broker.store._publish_script = executed_then_sent_again  # type: ignore[assignment]  # the retry is the point
    raw = aioredis.Redis.from_url(url) if not cluster else None
    pubsub = raw.pubsub() if raw is not None else None
    try:
        if pubsub is not None:
            await pubsub.subscribe(keys.channel("RTRY"))
            await pubsub.get_message(timeout=1.0)  # the subscribe confirmation
        first = await broker.publish(CheckedUpdate({"symbol": "RTRY", "price": 1.5, "timestamp": now_ms()}))
        assert first is not None and first.seq == 1 and answers == [1, 1], answers
        broker.store._publish_script = script  # type: ignore[assignment]  # back to the plain script
        second = await broker.publish(CheckedUpdate({"symbol": "RTRY", "price": 2.5, "timestamp": now_ms()}))
        assert second is not None and second.seq == 2
        store = AsyncRedisCluster.from_url(url) if cluster else aioredis.Redis.from_url(url)
        try:
            assert int(await store.get(keys.seq("RTRY"))) == 2
            entries = await store.xrange(keys.history("RTRY"))
            assert [json.loads(fields[b"u"])["seq"] for _, fields in entries] == [1, 2], entries
        finally:
            await store.aclose()
        if pubsub is not None:
            published = []
            while (message := await pubsub.get_message(timeout=0.5)) is not None:
                published.append(json.loads(message["data"])["seq"])
            assert published == [1, 2], published
    finally:
        if pubsub is not None:
            await pubsub.aclose()
        if raw is not None:
            await raw.aclose()
        await broker.close()
