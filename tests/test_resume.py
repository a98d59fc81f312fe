"""Resuming a stream: the stored
updates after the point, oldest first, then live, with no gap and no repeat at the
boundary, while the symbol is being published; `recovered: false` and the snapshot
when history no longer reaches the point."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator

import pytest
import redis.asyncio as aioredis

from tests.support.inprocess import inprocess_stack, url_for_backend
from tests.support.waiting import assert_same_json, eventually, now_ms

SYMBOL = "RSM"
UPDATES = 300


@contextlib.asynccontextmanager
async def stack_for(backend: str, request: pytest.FixtureRequest, **overrides: Any) -> AsyncIterator[Any]:
    redis_url = url_for_backend(backend, request)
    async with inprocess_stack(backend, redis_url, **overrides) as stack:
        yield stack


def resume_payload(mode: str, point: dict[str, Any]) -> dict[str, Any]:
    if mode == "sinceSeq":
        return {"symbol": SYMBOL, "sinceSeq": point["seq"]}
    return {"symbol": SYMBOL, "since": point["timestamp"]}


async def subscribe(client: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """Subscribe on either transport; the ack (Socket.IO) or the `subscribed` reply."""
    if client.kind == "ws":
        reply = await client.request({"action": "subscribe", **payload})
        assert reply.get("type") == "subscribed", reply
        return reply
    return await client.subscribe(payload)


async def open_client(clients: Any, stack: Any, transport: str) -> Any:
    return await (clients.ws(stack.url) if transport == "ws" else clients.sio(stack.url))


@pytest.mark.parametrize("transport", ["sio", "ws"])
@pytest.mark.parametrize("mode", ["sinceSeq", "since"])
async def test_resume_while_publishing_gives_every_update_after_the_point_once(
    stack: Any, clients: Any, mode: str, transport: str
) -> None:
    # Another subscriber keeps the symbol's room (and its live feed) busy throughout.
    watcher = await clients.sio(stack.url)
    await watcher.subscribe(SYMBOL)
    client = await open_client(clients, stack, transport)
    base = now_ms() - 60_000  # distinct, increasing timestamps make `since` exact
    published: list[dict[str, Any]] = []

    async def publish_all() -> None:
        for i in range(UPDATES):
            published.append(await stack.publish(SYMBOL, 100 + i / 100, timestamp=base + i, n=i))
            await asyncio.sleep(0.002 if i % 3 == 0 else 0)

    publisher = asyncio.create_task(publish_all())
    try:
        await eventually(lambda: len(published) >= 80, 10, "80 updates published")
        point = published[40]
        ack = await subscribe(client, resume_payload(mode, point))
        at_ack = len(published)
        await publisher
    finally:
        publisher.cancel()
    assert ack.get("ok") is True and ack.get("recovered") is True, ack
    assert at_ack < UPDATES, "the publisher finished before the resume: nothing ran concurrently"

    expected = published[41:]
    await client.updates.wait_for(
        lambda items: any(u.get("n") == UPDATES - 1 for u in items), 10, "the last published update"
    )
    received = client.updates_for(SYMBOL)
    assert [u["seq"] for u in received] == [u["seq"] for u in expected]
    for got, want in zip(received, expected):
        assert_same_json(got, want)


@pytest.mark.parametrize("mode", ["sinceSeq", "since"])
async def test_resume_from_a_point_history_no_longer_reaches(
    backend: str, request: pytest.FixtureRequest, clients: Any, mode: str
) -> None:
    async with stack_for(backend, request, history_max_entries=20) as stack:
        base = now_ms() - 60_000
        published = [await stack.publish(SYMBOL, 10 + i / 100, timestamp=base + i) for i in range(UPDATES)]
        client = await clients.sio(stack.url)
        ack = await client.subscribe(resume_payload(mode, published[2]))
        assert ack.get("ok") is True and ack.get("recovered") is False, ack
        snapshot = await client.expect_update(what="the snapshot")
        assert_same_json(snapshot, published[-1])
        live = await stack.publish(SYMBOL, 99.5)
        assert_same_json(await client.expect_update(what="the next live update"), live)
        await asyncio.sleep(0.1)
        assert len(client.updates_for(SYMBOL)) == 2, client.updates.items
        await client.close()


async def test_resume_at_the_newest_update_sends_only_what_follows(stack: Any, clients: Any) -> None:
    published = [await stack.publish(SYMBOL, 20 + i) for i in range(5)]
    client = await clients.sio(stack.url)
    ack = await client.subscribe({"symbol": SYMBOL, "sinceSeq": published[-1]["seq"]})
    assert ack.get("recovered") is True, ack
    live = await stack.publish(SYMBOL, 30.0)
    assert_same_json(await client.expect_update(what="the next live update"), live)
    await asyncio.sleep(0.1)
    assert client.updates_for(SYMBOL) == [live]


async def test_resume_at_an_update_still_in_flight_does_not_repeat_it(redis_url: str, clients: Any) -> None:
    """The update a client resumes at may still be on its way through this instance's
    subscription (another client keeps the symbol's feed open): it must not come again."""
    async with inprocess_stack("redis", redis_url) as stack:
        watcher = await clients.sio(stack.url)
        await watcher.subscribe(SYMBOL)
        repeated = []
        for attempt in range(60):
            newest = await stack.publish(SYMBOL, 1 + attempt)
            client = await clients.ws(stack.url)
            reply = await client.request({"action": "subscribe", "symbol": SYMBOL, "sinceSeq": newest["seq"]})
            assert reply.get("recovered") is True, reply
            await asyncio.sleep(0.02)
            repeated += client.updates_for(SYMBOL)
            await client.close()
        await watcher.close()
        assert repeated == []


async def test_resume_from_a_seq_this_history_never_had(stack: Any, clients: Any) -> None:
    """A point beyond the newest seq (a client coming from another deployment, or a
    reset Redis) cannot be resumed: the snapshot comes instead."""
    published = [await stack.publish(SYMBOL, 40 + i) for i in range(3)]
    client = await clients.sio(stack.url)
    ack = await client.subscribe({"symbol": SYMBOL, "sinceSeq": 1_000_000})
    assert ack.get("recovered") is False, ack
    assert_same_json(await client.expect_update(what="the snapshot"), published[-1])


async def test_resuming_a_symbol_already_subscribed_still_answers_recovered(stack: Any, clients: Any) -> None:
    """A client that subscribes again with sinceSeq to a symbol it already has (as
    clients do on every connect, even when the connection state was recovered) gets
    `recovered: true` in the ack, nothing added and nothing repeated."""
    published = [await stack.publish(SYMBOL, 40 + i) for i in range(3)]
    client = await clients.sio(stack.url)
    first = await client.subscribe(SYMBOL)
    assert first.get("added") == [SYMBOL], first
    await client.expect_update(what="the snapshot")
    again = await client.subscribe({"symbol": SYMBOL, "sinceSeq": published[-1]["seq"]})
    assert again.get("ok") is True and again.get("added") == [] and again.get("recovered") is True, again
    live = await stack.publish(SYMBOL, 50.0)
    assert_same_json(await client.expect_update(what="the next live update"), live)
    assert client.updates_for(SYMBOL) == [published[-1], live]


async def test_resume_of_a_symbol_never_published(stack: Any, clients: Any) -> None:
    client = await clients.sio(stack.url)
    ack = await client.subscribe({"symbol": "NEVER", "sinceSeq": 0})
    assert ack.get("recovered") is True, ack
    first = await stack.publish("NEVER", 1.0)
    assert_same_json(await client.expect_update(what="the first update"), first)


async def test_resume_over_third_party_updates_recorded_in_history(redis_url: str, clients: Any) -> None:
    """Updates of a plain SET+PUBLISH publisher are recorded, so `since` resumes them too."""
    async with inprocess_stack("redis", redis_url) as stack:
        await eventually(lambda: stack.broker.recorder.leading, 5, "the recorder to lead")
        assert stack.raw is not None
        base = now_ms() - 60_000
        published = []
        for i in range(30):
            update = {"symbol": SYMBOL, "price": 70 + i / 100, "timestamp": base + i}
            await stack.raw.set_and_publish(update)
            published.append(update)
        history = aioredis.from_url(redis_url)
        try:
            await eventually(lambda: _stream_length(history, f"stock:{SYMBOL}:history", 30), 5, "every update recorded")
        finally:
            await history.aclose()
        client = await clients.sio(stack.url)
        ack = await client.subscribe({"symbol": SYMBOL, "since": published[9]["timestamp"]})
        assert ack.get("recovered") is True, ack
        await client.updates.wait_for(lambda items: len(items) >= 20, 5, "the replay")
        assert client.updates_for(SYMBOL) == published[10:]
        live = {"symbol": SYMBOL, "price": 80.0, "timestamp": base + 100}
        await stack.raw.set_and_publish(live)
        assert await client.expect_update(lambda u: u.get("price") == 80.0, what="the live update") == live
        await asyncio.sleep(0.1)
        assert client.updates_for(SYMBOL) == published[10:] + [live]
        await client.close()


async def _stream_length(client: Any, key: str, count: int) -> bool:
    return await client.xlen(key) >= count
