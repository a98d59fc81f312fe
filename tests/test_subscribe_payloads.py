"""Subscribe/unsubscribe request validation and ack semantics.

Protocol logic is the same on every backend, so these run on the embedded one.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.support.protocol import (
    assert_error_ack,
    assert_error_object,
    assert_subscribe_ack,
    assert_unsubscribe_ack,
    failed_entries,
)
from tests.support.waiting import assert_same_json

pytestmark = pytest.mark.parametrize("backend", ["memory"], indirect=True)

# Payloads that fail a request as a whole. Those with a valid symbol next to the bad
# part would show a partially applied request.
BAD_PAYLOADS = {
    "number": (42,),
    "float": (3.5,),
    "boolean": (True,),
    "null": (None,),
    "no-argument": (),
    "empty-list": ([],),
    "empty-symbols": ({"symbols": []},),
    "empty-object": ({},),
    "list-with-number": (["MSFT", 5],),
    "list-with-null": (["MSFT", None],),
    "list-with-list": (["MSFT", ["TSLA"]],),
    "list-with-object": (["MSFT", {"symbol": "TSLA"}],),
    "symbols-with-number": ({"symbols": ["MSFT", 7]},),
    "nested-object-symbol": ({"symbol": {"symbol": "MSFT"}},),
    "nested-object-symbols": ({"symbols": {"MSFT": True}},),
    "symbol-number": ({"symbol": 5},),
    "symbols-string": ({"symbols": 5},),
}

INVALID_SYMBOLS = ["A" * 33, "$AAPL", "", "AA PL", ".X", "-X", "ÄPFEL", "AAPL;DROP", "A\nB", "A*", "A#B", "A@B"]
VALID_EXOTIC = ["^GSPC", "EUR/USD", "NASDAQ:AAPL", "ES=F", "BF-B", "BRK.B", "X_Y", "A" * 32, "9"]


@pytest.fixture
async def client(stack, clients):
    return await clients.sio(stack.url)


@pytest.mark.parametrize("name", sorted(BAD_PAYLOADS))
async def test_bad_subscribe_payload_fails_whole_request(client, name):
    assert_subscribe_ack(await client.subscribe("AAPL"), ["AAPL"], ["AAPL"])
    ack = await client.call("subscribe", *BAD_PAYLOADS[name])
    assert_error_ack(ack, "invalid_payload")
    # The set is exactly as it was: nothing of the bad request (e.g. MSFT) was added.
    assert_subscribe_ack(await client.subscribe("IBM"), ["AAPL", "IBM"], ["IBM"])


@pytest.mark.parametrize("name", sorted(BAD_PAYLOADS))
async def test_bad_unsubscribe_payload_fails_whole_request(client, name):
    assert_subscribe_ack(await client.subscribe(["AAPL", "MSFT"]), ["AAPL", "MSFT"], ["AAPL", "MSFT"])
    ack = await client.call("unsubscribe", *BAD_PAYLOADS[name])
    assert_error_ack(ack, "invalid_payload")
    # Nothing was removed (MSFT would be, by a partially applied request).
    assert_subscribe_ack(await client.subscribe("IBM"), ["AAPL", "IBM", "MSFT"], ["IBM"])


async def test_invalid_symbols_fail_alone(client, stack):
    request = ["AAPL", *INVALID_SYMBOLS, "msft"]
    ack = await client.subscribe(request)
    assert_subscribe_ack(ack, ["AAPL", "MSFT"], ["AAPL", "MSFT"], failed_entries(INVALID_SYMBOLS))
    published = await stack.publish("MSFT", 1.0)
    assert_same_json(await client.expect_update(), published)


async def test_exotic_valid_symbols(client, stack):
    ack = await client.subscribe({"symbols": VALID_EXOTIC})
    assert_subscribe_ack(ack, VALID_EXOTIC, VALID_EXOTIC)
    published = await stack.publish("EUR/USD", 1.0832)
    assert_same_json(await client.expect_update(), published)


@pytest.mark.parametrize(
    "payload",
    ["$$", ["$$"], {"symbol": "$$"}, {"symbols": ["$$", "A" * 33]}],
    ids=["string", "list", "object-symbol", "object-symbols"],
)
async def test_only_invalid_symbols_is_ok_with_failed(client, payload):
    bad = ["$$"] if payload != {"symbols": ["$$", "A" * 33]} else ["$$", "A" * 33]
    ack = await client.subscribe(payload)
    assert_subscribe_ack(ack, [], [], failed_entries(bad))


async def test_acks_list_sorted_set_and_changes_in_request_order(client):
    ack = await client.subscribe(["TSLA", "AMZN", "NVDA"])
    assert_subscribe_ack(ack, ["AMZN", "NVDA", "TSLA"], ["TSLA", "AMZN", "NVDA"])
    # Already subscribed symbols and duplicates are not "added" again.
    ack = await client.subscribe(["MSFT", "amzn", "AAPL", "msft", "AAPL", "TSLA"])
    assert_subscribe_ack(ack, ["AAPL", "AMZN", "MSFT", "NVDA", "TSLA"], ["MSFT", "AAPL"])
    ack = await client.unsubscribe(["NVDA", "aapl", "nvda", "IBM", "AAPL"])
    assert_unsubscribe_ack(ack, ["AMZN", "MSFT", "TSLA"], ["NVDA", "AAPL"])


async def test_unsubscribe_of_unsubscribed_symbol_is_not_an_error(client):
    ack = await client.unsubscribe("IBM")
    assert_unsubscribe_ack(ack, [], [])
    await client.subscribe("AAPL")
    ack = await client.unsubscribe({"symbols": ["IBM", "GE"]})
    assert_unsubscribe_ack(ack, ["AAPL"], [])


async def test_unsubscribe_lists_invalid_symbols_in_failed(client):
    await client.subscribe(["AAPL", "MSFT"])
    ack = await client.unsubscribe(["AAPL", "$$", "A" * 33])
    assert_unsubscribe_ack(ack, ["MSFT"], ["AAPL"], failed_entries(["$$", "A" * 33]))


async def test_too_many_subscriptions_fails_whole_request(client):
    await client.subscribe("AAPL")
    many = [f"S{i}" for i in range(250)]
    ack = await client.subscribe(many)
    assert_error_ack(ack, "too_many_subscriptions")
    assert_subscribe_ack(await client.subscribe("IBM"), ["AAPL", "IBM"], ["IBM"])


async def test_requests_take_effect_in_order(client):
    # Fired without waiting for each ack: the server must apply them in sending order.
    acks = await asyncio.gather(
        client.subscribe("AAPL"),
        client.unsubscribe("AAPL"),
        client.subscribe(["MSFT", "AAPL"]),
        client.unsubscribe("MSFT"),
    )
    assert_subscribe_ack(acks[0], ["AAPL"], ["AAPL"])
    assert_unsubscribe_ack(acks[1], [], ["AAPL"])
    assert_subscribe_ack(acks[2], ["AAPL", "MSFT"], ["MSFT", "AAPL"])
    assert_unsubscribe_ack(acks[3], ["AAPL"], ["MSFT"])
    ack_ids = [entry[1] for entry in client.timeline.items if entry[0] == "ack"]
    assert ack_ids == sorted(ack_ids), f"acks came out of request order: {ack_ids}"


# -- without an ack callback: `error` events ---------------------------------------------


async def test_bad_payload_without_ack_sends_error_event(stack, clients, sio_kind):
    client = await clients.sio(stack.url, kind=sio_kind)
    await client.emit("subscribe", 42)
    assert_error_object(await client.expect_error(), "invalid_payload")
    await client.emit("unsubscribe", ["AAPL", None])
    assert_error_object(await client.expect_error(), "invalid_payload")


async def test_invalid_symbols_without_ack_send_error_event(stack, clients, sio_kind):
    client = await clients.sio(stack.url, kind=sio_kind)
    await client.emit("subscribe", ["AAPL", "$$", "A" * 33])
    error = await client.expect_error()
    assert_error_object(error, "invalid_symbol")
    assert error.get("symbols") == ["$$", "A" * 33], f"error event symbols: {error!r}"
    # The valid symbol of the same request was subscribed.
    published = await stack.publish("AAPL", 5.0)
    assert_same_json(await client.expect_update(), published)


async def test_valid_subscribe_without_ack_sends_no_error(stack, clients, sio_kind):
    client = await clients.sio(stack.url, kind=sio_kind)
    await client.emit("subscribe", "AAPL")
    published = await stack.publish("AAPL", 6.0)
    assert_same_json(await client.expect_update(), published)
    assert not client.errors.items


async def test_unknown_event_with_ack_is_invalid_payload(client):
    assert_error_ack(await client.call("subcribe", "AAPL"), "invalid_payload")
    assert_error_ack(await client.call("stockUpdate", {"symbol": "AAPL"}), "invalid_payload")


async def test_unknown_event_without_ack_is_ignored(stack, clients, sio_kind):
    client = await clients.sio(stack.url, kind=sio_kind)
    await client.emit("subcribe", "AAPL")
    await client.emit("bogus")
    await client.emit("price", {"symbol": "AAPL", "price": 1, "timestamp": 1})
    # Requests are handled in order: once this ack is here, the above were handled.
    assert_subscribe_ack(await client.subscribe("MSFT"), ["MSFT"], ["MSFT"])
    assert not client.errors.items, f"unknown events were answered: {client.errors.items}"
    assert client.connected
    published = await stack.publish("MSFT", 7.0)
    assert_same_json(await client.expect_update(), published)
