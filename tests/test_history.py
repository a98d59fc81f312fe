"""History: retention, queries,
candles, and the recording of third-party publishers' updates."""
from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis

from stockstream.app import broker_of
from stockstream.broker.recorder import LOCK_KEY, LOCK_TTL_MS
from stockstream.candles import Tick, build_candles, candle_page
from tests.support.inprocess import inprocess_stack, running_app, url_for_backend
from tests.support.publishing import RawRedisPublisher
from tests.support.waiting import eventually, now_ms

MINUTE = 60_000
HOUR = 3_600_000


# -- candles: the pure function ---------------------------------------------------------

def test_candles_bucket_open_high_low_close_count_volume() -> None:
    base = 1_700_000_040_000  # a minute boundary
    ticks = [Tick(base + 1_000, 10.0, 100), Tick(base + 20_000, 12.5, None), Tick(base + 59_999, 9.0, 50),
             Tick(base + MINUTE, 11.0, None), Tick(base + 3 * MINUTE + 5, 11.5, None)]
    candles = [c.to_dict() for c in build_candles(ticks, MINUTE)]
    assert candles == [
        {"start": base, "open": 10.0, "high": 12.5, "low": 9.0, "close": 9.0, "count": 3, "volume": 150},
        {"start": base + MINUTE, "open": 11.0, "high": 11.0, "low": 11.0, "close": 11.0, "count": 1},
        {"start": base + 3 * MINUTE, "open": 11.5, "high": 11.5, "low": 11.5, "close": 11.5, "count": 1},
    ]


def test_candles_follow_publish_order_within_a_bucket() -> None:
    # A publisher whose clock stepped back: open/close follow publish order.
    ticks = [Tick(5_000, 1.0, None), Tick(1_000, 2.0, None), Tick(3_000, 3.0, None)]
    (candle,) = build_candles(ticks, 60_000)
    assert (candle.open, candle.close, candle.high, candle.low) == (1.0, 3.0, 3.0, 1.0)


def test_candle_page_leaves_the_incomplete_oldest_bucket_to_the_next_page() -> None:
    ticks = [Tick(MINUTE + 10, 1.0, None), Tick(2 * MINUTE, 2.0, None), Tick(3 * MINUTE, 3.0, None)]
    page = candle_page(ticks, MINUTE, truncated=True)
    assert [c.start for c in page.candles] == [2 * MINUTE, 3 * MINUTE]
    assert page.next_to == 2 * MINUTE - 1 and not page.partial
    whole = candle_page(ticks, MINUTE, truncated=False)
    assert len(whole.candles) == 3 and whole.next_to is None


def test_candle_page_marks_one_overfull_bucket_partial() -> None:
    page = candle_page([Tick(MINUTE + i, float(i), None) for i in range(5)], MINUTE, truncated=True)
    assert len(page.candles) == 1 and page.partial and page.next_to == MINUTE - 1


# -- retention ----------------------------------------------------------------------------

@contextlib.asynccontextmanager
async def stack_for(backend: str, request: pytest.FixtureRequest, **overrides: Any) -> AsyncIterator[Any]:
    redis_url = url_for_backend(backend, request)
    async with inprocess_stack(backend, redis_url, **overrides) as stack:
        yield stack


async def stream_node_size(redis_url: str) -> int:
    client = aioredis.from_url(redis_url)
    try:
        return int((await client.config_get("stream-node-max-entries"))["stream-node-max-entries"])
    finally:
        await client.aclose()


async def test_history_keeps_the_newest_max_entries(backend: str, request: pytest.FixtureRequest) -> None:
    async with stack_for(backend, request, history_max_entries=40) as stack:
        for i in range(300):
            await stack.publish("RET", 100 + i)
        kept = [u.seq for u in await stack.broker.history("RET", limit=5000)]
        assert kept == list(range(kept[0], 301)), "history must be the newest updates, in order"
        if backend == "memory":
            assert len(kept) == 40
        else:
            # Redis trims whole stream nodes: at least the setting, at most a node more.
            assert 40 <= len(kept) <= 40 + await stream_node_size(stack.redis_url)


async def test_history_drops_updates_older_than_max_age(backend: str, request: pytest.FixtureRequest) -> None:
    async with stack_for(backend, request, history_max_age=60) as stack:
        old = now_ms() - 3_600_000
        for i in range(250):
            await stack.publish("AGE", 50 + i, timestamp=old + i)
        fresh = [await stack.publish("AGE", 10 + i) for i in range(5)]
        kept = await stack.broker.history("AGE", limit=5000)
        assert [u.seq for u in kept][-5:] == [u["seq"] for u in fresh]
        stale = [u for u in kept if u.timestamp < now_ms() - 60_000]
        if backend == "memory":
            assert stale == []
        else:
            assert len(stale) <= await stream_node_size(stack.redis_url)


