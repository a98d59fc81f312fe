"""The recorder of third-party publishers' updates into history: one instance records, the lock moves on."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator

import orjson
import redis.asyncio as aioredis

from stockstream.app import broker_of
from stockstream.broker.keys import KeyLayout
from stockstream.broker.redis.recorder import LOCK_TTL_MS
from tests.support.inprocess import running_app
from tests.support.publishing import RawRedisPublisher
from tests.support.waiting import eventually, now_ms


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
                await eventually(
                    lambda: _len_at_least(lambda: client.xrange("stock:FOV:history"), 1), 5, "the first update recorded"
                )
                await first_instance.__aexit__(None, None, None)
                first_instance = None
                # A clean stop releases the lock: the standby takes over within a poll.
                await eventually(lambda: leaders([broker_of(second)]), 2, "the standby to take over")
                await raw.publish("FOV", 2.0)
                await eventually(
                    lambda: _len_at_least(lambda: client.xrange("stock:FOV:history"), 2),
                    5,
                    "the second update recorded",
                )
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
            await client.set(KeyLayout().recorder_lock(), "another-instance", px=LOCK_TTL_MS)
            await raw.publish("FNC", 1.0)
            await eventually(lambda: not recorder.leading, 5, "the fenced recorder to step down")
            assert await client.xrange("stock:FNC:history") == []
            await client.delete(KeyLayout().recorder_lock())
            await eventually(lambda: recorder.leading, 5, "the recorder to lead again")
            await raw.publish("FNC", 2.0)
            await eventually(
                lambda: _len_at_least(lambda: client.xrange("stock:FNC:history"), 1), 5, "the next update recorded"
            )
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
            await client.xadd(
                "stock:SMS:history", {"u": f'{{"symbol":"SMS","price":2.0,"timestamp":{ts}}}'}, id=f"{ts}-*"
            )
            third = await publisher.publish("SMS", 3.0, timestamp=ts)
            assert third["seq"] == 2
            assert history_prices(await client.xrange("stock:SMS:history")) == [1.0, 2.0, 3.0]
            assert (await client.get("stock:SMS")) is not None
    finally:
        await client.aclose()


async def test_a_clean_stop_hands_recording_over_without_missing_or_repeating_an_update(redis_url: str) -> None:
    """While a third-party publisher streams, the recording instance stops
    cleanly: a standby takes over and history holds every update exactly
    once, in publish order (a recovering client replays from it)."""
    raw = RawRedisPublisher(redis_url)
    client = aioredis.from_url(redis_url)
    first_instance = running_app(redis_url, serve=False)
    first, _ = await first_instance.__aenter__()
    stopping = asyncio.Event()
    published: list[int] = []

    async def stream() -> None:
        n = 0
        while not stopping.is_set():
            n += 1
            await raw.publish("HND", 1.0, n=n)
            published.append(n)
            await asyncio.sleep(0.002)

    try:
        await eventually(lambda: leaders([broker_of(first)]), 5, "the first instance to lead")
        async with running_app(redis_url, serve=False) as (second, _):
            publishing = asyncio.create_task(stream())
            await eventually(lambda: len(published) >= 100, 10, "updates before the stop")
            await first_instance.__aexit__(None, None, None)
            first_instance = None
            await eventually(lambda: leaders([broker_of(second)]), 5, "the standby to take over")
            count = len(published)
            await eventually(lambda: len(published) >= count + 100, 10, "updates after the stop")
            stopping.set()
            await publishing

            async def ns() -> list[int]:
                return [orjson.loads(fields[b"u"])["n"] for _, fields in await client.xrange("stock:HND:history")]

            await eventually(lambda: _len_at_least(ns, len(published)), 5, "every update in history")
            assert await ns() == published
    finally:
        stopping.set()
        if first_instance is not None:
            await first_instance.__aexit__(None, None, None)
        await raw.close()
        await client.aclose()


async def test_a_replay_across_a_recording_gap_is_not_complete(redis_url: str) -> None:
    """When recording stopped without a handoff (here: the only instance
    stopped, so updates published meanwhile are not in history), a replay
    after a third-party update recorded before the gap says it is not complete
    rather than skip what was missed; one after the gap is complete."""
    from stockstream.updates import parse_update

    raw = RawRedisPublisher(redis_url)
    client = aioredis.from_url(redis_url)

    async def recorded(count: int) -> None:
        await eventually(
            lambda: _len_at_least(lambda: client.xrange("stock:GAP:history"), count), 5, f"{count} updates in history"
        )

    try:
        async with running_app(redis_url, serve=False) as (first, _):
            await eventually(lambda: leaders([broker_of(first)]), 5, "a recorder")
            before = [await raw.publish("GAP", 1.0, n=n) for n in (1, 2)]
            await recorded(2)
        await raw.publish("GAP", 1.0, n=3)  # no instance records it
        async with running_app(redis_url, serve=False) as (second, _):
            broker = broker_of(second)
            await eventually(lambda: leaders([broker]), 5, "a new recorder")
            after = [await raw.publish("GAP", 1.0, n=n) for n in (4, 5)]
            await recorded(4)
            point = parse_update(orjson.dumps(before[0]), "GAP")
            replay = await broker.replay_after_update("GAP", point.timestamp, point.digest or "")
            assert (replay.complete, replay.updates) == (False, [])
            point = parse_update(orjson.dumps(after[0]), "GAP")
            replay = await broker.replay_after_update("GAP", point.timestamp, point.digest or "")
            assert replay.complete and [u.to_dict()["n"] for u in replay.updates] == [5]
    finally:
        await raw.close()
        await client.aclose()


@contextlib.asynccontextmanager
async def recording(redis_url: str) -> AsyncIterator[tuple[Any, RawRedisPublisher, aioredis.Redis]]:
    """An instance whose history recorder leads, a third-party publisher and a
    plain client of the same Redis: (the instance's broker, publisher, client)."""
    raw = RawRedisPublisher(redis_url)
    client = aioredis.from_url(redis_url)
    try:
        async with running_app(redis_url, serve=False) as (app, _):
            broker = broker_of(app)
            await eventually(lambda: leaders([broker]), 5, "a recorder")
            yield broker, raw, client
    finally:
        await raw.close()
        await client.aclose()


async def test_a_replay_resumes_after_exactly_the_named_update_of_a_burst(redis_url: str) -> None:
    """Third-party updates sharing one millisecond: a replay after the third
    of them (named by timestamp and digest) holds exactly the ones after it."""
    from stockstream.updates import parse_update

    async with recording(redis_url) as (broker, raw, client):
        ts = now_ms()
        burst = [{"symbol": "BST", "price": 1.0, "timestamp": ts, "n": n} for n in range(1, 7)]
        for update in burst:
            await raw.set_and_publish(update)
        await eventually(
            lambda: _len_at_least(lambda: client.xrange("stock:BST:history"), 6), 5, "the burst in history"
        )
        point = parse_update(orjson.dumps(burst[2]), "BST")
        replay = await broker.replay_after_update("BST", ts, point.digest or "")
        assert replay.complete and [u.to_dict()["n"] for u in replay.updates] == [4, 5, 6]


async def test_a_replay_waits_for_the_recorder_to_reach_the_latest_update(redis_url: str) -> None:
    """When the latest third-party update is stored (SET) but not recorded yet
    (its PUBLISH, hence its recording, comes later), the replay waits for it
    and then holds it, instead of saying history does not reach back."""
    from stockstream.updates import parse_update

    async with recording(redis_url) as (broker, raw, client):
        first = await raw.publish("LAG", 1.0, n=1)
        await raw.publish("LAG", 1.0, n=2)
        await eventually(
            lambda: _len_at_least(lambda: client.xrange("stock:LAG:history"), 2), 5, "two updates in history"
        )
        third = {"symbol": "LAG", "price": 1.0, "timestamp": now_ms(), "n": 3}
        await raw.store_only(third)
        point = parse_update(orjson.dumps(first), "LAG")
        replaying = asyncio.create_task(broker.replay_after_update("LAG", point.timestamp, point.digest or ""))
        await asyncio.sleep(0.2)
        assert not replaying.done(), "the replay must wait for the recorder"
        await raw.publish_only("LAG", third)
        replay = await asyncio.wait_for(replaying, 5)
        assert replay.complete and [u.to_dict()["n"] for u in replay.updates] == [2, 3]
