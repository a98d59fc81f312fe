"""The plain WebSocket endpoint /live-price, including the original README client."""

from __future__ import annotations

import json

import pytest

from tests.support.protocol import assert_error_object, assert_subscribe_ack, assert_unsubscribe_ack, failed_entries
from tests.support.waiting import assert_same_json

memory_only = pytest.mark.parametrize("backend", ["memory"], indirect=True)


def is_live_update_log(args) -> bool:
    return (
        isinstance(args, list)
        and len(args) == 2
        and args[0] == "Live Price Update:"
        and isinstance(args[1], dict)
        and "type" not in args[1]
    )


# -- the original README's browser client, verbatim, under Node ---------------------------


async def test_readme_client_receives_snapshot_and_live_updates(stack, clients, node_harness):
    stored = await stack.publish("AAPL", 189.45)
    readme = await clients.readme(stack.url)
    await readme.wait_for_log(
        lambda a: a == ["Connected to WebSocket server"], what="the README client's open log line"
    )
    await readme.wait_for_log(is_live_update_log, what="the AAPL snapshot")
    assert_same_json(readme.live_updates()[0], stored)
    # The subscription is in place once the snapshot came; stream a few updates.
    sent = [await stack.publish("AAPL", 189.5 + i / 10) for i in range(5)]
    await readme.logs.wait_for(
        lambda _: len(readme.live_updates()) >= 6, 10, "5 live updates logged by the README client"
    )
    for got, expected in zip(readme.live_updates()[1:], sent):
        assert_same_json(got, expected)
    # Every other frame the README client saw carried a `type` (e.g. "subscribed").
    assert all(r.get("type") in ("subscribed",) for r in readme.replies()), readme.replies()


async def test_readme_client_with_original_redis_publisher(servers, redis_url, raw_publisher, clients, node_harness):
    """The original deployment: a served process on Redis, SET+PUBLISH from outside."""
    server = await servers.start(redis_url=redis_url)
    readme = await clients.readme(server.ws_url)
    await readme.wait_for_log(
        lambda a: isinstance(a, list) and len(a) == 2 and isinstance(a[1], dict) and a[1].get("type") == "subscribed",
        what="the subscribed reply",
    )
    sent = [await raw_publisher.publish("AAPL", 189.45 + i) for i in range(3)]
    await readme.logs.wait_for(
        lambda _: len(readme.live_updates()) >= 3, 10, "3 live updates logged by the README client"
    )
    assert [json.dumps(u, sort_keys=True) for u in readme.live_updates()] == [
        json.dumps(u, sort_keys=True) for u in sent
    ]


# -- protocol ---------------------------------------------------------------------------


async def test_subscribe_reply_and_bare_updates(stack, clients):
    ws = await clients.ws(stack.url)
    reply = await ws.subscribe("aapl")
    assert reply.get("type") == "subscribed", reply
    assert_subscribe_ack(reply, ["AAPL"], ["AAPL"])
    published = await stack.publish("AAPL", 10.25, volume=3)
    update = await ws.expect_update()
    assert "type" not in update
    assert_same_json(update, published)

    reply = await ws.subscribe("MSFT", "AAPL", "$$")
    assert reply.get("type") == "subscribed", reply
    assert_subscribe_ack(reply, ["AAPL", "MSFT"], ["MSFT"], failed_entries(["$$"]))


async def test_unsubscribe_reply_and_no_updates_after(stack, clients):
    ws = await clients.ws(stack.url)
    await ws.subscribe("AAPL", "MSFT")
    reply = await ws.unsubscribe("AAPL")
    assert reply.get("type") == "unsubscribed", reply
    assert_unsubscribe_ack(reply, ["MSFT"], ["AAPL"])
    mark = ws.last_reply_mark
    for i in range(3):
        await stack.publish("AAPL", 1.0 + i)
    marker = await stack.publish("MSFT", 2.0, marker=True)
    assert_same_json(await ws.expect_update(lambda u: u.get("marker") is True), marker)
    leaked = ws.updates_for("AAPL", since=mark)
    assert not leaked, f"updates after the unsubscribed reply: {leaked}"


async def test_snapshot_follows_subscribed_reply(stack, clients):
    stored = await stack.publish("AAPL", 55.5, exchange="XNAS")
    ws = await clients.ws(stack.url)
    await ws.subscribe("AAPL")
    assert ws.last_reply_mark == 0, "the snapshot came before the subscribed reply"
    assert_same_json(await ws.expect_update(), stored)


