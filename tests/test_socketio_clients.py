"""Socket.IO clients (python-socketio and stock socket.io-client@4): connecting, subscribing, streaming.

Every test runs on both backends (embedded memory and Redis); most with both client
libraries using their default transports (long-polling first, then upgrade).
"""

from __future__ import annotations

import pytest

from tests.support.protocol import assert_subscribe_ack, assert_unsubscribe_ack
from tests.support.waiting import assert_same_json, eventually

SUBSCRIBE_FORMS = {
    "string": ("AAPL", ["AAPL"]),
    "list": (["AAPL", "MSFT"], ["AAPL", "MSFT"]),
    "object-symbol": ({"symbol": "AAPL"}, ["AAPL"]),
    "object-symbols": ({"symbols": ["AAPL", "MSFT"]}, ["AAPL", "MSFT"]),
}


def is_symbol(symbol: str):
    return lambda u: isinstance(u, dict) and u.get("symbol") == symbol


async def test_default_transports_connect_and_upgrade(stack, clients, sio_kind):
    client = await clients.sio(stack.url, kind=sio_kind)
    # Defaults start on long-polling and upgrade to websocket: both transports work.
    await eventually(
        lambda: client.transport == "websocket",
        10,
        f"{sio_kind} client to upgrade to websocket (now {client.transport!r})",
    )
    ack = await client.subscribe("AAPL")
    assert_subscribe_ack(ack, ["AAPL"], ["AAPL"])
    published = await stack.publish("AAPL", 189.45)
    assert_same_json(await client.expect_update(is_symbol("AAPL")), published)


@pytest.mark.parametrize("transport", ["polling", "websocket"])
async def test_single_transport_streams(stack, clients, transport):
    client = await clients.sio(stack.url, transports=[transport])
    assert client.transport == transport
    assert_subscribe_ack(await client.subscribe(["AAPL"]), ["AAPL"], ["AAPL"])
    sent = [await stack.publish("AAPL", 100 + i) for i in range(5)]
    for expected in sent:
        assert_same_json(await client.expect_update(), expected)
    assert client.transport == transport


@pytest.mark.parametrize("form", sorted(SUBSCRIBE_FORMS))
async def test_subscribe_forms_ack_and_stream(stack, clients, sio_kind, form):
    payload, symbols = SUBSCRIBE_FORMS[form]
    client = await clients.sio(stack.url, kind=sio_kind)
    ack = await client.subscribe(payload)
    assert_subscribe_ack(ack, symbols, symbols)
    for symbol in symbols:
        published = await stack.publish(symbol, 42.5, volume=1000)
        got = await client.expect_update(is_symbol(symbol), what=f"live update for {symbol}")
        assert_same_json(got, published)
    # Nothing but what was published for the subscribed symbols arrived.
    assert len(client.updates) == len(symbols)


@pytest.mark.parametrize("form", sorted(SUBSCRIBE_FORMS))
async def test_unsubscribe_forms_stop_updates(stack, clients, sio_kind, form):
    payload, symbols = SUBSCRIBE_FORMS[form]
    client = await clients.sio(stack.url, kind=sio_kind)
    assert_subscribe_ack(
        await client.subscribe(["AAPL", "MSFT", "TSLA"]), ["AAPL", "MSFT", "TSLA"], ["AAPL", "MSFT", "TSLA"]
    )
    for symbol in symbols:
        await stack.publish(symbol, 1.0)
        await client.expect_update(is_symbol(symbol))

    ack = await client.unsubscribe(payload)
    left = sorted({"AAPL", "MSFT", "TSLA"} - set(symbols))
    assert_unsubscribe_ack(ack, left, symbols)
    mark = client.last_ack_mark

    for i in range(3):
        for symbol in symbols:
            await stack.publish(symbol, 2.0 + i)
    marker = await stack.publish("TSLA", 99.0, marker=True)
    assert_same_json(
        await client.expect_update(lambda u: u.get("marker") is True, what="marker update on TSLA"), marker
    )
    after = client.updates.since(mark)
    leaked = [u for u in after if u.get("symbol") in symbols]
    assert not leaked, f"updates for unsubscribed {symbols} after the unsubscribe ack: {leaked}"


async def test_lowercase_symbols_are_normalized(stack, clients, sio_kind):
    client = await clients.sio(stack.url, kind=sio_kind)
    ack = await client.subscribe(["aapl", "Brk.b", "btc-usd"])
    assert_subscribe_ack(ack, ["AAPL", "BRK.B", "BTC-USD"], ["AAPL", "BRK.B", "BTC-USD"])
    ack = await client.subscribe({"symbol": "msft"})
    assert_subscribe_ack(ack, ["AAPL", "BRK.B", "BTC-USD", "MSFT"], ["MSFT"])
    published = await stack.publish("BRK.B", 412.1)
    assert_same_json(await client.expect_update(is_symbol("BRK.B")), published)
    ack = await client.unsubscribe("brk.b")
    assert_unsubscribe_ack(ack, ["AAPL", "BTC-USD", "MSFT"], ["BRK.B"])


