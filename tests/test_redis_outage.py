"""Redis going away mid-stream and coming back.

The server keeps its clients through the outage and answers /readyz 503; once
Redis is back every subscribed client gets a fresh snapshot of each of its
symbols before live updates resume, and /readyz answers 200 again.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import aiohttp
import pytest

from tests.support.publishing import RawRedisPublisher, make_update
from tests.support.redis_server import RedisServer
from tests.support.servers import server_environment
from tests.support.waiting import eventually, free_port

pytestmark = pytest.mark.slow

# The listener's backoff is capped at 5 s; it reconnects within about that once Redis is back.
RECOVERY = 15.0


@pytest.fixture
def outage_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own, since the test kills it; SAVE + restart keeps its data."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def status_of(http: aiohttp.ClientSession, url: str) -> int | None:
    try:
        async with http.get(url) as resp:
            return resp.status
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
        return None


async def answers(http: aiohttp.ClientSession, url: str, status: int) -> bool:
    return await status_of(http, url) == status


async def metric(http: aiohttp.ClientSession, base: str, name: str) -> float | None:
    async with http.get(base + "/metrics") as resp:
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def save_to_disk(redis: RedisServer) -> None:
    """SAVE, so what Redis holds now is what it holds when it is started again."""
    saver = redis.client()
    try:
        saver.save()
    finally:
        saver.close()


def index_of(items: list[Any], pred) -> int:
    return next(i for i, item in enumerate(items) if pred(item))


async def test_clients_ride_out_a_redis_outage_and_get_fresh_snapshots(servers, outage_redis, clients) -> None:
    server = await servers.start(redis_url=outage_redis.url)
    sio = await clients.sio(server.url)
    assert (await sio.subscribe(["AAPL", "MSFT"]))["ok"] is True
    ws = await clients.ws(server.url)
    assert (await ws.subscribe("AAPL"))["ok"] is True

    raw = RawRedisPublisher(outage_redis.url)
    try:
        before = await raw.publish("AAPL", 189.5, n=1)
        await raw.publish("MSFT", 415.0, n=1)
        await sio.expect_update(lambda u: u.get("n") == 1 and u["symbol"] == "MSFT")
        await ws.expect_update(lambda u: u.get("n") == 1)
        # A snapshot no client has seen: what Redis holds when it comes back.
        fresh = make_update("AAPL", 190.25, note="fresh")
        fresh["timestamp"] = before["timestamp"] + 1
        await raw.store_only(fresh)
    finally:
        await raw.close()
    save_to_disk(outage_redis)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http:
        outage_redis.kill()
        await eventually(
            lambda: answers(http, server.url + "/readyz", 503), 10.0, "/readyz to answer 503 while Redis is down"
        )
        assert await status_of(http, server.url + "/healthz") == 200
        assert await metric(http, server.url, "stockstream_broker_listener_up") == 0
        assert sio.connected and ws.is_open, "a client was dropped because Redis went away"
        snapshots_before = len(sio.updates), len(ws.updates)

        outage_redis.start()
        await eventually(
            lambda: answers(http, server.url + "/readyz", 200), RECOVERY, "/readyz to answer 200 once Redis is back"
        )
        assert await metric(http, server.url, "stockstream_broker_reconnects_total") >= 1
        assert await metric(http, server.url, "stockstream_broker_listener_up") == 1

    # Fresh snapshots of every subscribed symbol, then live updates again.
    await sio.expect_update(lambda u: u.get("note") == "fresh", timeout=RECOVERY)
    await sio.expect_update(lambda u: u["symbol"] == "MSFT" and u.get("n") == 1)
    await ws.expect_update(lambda u: u.get("note") == "fresh", timeout=RECOVERY)
    raw = RawRedisPublisher(outage_redis.url)
    try:
        live = make_update("AAPL", 191.0, n=2)
        live["timestamp"] = fresh["timestamp"] + 1
        await raw.set_and_publish(live)
    finally:
        await raw.close()
    for client in (sio, ws):
        await client.expect_update(lambda u: u.get("n") == 2)
        received = client.updates.items
        assert index_of(received, lambda u: u.get("note") == "fresh") < index_of(received, lambda u: u.get("n") == 2)
    assert sio.connected and ws.is_open
    assert len(sio.updates) > snapshots_before[0] and len(ws.updates) > snapshots_before[1]


def test_publish_command_reports_an_unreachable_redis_in_one_line(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    result = subprocess.run(
        [sys.executable, "-m", "stockstream", "publish", "AAPL", "189.45", "--redis-url", url],
        env=server_environment(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line of error, got:\n{result.stderr}"
    assert "redis" in lines[0].lower() and "Traceback" not in result.stderr
    assert result.stdout == ""


async def test_requests_during_an_outage_answer_unavailable_and_change_nothing(servers, outage_redis, clients) -> None:
    server = await servers.start(redis_url=outage_redis.url)
    sio = await clients.sio(server.url)
    assert (await sio.subscribe("AAPL"))["ok"] is True
    async with aiohttp.ClientSession() as http:
        outage_redis.kill()
        await eventually(
            lambda: answers(http, server.url + "/readyz", 503), timeout=RECOVERY, what="/readyz to notice the outage"
        )
        ack = await sio.call("subscribe", ["MSFT", "TSLA"], timeout=15)
        assert ack["ok"] is False and ack["error"]["code"] == "unavailable", ack
        assert ack["error"]["message"]
        async with http.get(server.url + "/api/quotes/AAPL") as resp:
            assert resp.status == 503
            assert (await resp.json())["error"]["code"] == "unavailable"
        # The subscription set is as it was: only AAPL.
        ack = await sio.call("unsubscribe", ["MSFT", "TSLA"], timeout=15)
        assert ack["ok"] is True and ack["symbols"] == ["AAPL"] and ack["removed"] == []

        outage_redis.start()
        await eventually(
            lambda: answers(http, server.url + "/readyz", 200), timeout=RECOVERY, what="/readyz to recover"
        )
        ack = await sio.call("subscribe", ["MSFT"], timeout=15)
        assert ack["ok"] is True and ack["symbols"] == ["AAPL", "MSFT"]


PASSWORD = "outage-test-password"
# A subscribe during an outage must not wait for the backend: generous for a loaded
# machine, and far below the 5 s a subscribe may otherwise wait for Redis.
PROMPT_ANSWER = 1.0


async def test_server_started_while_redis_is_down_serves_not_ready_until_it_answers(
    servers, clients, tmp_path: Path
) -> None:
    """An unreachable Redis at start-up is an outage, not a bad setting: the server
    serves, /readyz answers 503 with a reason, one log line names REDIS_URL (password
    redacted), subscribes answer `unavailable` at once and change nothing; once Redis
    answers, the server is ready and subscribes work."""
    redis = RedisServer(tmp_path / "redis")  # not started: nothing listens on its port yet
    url = f"redis://:{PASSWORD}@127.0.0.1:{redis.port}/0"
    try:
        server = servers.launch({"LOG_LEVEL": "info"}, redis_url=url)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http:
            await eventually(
                lambda: answers(http, server.url + "/readyz", 503),
                20.0,
                "the server to serve /readyz (503) without Redis",
            )
            async with http.get(server.url + "/readyz") as resp:
                assert (await resp.json())["reason"]
            assert await status_of(http, server.url + "/healthz") == 200
            assert server.running
            await eventually(lambda: "REDIS_URL" in server.output(), 10.0, "the log line naming REDIS_URL")

            sio = await clients.sio(server.url)
            ws = await clients.ws(server.url)
            loop = asyncio.get_running_loop()
            began = loop.time()
            ack = await sio.call("subscribe", ["AAPL", "MSFT"], timeout=10)
            sio_took = loop.time() - began
            assert ack["ok"] is False and ack["error"]["code"] == "unavailable", ack
            began = loop.time()
            reply = await ws.subscribe("AAPL", timeout=10)
            ws_took = loop.time() - began
            assert reply["type"] == "error" and reply["code"] == "unavailable", reply
            assert sio_took < PROMPT_ANSWER and ws_took < PROMPT_ANSWER, (sio_took, ws_took)
            ack = await sio.call("unsubscribe", ["AAPL", "MSFT"], timeout=10)
            assert ack["ok"] is True and ack["symbols"] == [] and ack["removed"] == []

            redis.start()
            redis.client().config_set("requirepass", PASSWORD)
            raw = RawRedisPublisher(url)
            try:
                stored = await raw.publish("AAPL", 189.5, note="stored")
                await eventually(
                    lambda: answers(http, server.url + "/readyz", 200),
                    RECOVERY,
                    "/readyz to answer 200 once Redis answers",
                )
                ack = await sio.call("subscribe", ["AAPL", "MSFT"], timeout=10)
                assert ack["ok"] is True and ack["symbols"] == ["AAPL", "MSFT"], ack
                reply = await ws.subscribe("AAPL", timeout=10)
                assert reply["type"] == "subscribed" and reply["symbols"] == ["AAPL"], reply
                for client in (sio, ws):
                    await client.expect_update(lambda u: u.get("note") == "stored")
                live = make_update("AAPL", 190.0, note="live")
                live["timestamp"] = stored["timestamp"] + 1
                await raw.set_and_publish(live)
                for client in (sio, ws):
                    await client.expect_update(lambda u: u.get("note") == "live")
            finally:
                await raw.close()

        log = server.output()
        named = [line for line in log.splitlines() if "REDIS_URL" in line]
        assert len(named) == 1, f"expected one line naming REDIS_URL:\n{log}"
        assert f"redis://:***@127.0.0.1:{redis.port}/0" in named[0], named[0]
        assert PASSWORD not in log, "the Redis password was logged"
        assert "Traceback" not in log, log
        # python-socketio's Redis manager retries on its own, with a doubling delay:
        # a handful of lines over the outage, not one per attempt of ours.
        manager_lines = [line for line in log.splitlines() if "Cannot receive from redis" in line]
        assert len(manager_lines) <= 6, "\n".join(manager_lines)
        assert server.running
    finally:
        redis.stop()


async def test_wildcard_clients_get_fresh_snapshots_after_an_outage(servers, outage_redis, clients) -> None:
    """A `*` client rides out an outage; once Redis is back it gets a fresh snapshot of
    the symbols it only has through `*` (here one changed during the outage), then live
    updates, including those of a symbol new since."""
    server = await servers.start(redis_url=outage_redis.url)
    wild = await clients.ws(server.url)
    assert (await wild.subscribe("*"))["added"] == ["*"]
    raw = RawRedisPublisher(outage_redis.url)
    try:
        before = await raw.publish("WLD", 10.0, n=1)
        await wild.expect_update(lambda u: u.get("n") == 1)
        fresh = make_update("WLD", 11.0, note="fresh")
        fresh["timestamp"] = before["timestamp"] + 1
        await raw.store_only(fresh)
    finally:
        await raw.close()
    save_to_disk(outage_redis)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http:
        outage_redis.kill()
        await eventually(lambda: answers(http, server.url + "/readyz", 503), 10.0, "/readyz 503")
        outage_redis.start()
        await eventually(lambda: answers(http, server.url + "/readyz", 200), RECOVERY, "/readyz 200")
    await wild.expect_update(lambda u: u.get("note") == "fresh", timeout=RECOVERY)
    raw = RawRedisPublisher(outage_redis.url)
    try:
        await raw.publish("WLD2", 1.0, n=2)
    finally:
        await raw.close()
    await wild.expect_update(lambda u: u.get("n") == 2)
    assert wild.is_open