@memory_only
async def test_ping_pong_and_id_echo(stack, clients):
    ws = await clients.ws(stack.url)
    reply = await ws.request({"action": "ping"})
    assert reply.get("type") == "pong", reply
    reply = await ws.request({"action": "ping", "id": 7})
    assert reply == {"type": "pong", "ok": True, "id": 7}, reply
    reply = await ws.request({"action": "subscribe", "symbol": "AAPL", "id": "req-1"})
    assert reply.get("type") == "subscribed" and reply.get("id") == "req-1", reply
    reply = await ws.request({"action": "unsubscribe", "symbols": ["AAPL"], "id": 2})
    assert reply.get("type") == "unsubscribed" and reply.get("id") == 2, reply
    reply = await ws.request({"action": "dance", "id": "x-3"})
    assert reply.get("type") == "error" and reply.get("id") == "x-3", reply
    assert_error_object(reply, "invalid_payload")


@memory_only
async def test_replies_come_in_request_order(stack, clients):
    ws = await clients.ws(stack.url)
    requests = [
        {"action": "subscribe", "symbol": "AAPL", "id": 1},
        {"action": "ping", "id": 2},
        {"action": "bogus", "id": 3},
        {"action": "unsubscribe", "symbol": "AAPL", "id": 4},
        {"action": "subscribe", "symbols": ["MSFT", "IBM"], "id": 5},
        {"action": "ping", "id": 6},
    ]
    for request in requests:
        await ws.send(request)
    await ws.replies.wait_count(len(requests))
    replies = ws.replies.items
    assert [r.get("id") for r in replies] == [1, 2, 3, 4, 5, 6], replies
    assert [r.get("type") for r in replies] == ["subscribed", "pong", "error", "unsubscribed", "subscribed", "pong"]
    assert_subscribe_ack(replies[4], ["IBM", "MSFT"], ["MSFT", "IBM"])


NOT_REQUESTS = {
    "not-json": "hello",
    "broken-json": '{"action": "subscribe"',
    "number": "42",
    "array": '["subscribe", "AAPL"]',
    "null": "null",
    "string": '"subscribe"',
    "no-action": '{"symbol": "AAPL"}',
    "unknown-action": '{"action": "dance", "symbol": "AAPL"}',
    "action-not-string": '{"action": 5, "symbol": "AAPL"}',
    "subscribe-without-symbol": '{"action": "subscribe"}',
    "symbols-with-number": '{"action": "subscribe", "symbols": ["AAPL", 5]}',
    "empty-symbols": '{"action": "subscribe", "symbols": []}',
    "nested-symbol": '{"action": "subscribe", "symbol": {"symbol": "AAPL"}}',
}


@memory_only
@pytest.mark.parametrize("name", sorted(NOT_REQUESTS))
async def test_invalid_text_frames_answer_invalid_payload(stack, clients, name):
    ws = await clients.ws(stack.url)
    await ws.send_text(NOT_REQUESTS[name])
    reply = await ws.next_reply()
    assert reply.get("type") == "error", reply
    assert_error_object(reply, "invalid_payload")
    # The socket stays open and usable, and the failed request changed nothing.
    assert (await ws.request({"action": "ping"})).get("type") == "pong"
    reply = await ws.subscribe("IBM")
    assert_subscribe_ack(reply, ["IBM"], ["IBM"])
    assert ws.is_open


@memory_only
async def test_binary_frame_answers_invalid_payload(stack, clients):
    ws = await clients.ws(stack.url)
    await ws.send_bytes(json.dumps({"action": "subscribe", "symbol": "AAPL"}).encode())
    reply = await ws.next_reply()
    assert reply.get("type") == "error", reply
    assert_error_object(reply, "invalid_payload")
    assert (await ws.request({"action": "ping"})).get("type") == "pong"
    # The binary subscribe did not subscribe.
    assert_subscribe_ack(await ws.subscribe("IBM"), ["IBM"], ["IBM"])


@memory_only
async def test_oversize_frame_closes_with_1009(stack, clients):
    ws = await clients.ws(stack.url)
    assert (await ws.request({"action": "ping"})).get("type") == "pong"
    padding = "x" * (256 * 1024)
    await ws.send({"action": "subscribe", "symbol": "AAPL", "padding": padding})
    code = await ws.wait_closed()
    assert code == 1009, f"oversize frame closed the socket with {code}, expected 1009"


@memory_only
async def test_frame_under_the_limit_is_served(stack, clients):
    ws = await clients.ws(stack.url)
    reply = await ws.request({"action": "ping", "padding": "x" * 8000})
    assert reply.get("type") == "pong", reply
    assert ws.is_open


async def test_websocket_and_socketio_clients_share_updates(stack, clients):
    ws = await clients.ws(stack.url)
    sio = await clients.sio(stack.url)
    await ws.subscribe("AAPL")
    await sio.subscribe("AAPL")
    sent = [await stack.publish("AAPL", 70 + i) for i in range(10)]
    await ws.updates.wait_count(10)
    await sio.updates.wait_count(10)
    for got_ws, got_sio, expected in zip(ws.updates.items, sio.updates.items, sent):
        assert_same_json(got_ws, expected)
        assert_same_json(got_sio, expected)