async def test_snapshot_is_the_stored_update_exactly(stack, clients, sio_kind):
    stored = await stack.publish("AAPL", 189.45, volume=1200, exchange="XNAS", note="a b")
    client = await clients.sio(stack.url, kind=sio_kind)
    ack = await client.subscribe(["AAPL", "NOPX"])
    assert_subscribe_ack(ack, ["AAPL", "NOPX"], ["AAPL", "NOPX"])
    assert client.last_ack_mark == 0, "a snapshot arrived before the subscribe ack"
    snapshot = await client.expect_update(what="snapshot of AAPL")
    assert_same_json(snapshot, stored)
    # NOPX has no stored price: no snapshot; its first update is the live one.
    live = await stack.publish("NOPX", 3.0)
    assert_same_json(await client.expect_update(what="live NOPX update"), live)
    assert len(client.updates) == 2, f"unexpected extra updates: {client.updates.items}"


async def test_snapshot_not_repeated_on_resubscribe(stack, clients, sio_kind):
    await stack.publish("AAPL", 10.0)
    client = await clients.sio(stack.url, kind=sio_kind)
    await client.subscribe("AAPL")
    await client.expect_update(what="snapshot")
    ack = await client.subscribe("AAPL")
    assert_subscribe_ack(ack, ["AAPL"], [])
    live = await stack.publish("AAPL", 11.0)
    assert_same_json(await client.expect_update(), live)
    assert len(client.updates) == 2, (
        f"re-subscribing to an already subscribed symbol resent a snapshot: {client.updates.items}"
    )


async def test_live_updates_arrive_in_publish_order(stack, clients, sio_kind):
    client = await clients.sio(stack.url, kind=sio_kind)
    await client.subscribe(["AAPL", "MSFT"])
    sent = []
    for i in range(40):
        symbol = "AAPL" if i % 3 else "MSFT"
        sent.append(await stack.publish(symbol, 100 + i / 100, n=i))
    await client.updates.wait_count(len(sent), timeout=10)
    got = client.updates.items
    for symbol in ("AAPL", "MSFT"):
        assert [u["n"] for u in got if u["symbol"] == symbol] == [u["n"] for u in sent if u["symbol"] == symbol]
    for received, expected in zip(sorted(got, key=lambda u: u["n"]), sent):
        assert_same_json(received, expected)


async def test_project_publisher_adds_increasing_seq(stack, clients):
    client = await clients.sio(stack.url)
    await client.subscribe("AAPL")
    sent = [await stack.publish("AAPL", 1.0 + i) for i in range(5)]
    seqs = [u.get("seq") for u in sent]
    assert all(isinstance(s, int) for s in seqs), f"publisher returned no seq: {sent}"
    assert seqs == list(range(seqs[0], seqs[0] + 5)), f"seq not 1-step increasing: {seqs}"
    await client.updates.wait_count(5)
    assert [u["seq"] for u in client.updates.items] == seqs


async def test_two_clients_get_their_own_symbols(stack, clients, sio_kind):
    a = await clients.sio(stack.url, kind=sio_kind)
    b = await clients.sio(stack.url, kind="python")
    await a.subscribe("AAPL")
    await b.subscribe(["MSFT", "AAPL"])
    pa = await stack.publish("AAPL", 1.5)
    pm = await stack.publish("MSFT", 2.5)
    assert_same_json(await a.expect_update(), pa)
    assert_same_json(await b.expect_update(is_symbol("AAPL")), pa)
    assert_same_json(await b.expect_update(is_symbol("MSFT")), pm)
    marker = await stack.publish("AAPL", 1.6)
    assert_same_json(await a.expect_update(), marker)
    assert [u["symbol"] for u in a.updates.items] == ["AAPL", "AAPL"], a.updates.items


# -- the original design's third-party publisher (Redis only) -----------------------------


@pytest.mark.parametrize("backend", ["redis"], indirect=True)
async def test_raw_set_publish_is_snapshotted_and_streamed(stack, clients, sio_kind):
    stored = '{"symbol":"AAPL","price":189.45,"timestamp":1712331900000,"volume":7,"seq":41}'
    await stack.raw.store_only(stored, "AAPL")
    client = await clients.sio(stack.url, kind=sio_kind)
    assert_subscribe_ack(await client.subscribe("AAPL"), ["AAPL"], ["AAPL"])
    snapshot = await client.expect_update(what="snapshot of a raw SET")
    assert_same_json(snapshot, {"symbol": "AAPL", "price": 189.45, "timestamp": 1712331900000, "volume": 7, "seq": 41})
    live = await stack.raw.publish("AAPL", 190, exchange="XNAS")
    assert_same_json(await client.expect_update(what="live raw SET+PUBLISH update"), live)
    assert "seq" not in client.updates.items[-1], "the server added a field to a raw update"