async def test_history_can_be_switched_off(backend: str, request: pytest.FixtureRequest) -> None:
    async with stack_for(backend, request, history_max_entries=0) as stack:
        await stack.publish("OFF", 1.5)
        assert await stack.broker.history("OFF") == []
        assert (await stack.broker.snapshots(["OFF"]))["OFF"] is not None


# -- queries --------------------------------------------------------------------------------

async def get_json(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        async with http.get(url, headers=headers) as resp:
            return resp.status, await resp.json(content_type=None)


async def publish_series(stack: Any, symbol: str, count: int, base: int, step: int, **extra: Any) -> list[dict]:
    return [await stack.publish(symbol, 100 + i / 100, timestamp=base + i * step, **extra) for i in range(count)]


async def test_history_query_over_http_socketio_and_live_price(stack: Any, clients: Any) -> None:
    base = now_ms() - 10_000
    published = await publish_series(stack, "HIS", 30, base, 10)
    window = [u for u in published if base + 50 <= u["timestamp"] <= base + 150]

    status, body = await get_json(f"{stack.url}/api/history/his?from={base + 50}&to={base + 150}")
    assert status == 200 and body == {"symbol": "HIS", "updates": window}
    status, body = await get_json(f"{stack.url}/api/history/HIS?limit=5")
    assert status == 200 and body["updates"] == published[-5:]

    sio = await clients.sio(stack.url)
    ack = await sio.call("history", {"symbol": "his", "from": base + 50, "to": base + 150})
    assert ack == {"ok": True, "symbol": "HIS", "updates": window}
    ack = await sio.call("history", {"symbol": "HIS", "limit": 3})
    assert ack["updates"] == published[-3:]

    ws = await clients.ws(stack.url)
    reply = await ws.request({"action": "history", "symbol": "HIS", "from": base + 50, "to": base + 150})
    assert reply["type"] == "history" and reply["updates"] == window


async def test_http_errors_are_json_with_a_fitting_status(stack: Any) -> None:
    await stack.publish("ERR", 1.25)

    async def expect(path: str, status: int, code: str) -> dict:
        got, body = await get_json(stack.url + path)
        assert got == status, (path, got, body)
        assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["message"], body
        return body["error"]

    await expect("/api/quotes/NOPE", 404, "not_found")
    await expect("/api/quotes/bad%20symbol", 400, "invalid_symbol")
    await expect("/api/quotes?symbols=", 400, "invalid_payload")
    await expect("/api/quotes?symbols=NOPE,NADA", 404, "not_found")
    await expect("/api/history/NOPE", 404, "not_found")
    await expect("/api/history/ERR?from=abc", 400, "invalid_payload")
    await expect("/api/history/ERR?from=-5", 400, "invalid_payload")
    await expect("/api/history/ERR?from=20&to=10", 400, "invalid_payload")
    await expect("/api/history/ERR?limit=0", 400, "invalid_payload")
    await expect("/api/candles/NOPE", 404, "not_found")
    await expect("/api/candles/ERR?interval=2m", 400, "invalid_payload")
    await expect("/api/candles/ERR?from=x", 400, "invalid_payload")
    await expect("/api/candles/ERR?from=9&to=1", 400, "invalid_payload")
    await expect("/api/no-such-route", 404, "not_found")

    status, body = await get_json(f"{stack.url}/api/quotes?symbols=err,%20NOPE,ERR")
    assert status == 200 and list(body["quotes"]) == ["ERR"] and body["missing"] == ["NOPE"]
    status, body = await get_json(f"{stack.url}/api/history/ERR?from=1&to=2")
    assert status == 200 and body["updates"] == []  # a known symbol, an empty range
    status, body = await get_json(f"{stack.url}/api/history/ERR?from={2**80}")
    assert status == 200 and body["updates"] == []


async def test_an_unexpected_failure_answers_json_500_without_a_trace(stack: Any,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(symbols: list[str]) -> None:
        raise RuntimeError("secret internals")
    monkeypatch.setattr(stack.broker, "snapshots", broken)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        async with http.get(f"{stack.url}/api/quotes/ANY") as resp:
            text = await resp.text()
            assert resp.status == 500 and resp.content_type == "application/json"
    assert "secret internals" not in text and "Traceback" not in text
    assert orjson.loads(text)["error"]["code"] == "internal"


async def test_candles_endpoint(stack: Any) -> None:
    base = (now_ms() // HOUR - 2) * HOUR  # aligned for every interval below a day
    prices = [(base + 1_000, 10.0, 100), (base + 30_000, 13.0, 200), (base + 59_000, 11.0, 300),
              (base + MINUTE + 5, 12.0, 100), (base + 3 * MINUTE, 9.5, 100)]
    for timestamp, price, volume in prices:
        await stack.publish("CDL", price, timestamp=timestamp, volume=volume)

    status, body = await get_json(f"{stack.url}/api/candles/cdl?interval=1m")
    assert status == 200, body
    assert body["symbol"] == "CDL" and body["interval"] == "1m" and body["next"] is None
    assert body["updates"] == 5 and body["partial"] is False
    assert body["candles"] == [
        {"start": base, "open": 10.0, "high": 13.0, "low": 10.0, "close": 11.0, "count": 3, "volume": 600},
        {"start": base + MINUTE, "open": 12.0, "high": 12.0, "low": 12.0, "close": 12.0, "count": 1, "volume": 100},
        {"start": base + 3 * MINUTE, "open": 9.5, "high": 9.5, "low": 9.5, "close": 9.5, "count": 1, "volume": 100},
    ]
    status, body = await get_json(f"{stack.url}/api/candles/CDL?interval=5m&from={base + 30_000}&to={base + MINUTE + 5}")
    assert [(c["start"], c["open"], c["close"], c["count"]) for c in body["candles"]] == [(base, 13.0, 12.0, 3)]
    for interval in ("1s", "15m", "1h", "1d"):
        status, body = await get_json(f"{stack.url}/api/candles/CDL?interval={interval}")
        assert status == 200 and sum(c["count"] for c in body["candles"]) == 5


async def test_candles_of_a_large_range_come_in_pages(stack: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("stockstream.http.MAX_SCANNED_UPDATES", 10)
    base = (now_ms() // MINUTE - 30) * MINUTE
    for i in range(34):  # 4 per minute over 9 minutes, minus the last two
        await stack.publish("PGE", 50 + i, timestamp=base + (i // 4) * MINUTE + (i % 4) * 1000)
    seen: dict[int, dict] = {}
    path = f"/api/candles/PGE?interval=1m&from={base}"
    for _ in range(20):
        status, body = await get_json(stack.url + path)
        assert status == 200 and body["limit"] == 10 and body["updates"] <= 10
        for candle in body["candles"]:
            assert candle["start"] not in seen, "a candle appeared on two pages"
            seen[candle["start"]] = candle
        if body["next"] is None:
            break
        path = f"/api/candles/PGE?interval=1m&from={base}&to={body['next']['to']}"
    assert sorted(seen) == [base + m * MINUTE for m in range(9)]
    assert all(c["count"] == 4 for s, c in seen.items() if s < base + 8 * MINUTE)
    assert seen[base]["open"] == 50 and seen[base]["close"] == 53


async def test_http_queries_follow_the_auth_rules(request: pytest.FixtureRequest) -> None:
    from stockstream.app import node_of
    from stockstream.auth import mint_token
    async with stack_for("memory", request, require_auth=True, jwt_secret="s" * 32) as stack:
        await stack.publish("AUT", 1.0)
        await stack.publish("OTH", 2.0)
        token = mint_token(node_of(stack.app).settings, "alice", symbols=["AUT"])
        status, body = await get_json(f"{stack.url}/api/quotes/AUT")
        assert status == 401 and body["error"]["code"] == "auth_required"
        status, body = await get_json(f"{stack.url}/api/quotes/AUT", {"Authorization": f"Bearer {token}"})
        assert status == 200 and body["symbol"] == "AUT"
        status, body = await get_json(f"{stack.url}/api/history/AUT?token={token}")
        assert status == 200 and len(body["updates"]) == 1
        status, body = await get_json(f"{stack.url}/api/candles/OTH", {"Authorization": f"Bearer {token}"})
        assert status == 403 and body["error"]["code"] == "forbidden_symbol"
        status, body = await get_json(f"{stack.url}/api/quotes/AUT", {"Authorization": "Bearer nonsense"})
        assert status == 401 and body["error"]["code"] == "auth_failed"


# -- the recorder of third-party updates (Redis) ----------------------------------------

def history_prices(entries: list[tuple[bytes, dict]]) -> list[float]:
    return [orjson.loads(fields[b"u"])["price"] for _, fields in entries]


async def leaders(brokers: list[Any]) -> list[Any]:
    return [b for b in brokers if b.recorder is not None and b.recorder.leading]


async def test_third_party_updates_are_recorded_once_with_several_instances(redis_url: str) -> None:
    async with contextlib.AsyncExitStack() as stack:
        apps = [(await stack.enter_async_context(running_app(redis_url, serve=False)))[0] for _ in range(3)]
        brokers = [broker_of(app) for app in apps]
        await eventually(lambda: leaders(brokers), 5, "a recorder to be elected")
        raw = RawRedisPublisher(redis_url)
        stack.push_async_callback(raw.close)
        from stockstream.publisher import Publisher
        atomic = Publisher(brokers[1])
        atomic_prices, raw_prices = [], []
        for i in range(60):
            if i % 3 == 0:
                atomic_prices.append((await atomic.publish("TPR", 200 + i))["price"])
            else:
                raw_prices.append((await raw.publish("TPR", 200 + i))["price"])
        client = aioredis.from_url(redis_url)
        stack.push_async_callback(client.aclose)

        async def recorded() -> list[float]:
            return history_prices(await client.xrange("stock:TPR:history"))
        await eventually(lambda: _len_at_least(recorded, 60), 5, "every update in history")
        await asyncio.sleep(0.3)  # a duplicate would show up by now
        history = await recorded()
        # Each update once; each publisher's updates in its order. (Recorded entries
        # follow the atomic ones published at the same moment: recording lags a little.)
        assert sorted(history) == sorted(atomic_prices + raw_prices)
        assert [p for p in history if p in atomic_prices] == atomic_prices
        assert [p for p in history if p in raw_prices] == raw_prices
        assert len(await leaders(brokers)) == 1


async def _len_at_least(read: Any, count: int) -> bool:
    return len(await read()) >= count


async def test_recording_moves_to_another_instance_when_the_leader_stops(redis_url: str) -> None:
    raw = RawRedisPublisher(redis_url)
    client = aioredis.from_url(redis_url)
    try:
        first_instance = running_app(redis_url, serve=False)
        first, _ = await first_instance.__aenter__()
        try:
            await eventually(lambda: leaders([broker_of(first)]), 5, "the first instance to lead")
            async with running_app(redis_url, serve=False) as (second, _):
                await asyncio.sleep(0.6)  # a standby poll: it must not take over a held lock
                assert await leaders([broker_of(second)]) == []
                await raw.publish("FOV", 1.0)
                await eventually(lambda: _len_at_least(lambda: client.xrange("stock:FOV:history"), 1), 5,
                                 "the first update recorded")
                await first_instance.__aexit__(None, None, None)
                first_instance = None
                # A clean stop releases the lock: the standby takes over within a poll.
                await eventually(lambda: leaders([broker_of(second)]), 2, "the standby to take over")
                await raw.publish("FOV", 2.0)
                await eventually(lambda: _len_at_least(lambda: client.xrange("stock:FOV:history"), 2), 5,
                                 "the second update recorded")
        finally:
            if first_instance is not None:
                await first_instance.__aexit__(None, None, None)
        assert history_prices(await client.xrange("stock:FOV:history")) == [1.0, 2.0]
    finally:
        await raw.close()
        await client.aclose()


async def test_a_recorder_that_lost_its_lock_writes_nothing(redis_url: str) -> None:
    raw = RawRedisPublisher(redis_url)
    client = aioredis.from_url(redis_url)
    try:
        async with running_app(redis_url, serve=False) as (app, _):
            recorder = broker_of(app).recorder
            await eventually(lambda: recorder.leading, 5, "the recorder to lead")
            # As if its lease ran out while it stalled and another instance took over.
            await client.set(LOCK_KEY, "another-instance", px=LOCK_TTL_MS)
            await raw.publish("FNC", 1.0)
            await eventually(lambda: not recorder.leading, 5, "the fenced recorder to step down")
            assert await client.xrange("stock:FNC:history") == []
            await client.delete(LOCK_KEY)
            await eventually(lambda: recorder.leading, 5, "the recorder to lead again")
            await raw.publish("FNC", 2.0)
            await eventually(lambda: _len_at_least(lambda: client.xrange("stock:FNC:history"), 1), 5,
                             "the next update recorded")
            assert history_prices(await client.xrange("stock:FNC:history")) == [2.0]
    finally:
        await raw.close()
        await client.aclose()


async def test_publish_after_a_recorded_entry_of_the_same_millisecond(redis_url: str) -> None:
    """A recorded (id `{ms}-*`) entry may take the id the next atomic publish would
    use; the publish must still store, publish and keep ids growing."""
    client = aioredis.from_url(redis_url)
    try:
        async with running_app(redis_url, serve=False) as (app, _):
            from stockstream.publisher import Publisher
            publisher = Publisher(broker_of(app))
            ts = now_ms()
            await publisher.publish("SMS", 1.0, timestamp=ts)
            await client.xadd("stock:SMS:history", {"u": f'{{"symbol":"SMS","price":2.0,"timestamp":{ts}}}'},
                              id=f"{ts}-*")
            third = await publisher.publish("SMS", 3.0, timestamp=ts)
            assert third["seq"] == 2
            assert history_prices(await client.xrange("stock:SMS:history")) == [1.0, 2.0, 3.0]
            assert (await client.get("stock:SMS")) is not None
    finally:
        await client.aclose()
