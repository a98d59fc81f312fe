"""Hostile input, generated with Hypothesis.

Whatever a client sends (any JSON, deep nesting, huge strings, odd unicode, at
every event, with and without an ack; any frame on /live-price) and whatever
arrives on a `stock:*` channel, the server answers only with catalogue errors
(a catalogue `code` and a human `message`, never a stack trace), leaves the
subscription set as it was when it refuses a request, delivers no invalid
update, and keeps serving. One server process takes all of it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import random
import re
import time
import urllib.parse
from typing import Any, Iterator

import aiohttp
import jwt
import orjson
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, Phase, example, given, settings, strategies as st

from tests.support.clients import ClientPool
from tests.support.protocol import SYMBOL_RE, assert_subscribe_ack
from tests.support.redis_server import RedisServer
from tests.support.servers import ServerFactory, ServerProcess
from tests.support.waiting import PROMPT, canonical, now_ms
from tests.support.acks import before_close, sio_ack
from tests.support.raw_ws import RawWebSocket, open_socketio

CATALOGUE = {
    "invalid_payload",
    "invalid_symbol",
    "auth_required",
    "auth_failed",
    "forbidden_symbol",
    "too_many_subscriptions",
    "rate_limited",
    "slow_client",
    "server_shutdown",
    "unavailable",
    "internal",
}
# Refusals of a request as a whole: the subscription set must be exactly as before.
WHOLE_REQUEST_CODES = {
    "invalid_payload",
    "auth_required",
    "too_many_subscriptions",
    "rate_limited",
    "auth_failed",
    "unavailable",
    "internal",
}
SECRET = "hostile-input-secret-longer-than-32-bytes"
CONTROL = "CTRL"  # a symbol only the control checks use
PROBE = "ZZPROBE"  # never subscribed: unsubscribing it shows the set without changing it

# No shrinking: a failing example is reported as generated, and the run stays short.
FUZZ = settings(
    deadline=None,
    database=None,
    derandomize=False,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


# -- what is generated ------------------------------------------------------------------

ODD_TEXT = st.sampled_from(
    [
        "",
        " ",
        "AAPL",
        "aapl",
        "BRK.B",
        "^GSPC",
        "EUR/USD",
        "A" * 32,
        "A" * 33,
        "$AAPL",
        "A\nB",
        "\x00",
        "\u200bAAPL",
        "ＡＡＰＬ",
        "ÄPFEL",
        "\ud7ff",
        "🙂" * 10,
        "é" * 5,
        "Traceback",
        "__proto__",
        "constructor",
        "null",
        "{}",
        "[]",
        "\\",
        '"',
        "-1",
        "1e309",
    ]
)
# Huge strings appear once per payload at most (see SHAPED), so a payload stays under
# the server's MAX_MESSAGE_BYTES even with every character escaped.
HUGE_TEXT = st.builds(lambda c, n: c * n, st.sampled_from(["A", "é", "🙂", "\x00", " ", "\\"]), st.integers(1000, 6000))
TEXT = st.one_of(st.text(max_size=40), ODD_TEXT)
KEYS = st.one_of(
    st.sampled_from(["symbol", "symbols", "since", "sinceSeq", "token", "from", "to", "limit", "action", "id", "type"]),
    st.text(max_size=12),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    TEXT,
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.one_of(st.lists(children, max_size=6), st.dictionaries(KEYS, children, max_size=6)),
    max_leaves=25,
)


def deep(levels: int, leaf: Any = "AAPL") -> Any:
    value = leaf
    for i in range(levels):
        value = [value] if i % 2 else {"symbols": value}
    return value


# Payloads shaped like the real ones, with the values gone wrong.
SHAPED = st.one_of(
    st.fixed_dictionaries({"symbol": JSON}),
    st.fixed_dictionaries({"symbols": JSON}),
    st.fixed_dictionaries(
        {"symbols": st.lists(st.one_of(TEXT, SCALARS), max_size=8)}, optional={"since": SCALARS, "sinceSeq": SCALARS}
    ),
    st.fixed_dictionaries({"symbol": TEXT}, optional={"from": SCALARS, "to": SCALARS, "limit": SCALARS}),
    st.lists(TEXT, max_size=8),
    st.builds(deep, st.integers(50, 400)),
    HUGE_TEXT,
    st.fixed_dictionaries({"symbol": HUGE_TEXT}),
    st.fixed_dictionaries({"symbols": st.lists(HUGE_TEXT, min_size=1, max_size=1)}),
    st.fixed_dictionaries({"symbols": st.lists(TEXT, max_size=3)}, optional={"pad": HUGE_TEXT}),
)
PAYLOADS = st.one_of(JSON, SHAPED)
NO_ARGUMENT = object()
ARGUMENTS = st.one_of(PAYLOADS, st.just(NO_ARGUMENT))

RESERVED_EVENTS = {"connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"}
UNKNOWN_EVENTS = st.one_of(
    st.sampled_from(["stockUpdate", "error", "authenticated", "Subscribe", "subscribe ", "history2", "message"]),
    st.text(min_size=1, max_size=20),
).filter(
    lambda e: e not in RESERVED_EVENTS and e not in {"subscribe", "unsubscribe", "history", "authenticate", "ping"}
)
EVENTS = st.one_of(st.sampled_from(["subscribe", "unsubscribe", "history"]), UNKNOWN_EVENTS)


# -- checks ---------------------------------------------------------------------------------


STACK_TRACE = re.compile(r'Traceback \(most recent call last\)|File "[^"]*", line \d+')


def check_no_trace(value: Any) -> None:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    assert not STACK_TRACE.search(text), f"stack trace sent to a client: {text[:500]}"


def check_error(error: Any, allowed: set[str] = CATALOGUE) -> str:
    """An error object from the catalogue (stockstream/errors.py); returns its code."""
    assert isinstance(error, dict), f"error is not an object: {error!r}"
    code = error.get("code")
    assert code in CATALOGUE, f"error code {code!r} is not in the catalogue: {error!r}"
    assert code != "internal", f"client input made the server fail internally: {error!r}"
    assert code in allowed, f"unexpected error code {code!r}: {error!r}"
    assert isinstance(error.get("message"), str) and error["message"].strip(), f"no message: {error!r}"
    check_no_trace(error)
    return code


def args_of(argument: Any) -> tuple:
    return () if argument is NO_ARGUMENT else (argument,)


# -- the server and the clients ---------------------------------------------------------------


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[ServerProcess]:
    """One server for every test in this file: it must survive all of them."""
    redis_server.ensure_running()
    factory = ServerFactory(tmp_path_factory.mktemp("hostile"))
    try:
        yield factory.start_sync(
            {
                "JWT_SECRET": SECRET,
                "MAX_MESSAGE_BYTES": "1048576",
                # The point here is what the requests contain, not how many come.
                "REQUEST_RATE": "100000",
                "REQUEST_BURST": "100000",
            },
            redis_url=redis_server.url,
        )
    finally:
        factory.close_all()


class SetModel:
    """What a connection's subscription set is believed to be, checked on the wire."""

    def __init__(self, client: Any, reopen: Any = None) -> None:
        self.client = client
        self.symbols: list[str] = []
        self._reopen = reopen

    async def ready(self) -> "SetModel":
        """Start each example on an open connection, so that one failure does not
        make every later example fail (and Hypothesis can replay it alone)."""
        closed = self.client.closed.is_set() if self.client.kind == "ws" else not self.client.connected
        if closed and self._reopen is not None:
            self.client = await self._reopen()
            self.symbols = []
        return self

    async def actual(self) -> list[str]:
        if self.client.kind == "ws":
            reply = await self.client.request({"action": "unsubscribe", "symbol": PROBE})
        else:
            reply = await self.client.call("unsubscribe", PROBE)
        assert reply.get("ok") is True and reply.get("removed") == [], reply
        return reply["symbols"]

    async def assert_unchanged(self, why: str) -> None:
        actual = await self.actual()
        assert actual == self.symbols, (
            f"subscription set changed by a refused request ({why}): {self.symbols} -> {actual}"
        )

    async def resync(self) -> None:
        self.symbols = await self.actual()
        if len(self.symbols) > 20:  # keep it small, far from MAX_SUBSCRIPTIONS
            if self.client.kind == "ws":
                reply = await self.client.request({"action": "unsubscribe", "symbols": self.symbols})
            else:
                reply = await self.client.call("unsubscribe", self.symbols)
            assert reply.get("ok") is True and reply.get("symbols") == [], reply
            self.symbols = []


@pytest.fixture
async def sio_fuzz(target: ServerProcess, clients: ClientPool) -> SetModel:
    async def reopen() -> Any:
        return await clients.sio(target.url, transports=["websocket"])

    model = SetModel(await reopen(), reopen)
    await model.resync()
    return model


@pytest.fixture
async def ws_fuzz(target: ServerProcess, clients: ClientPool) -> SetModel:
    async def reopen() -> Any:
        return await clients.ws(target.url)

    return SetModel(await reopen(), reopen)


def check_ok_reply(event: str, reply: dict[str, Any], before: list[str]) -> None:
    check_no_trace(reply)
    if event == "subscribe":
        assert set(before) <= set(reply["symbols"]) and reply["symbols"] == sorted(reply["symbols"]), reply
        assert set(reply["added"]) == set(reply["symbols"]) - set(before), (before, reply)
        assert all(SYMBOL_RE.match(s) for s in reply["symbols"]), reply
        for failed in reply.get("failed", []):
            check_error({"message": "-", **failed}, {"invalid_symbol", "forbidden_symbol"})
    elif event == "unsubscribe":
        assert set(reply["symbols"]) == set(before) - set(reply["removed"]), (before, reply)
    elif event == "history":
        assert isinstance(reply.get("updates"), list) and SYMBOL_RE.match(reply.get("symbol", "")), reply
    else:
        raise AssertionError(f"unknown event {event!r} answered ok: {reply!r}")


# -- Socket.IO events --------------------------------------------------------------------------


@settings(FUZZ, max_examples=120)
@given(event=EVENTS, argument=ARGUMENTS)
async def test_socketio_events_with_ack(sio_fuzz: SetModel, event: str, argument: Any) -> None:
    await sio_fuzz.ready()
    client, before = sio_fuzz.client, list(sio_fuzz.symbols)
    ack = await client.call(event, *args_of(argument))
    assert isinstance(ack, dict), f"ack is not an object: {ack!r}"
    if ack.get("ok") is True:
        check_ok_reply(event, ack, before)
        await sio_fuzz.resync()
    else:
        assert ack.get("ok") is False and set(ack) == {"ok", "error"}, ack
        allowed = CATALOGUE if event in ("subscribe", "unsubscribe", "history") else {"invalid_payload"}
        check_error(ack["error"], allowed)
        await sio_fuzz.assert_unchanged(f"{event} {ack['error']['code']}")
    assert client.connected


@settings(FUZZ, max_examples=80)
@given(event=EVENTS, argument=ARGUMENTS)
async def test_socketio_events_without_ack(sio_fuzz: SetModel, event: str, argument: Any) -> None:
    await sio_fuzz.ready()
    client, before = sio_fuzz.client, list(sio_fuzz.symbols)
    mark = len(client.errors)
    await client.emit(event, *args_of(argument))
    # Requests are answered in order: once this one is, every error of the first was sent.
    after = await sio_fuzz.actual()
    codes = {check_error(error) for error in client.errors.since(mark)}
    if event not in ("subscribe", "unsubscribe", "history"):
        assert not codes, f"unknown event {event!r} without ack was answered: {client.errors.since(mark)}"
    if codes & WHOLE_REQUEST_CODES:
        assert after == before, f"set changed by a refused {event}: {before} -> {after}"
    elif event == "subscribe":
        assert set(before) <= set(after), (before, after)
    elif event == "unsubscribe":
        assert set(after) <= set(before), (before, after)
    else:
        assert after == before, (event, before, after)
    await sio_fuzz.resync()
    assert client.connected


def token_payloads() -> st.SearchStrategy[Any]:
    forged = st.builds(
        lambda claims, key: jwt.encode(claims, key, algorithm="HS256"),
        st.dictionaries(KEYS, SCALARS, max_size=4),
        st.sampled_from([SECRET + "x", "another-secret-longer-than-32-bytes!!"]),
    )
    unsigned = st.builds(
        lambda claims: jwt.encode(claims, None, algorithm="none"),
        st.dictionaries(st.sampled_from(["sub", "exp", "symbols"]), SCALARS, max_size=3),
    )
    return st.one_of(PAYLOADS, forged, unsigned, st.builds(lambda t: {"token": t}, st.one_of(forged, TEXT, SCALARS)))


@settings(FUZZ, max_examples=30)
@given(payload=token_payloads(), with_ack=st.booleans(), transport=st.sampled_from(["socketio", "live-price", "query"]))
async def test_authenticate_with_hostile_tokens(
    target: ServerProcess, clients: ClientPool, payload: Any, with_ack: bool, transport: str
) -> None:
    """None of these is a valid token: auth_failed (or invalid_payload), then the close."""
    if transport == "socketio":
        client = await clients.sio(target.url, transports=["websocket"])
        if with_ack:
            ack = await before_close(
                sio_ack(client, "authenticate", payload), client.disconnected, "the authenticate ack"
            )
            assert isinstance(ack, dict) and ack.get("ok") is False, ack
            code = check_error(ack.get("error"), {"auth_failed", "invalid_payload"})
        else:
            await client.emit("authenticate", payload)
            code = check_error(
                await before_close(client.expect_error(), client.disconnected, "an error event"),
                {"auth_failed", "invalid_payload"},
            )
        if code == "auth_failed":
            await client.wait_disconnected()
    else:
        if transport == "query":
            token = payload if isinstance(payload, str) else json.dumps(payload)
            # Within the HTTP request line limit (8 KiB): longer URLs are an HTTP matter.
            while len(urllib.parse.quote(token)) > 6000:
                token = token[: len(token) // 2]
            client = await clients.ws(f"{target.ws_url}?token={urllib.parse.quote(token)}")
        else:
            client = await clients.ws(target.url)
            await client.send({"action": "authenticate", "token": payload})
        reply = await before_close(client.next_reply(), client.closed, "an error frame")
        assert reply.get("type") == "error", reply
        code = check_error(reply, {"auth_failed", "invalid_payload"})
        if code == "auth_failed":
            await client.wait_closed()
    await client.close()


# -- /live-price frames ------------------------------------------------------------------------

REPLY_TYPES = {"subscribe": "subscribed", "unsubscribe": "unsubscribed", "history": "history", "ping": "pong"}
ACTIONS = st.one_of(st.sampled_from(list(REPLY_TYPES)), SCALARS, JSON)
REQUEST_OBJECTS = st.builds(
    lambda action, rest, ident: {**rest, "action": action, **({} if ident is None else {"id": ident})},
    ACTIONS.filter(lambda a: a != "authenticate"),
    st.one_of(
        st.dictionaries(KEYS.filter(lambda k: k not in ("action", "id")), JSON, max_size=5),
        SHAPED.filter(lambda s: isinstance(s, dict)),
    ),
    st.one_of(st.none(), st.integers(-(2**70), 2**70), st.text(max_size=10), st.booleans()),
)
FRAMES = st.one_of(
    st.tuples(st.just("text"), st.text(max_size=200)),
    st.tuples(st.just("text"), TEXT),
    st.tuples(st.just("json"), JSON.filter(lambda v: not isinstance(v, dict))),
    st.tuples(st.just("json"), REQUEST_OBJECTS),
    st.tuples(st.just("binary"), st.binary(max_size=300)),
)


def echoed_id(message: Any) -> Any:
    """The id a reply must carry back, or None."""
    if not isinstance(message, dict):
        return None
    ident = message.get("id")
    if isinstance(ident, bool) or not isinstance(ident, (str, int)):
        return None
    if isinstance(ident, int) and not -(2**63) <= ident < 2**64:
        return None  # beyond 64 bits: not a number a JSON parser must keep exactly
    return ident


@settings(FUZZ, max_examples=150)
@given(frame=FRAMES)
async def test_live_price_frames(ws_fuzz: SetModel, frame: tuple[str, Any]) -> None:
    await ws_fuzz.ready()
    ws, before = ws_fuzz.client, list(ws_fuzz.symbols)
    kind, value = frame
    if kind == "binary":
        await ws.send_bytes(value)
        message = None
    elif kind == "text":
        await ws.send_text(value)
        try:
            message = json.loads(value)
        except ValueError:
            message = None
    else:
        await ws.send(value)
        message = value
    reply = await before_close(ws.next_reply(), ws.closed, f"a reply to the {kind} frame {value!r:.300}")
    check_no_trace(reply)
    action = message.get("action") if isinstance(message, dict) else None
    if reply.get("type") == "error":
        code = check_error(reply)
        if code in WHOLE_REQUEST_CODES:
            await ws_fuzz.assert_unchanged(f"{kind} frame answered {code}")
        else:
            await ws_fuzz.resync()
    else:
        assert isinstance(action, str) and reply.get("type") == REPLY_TYPES.get(action), (
            f"frame {value!r:.200} answered {reply!r:.300}"
        )
        assert reply.get("ok") is True, reply
        if action != "ping":
            check_ok_reply(action, reply, before)
        await ws_fuzz.resync()
    if "id" in reply:
        assert reply["id"] == echoed_id(message), f"reply carries a foreign id: {reply!r:.300}"
    assert ws.is_open, f"socket closed after {kind} frame {value!r:.200}"


INVALID_UTF8 = st.builds(
    lambda a, bad, b: a.encode() + bad + b.encode(),
    st.text(max_size=20),
    st.sampled_from([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"\xf8\x88\x80\x80\x80", b"\x80"]),
    st.text(max_size=20),
)


@settings(FUZZ, max_examples=12)
@given(data=INVALID_UTF8)
async def test_invalid_utf8_text_frame(target: ServerProcess, data: bytes) -> None:
    """RFC 6455 §8.1: invalid UTF-8 in a text frame fails the connection (1007)."""
    ws = await RawWebSocket.open(target.host, target.port, "/live-price", rcvbuf=None)
    try:
        await ws.send_frame(data, opcode=0x1)
        frames = await ws.drain(timeout=PROMPT)
        closes = [payload for opcode, payload in frames if opcode == 0x8]
        texts = [json.loads(payload) for opcode, payload in frames if opcode == 0x1]
        for message in texts:
            check_error(message, {"invalid_payload"})
        if closes:
            code = int.from_bytes(closes[0][:2], "big") if len(closes[0]) >= 2 else None
            assert code in (1007, 1002), f"closed with {code} for invalid UTF-8"
        else:
            assert texts, f"no answer and no close for an invalid UTF-8 text frame {data!r}"
    finally:
        ws.close()
    assert target.running, target.output_tail()


# -- a raw Socket.IO connection sending arbitrary packets ------------------------------------------

SIO_PACKETS = st.one_of(
    st.text(max_size=100),
    st.builds(lambda body: "42" + body, st.text(max_size=100)),
    st.builds(lambda ack, body: f"42{ack}" + json.dumps(body), st.integers(0, 2**40), JSON),
    st.builds(lambda body: "42" + json.dumps(body), JSON),
    st.builds(
        lambda prefix, body: prefix + json.dumps(body),
        st.sampled_from(["40", "41", "43", "44", "45", "46", "4", "3", "6"]),
        JSON,
    ),
)


async def socketio_connection(target: ServerProcess) -> RawWebSocket:
    """A raw Engine.IO WebSocket, connected to the Socket.IO namespace `/`."""
    ws, _ = await open_socketio(target.host, target.port)
    return ws


@settings(FUZZ, max_examples=30)
@given(packet=SIO_PACKETS)
async def test_raw_socketio_packets(target: ServerProcess, packet: str) -> None:
    """Packets no Socket.IO library would send: the server may drop the connection,
    but answers only with catalogue errors and stays up."""
    ws = await socketio_connection(target)
    try:
        await ws.send_text(packet)
        await ws.send_text('429999["unsubscribe","' + PROBE + '"]')
        # Until the probe is answered, the server closes, or (a namespace the packet
        # disconnected ignores the probe) a short while passes.
        texts: list[str] = []
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and not any(t.startswith("439999") for t in texts):
            alive = await ws.read_some(0.1)
            texts += [p.decode() for opcode, p in ws.frames() if opcode == 0x1]
            if not alive:
                break
        for text in texts:
            check_no_trace(text)
            if text.startswith("42"):
                event, *args = json.loads(text[2:])
                if event == "error":
                    check_error(args[0])
            elif text.startswith("43"):
                body = json.loads(text[text.index("[") :])[0]
                if body.get("ok") is False:
                    check_error(body.get("error"))
    finally:
        ws.close()
    assert target.running, target.output_tail()


# -- arbitrary messages on stock:* channels ------------------------------------------------------------

FUZZ_SYMBOL = "FUZZ"
NUMBERS = st.one_of(
    st.integers(-(2**60), 2**60),
    st.floats(),
    st.booleans(),
    st.none(),
    TEXT,
    st.just(2**53),
    st.just(2**64),
    st.lists(st.integers(), max_size=2),
)
NEAR_MISS = st.fixed_dictionaries(
    {},
    optional={
        "symbol": st.one_of(st.sampled_from(["FUZZ", "fuzz", "Fuzz", "AAPL", "FUZZ ", "", "FUZZ\x00"]), SCALARS),
        "price": NUMBERS,
        "timestamp": st.one_of(st.integers(-5, 2**53 + 5), NUMBERS),
        "seq": NUMBERS,
        "extra": JSON,
    },
)
MESSAGES = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda v: json.dumps(v).encode(), JSON),
    st.builds(lambda v: json.dumps(v, allow_nan=True).encode(), NEAR_MISS),
    st.builds(lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass"), NEAR_MISS),
)
CHANNELS = st.one_of(st.just(FUZZ_SYMBOL), st.just(FUZZ_SYMBOL.lower()), st.text(max_size=20), st.binary(max_size=20))


def contract_valid(raw: bytes, channel_symbol: str) -> tuple[bool, bool]:
    """(valid as an update, certainly so). Limits of representation the update format
    leaves open (numbers beyond 64 bits, timestamps beyond 2**53, lone surrogates,
    messages over 64 KiB) make a message "uncertain": it may or may not be delivered."""
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=lambda name: (_ for _ in ()).throw(ValueError(name)))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return False, True
    if not isinstance(data, dict):
        return False, True
    symbol, price, ts = data.get("symbol"), data.get("price"), data.get("timestamp")
    valid = (
        isinstance(symbol, str)
        and symbol.upper() == channel_symbol
        and bool(SYMBOL_RE.match(symbol.upper()))
        and not isinstance(price, bool)
        and isinstance(price, (int, float))
        and math.isfinite(price)
        and not isinstance(ts, bool)
        and isinstance(ts, int)
        and ts >= 0
    )
    try:
        orjson.loads(raw)
        representable = True
    except orjson.JSONDecodeError:
        representable = False
    certain = representable and len(raw) <= 65536 and (not valid or ts <= 2**53 - 1)
    return valid, certain


@pytest.fixture
async def feed(target: ServerProcess, redis_server: RedisServer, clients: ClientPool):
    redis = aioredis.from_url(redis_server.url, socket_timeout=5)
    watcher = await clients.ws(target.url)
    reply = await watcher.subscribe(FUZZ_SYMBOL)
    assert reply.get("type") == "subscribed", reply
    try:
        yield redis, watcher, itertools.count(1)
    finally:
        await redis.aclose()


@settings(FUZZ, max_examples=120)
@example(message=b'{"symbol":"FUZZ","price":NaN,"timestamp":1}', channel="FUZZ", store=False)
@example(message=b'{"symbol":"FUZZ","price":1,"timestamp":1}\xff', channel="FUZZ", store=True)
@example(message=b'{"symbol":"AAPL","price":1,"timestamp":1}', channel="FUZZ", store=False)
@example(message=b'{"symbol":"fuzz","price":1.5,"timestamp":1,"x":"\\u00e9"}', channel="FUZZ", store=False)
@given(message=MESSAGES, channel=CHANNELS, store=st.booleans())
async def test_published_messages(feed, message: bytes, channel: Any, store: bool) -> None:
    redis, watcher, markers = feed
    name = b"stock:" + (channel.encode("utf-8", "surrogatepass") if isinstance(channel, str) else channel)
    mark = len(watcher.updates)
    if store:
        await redis.set(name, message)
    await redis.publish(name, message)
    n = next(markers)
    marker = {"symbol": FUZZ_SYMBOL, "price": 1.0, "timestamp": now_ms(), "marker": n}
    await redis.publish(f"stock:{FUZZ_SYMBOL}", json.dumps(marker))
    await watcher.expect_update(lambda u: u.get("marker") == n, what=f"marker {n}")
    between = watcher.updates.since(mark)[:-1]
    delivered_to_watcher = name == f"stock:{FUZZ_SYMBOL}".encode()
    valid, certain = contract_valid(message, FUZZ_SYMBOL)
    for update in between:
        check_no_trace(update)
        assert delivered_to_watcher and valid, (
            f"invalid message {message!r:.300} on {name!r} delivered: {update!r:.300}"
        )
        assert canonical(update) == canonical(json.loads(message)), (
            f"not delivered as published: {message!r:.300} -> {update!r:.300}"
        )
    if delivered_to_watcher and valid and certain:
        assert len(between) == 1, f"valid update {message!r:.300} delivered {len(between)} times"
    else:
        assert len(between) <= 1, between


# -- edge cases, each on its own ----------------------------------------------------------------------

EDGE_REQUESTS = {
    "deep-symbols": ("subscribe", deep(300)),
    "symbols-with-number": ("subscribe", {"symbols": ["AAPL", 5]}),
    "since-2**70": ("subscribe", {"symbol": "AAPL", "since": 2**70}),
    "since-2**64": ("subscribe", {"symbol": "AAPL", "since": 2**64}),
    "sinceSeq-2**70": ("subscribe", {"symbol": "AAPL", "sinceSeq": 2**70}),
    "sinceSeq-2**64": ("subscribe", {"symbol": "AAPL", "sinceSeq": 2**64}),
    "since-float": ("subscribe", {"symbol": "AAPL", "since": 1.5}),
    "history-from-2**70": ("history", {"symbol": "AAPL", "from": 2**70}),
    "history-to-2**64": ("history", {"symbol": "AAPL", "to": 2**64}),
    "history-limit-2**70": ("history", {"symbol": "AAPL", "limit": 2**70}),
    "history-limit-0": ("history", {"symbol": "AAPL", "limit": 0}),
    "history-symbol-list": ("history", {"symbol": ["AAPL"]}),
}


@pytest.mark.parametrize("transport", ["socketio", "websocket"])
@pytest.mark.parametrize("name", sorted(EDGE_REQUESTS))
async def test_edge_requests(target: ServerProcess, clients: ClientPool, transport: str, name: str) -> None:
    event, payload = EDGE_REQUESTS[name]
    if transport == "socketio":
        client = await clients.sio(target.url, transports=["websocket"])
        reply = await client.call(event, payload)
        error = reply.get("error")
    else:
        client = await clients.ws(target.url)
        reply = await client.request(
            {"action": event, **payload} if isinstance(payload, dict) else {"action": event, "symbols": payload}
        )
        error = reply if reply.get("type") == "error" else None
    check_no_trace(reply)
    model = SetModel(client)
    if error is not None:
        check_error(error)
        await model.assert_unchanged(name)
    else:
        assert reply.get("ok") is True, reply
        check_ok_reply(event, reply, [])


async def test_ping_is_not_a_socketio_event(target: ServerProcess, clients: ClientPool) -> None:
    """Unknown events are ignored, or answered invalid_payload with an ack.
    `ping` is a /live-price action, not a Socket.IO event."""
    client = await clients.sio(target.url, transports=["websocket"])
    ack = await client.call("ping")
    assert isinstance(ack, dict) and ack.get("ok") is False, f"Socket.IO `ping` answered {ack!r}"
    check_error(ack.get("error"), {"invalid_payload"})


SERVER_FAILURE = re.compile(r" (ERROR|CRITICAL) stockstream[\w.]*:")
LOGGED_ERROR = re.compile(r" (ERROR|CRITICAL) [\w.]+:")
LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


def server_failures(lines: list[str]) -> list[str]:
    """Each ERROR or CRITICAL record of the server's own code (or an exception
    never retrieved) with the traceback lines logged under it."""
    found: list[str] = []
    taking = False
    for line in lines:
        if SERVER_FAILURE.search(line) or "never retrieved" in line:
            found.append(line)
            taking = True
        elif taking and not LOG_RECORD.match(line):
            found[-1] += "\n" + line
        else:
            taking = False
    return found


@pytest.mark.parametrize("action", [[], {}, ["subscribe"], {"subscribe": 1}])
async def test_live_price_action_that_is_not_a_string(target: ServerProcess, clients: ClientPool, action: Any) -> None:
    """Text that is not a JSON object with a known action answers
    invalid_payload and the socket stays open."""
    ws = await clients.ws(target.url)
    reply = await before_close(
        ws.request({"action": action, "symbol": "AAPL"}), ws.closed, f"an invalid_payload error for action {action!r}"
    )
    assert reply.get("type") == "error", reply
    check_error(reply, {"invalid_payload"})
    assert (await ws.request({"action": "ping"})).get("type") == "pong"


@pytest.mark.parametrize(
    "packet",
    [
        "",
        "F",
        "9",
        "7x",
        "\u0669",
        "44",
        '42["subscribe"',
        "4" + "\u00e9",
        '42[["subscribe"],"AAPL"]',
        '427[{"event":1}]',
    ],
)
async def test_malformed_socketio_packet_is_not_a_server_error(target: ServerProcess, packet: str) -> None:
    """A text frame no Engine.IO/Socket.IO client sends may cost the sender its
    connection, but not an ERROR with a stack trace in the server's log per frame
    (which any client could repeat at will)."""
    logged_before = len(target.output().splitlines())
    ws = await socketio_connection(target)
    try:
        await ws.send_frame(packet.encode(), opcode=0x1)
        await ws.drain(timeout=0.5)
    finally:
        ws.close()
    await asyncio.sleep(0.2)
    new = target.output().splitlines()[logged_before:]
    errors = [line for line in new if LOGGED_ERROR.search(line)]
    assert not errors, f"packet {packet!r} was logged as a server error:\n" + "\n".join(new[:12])
    assert target.running


@pytest.mark.parametrize("payload", ["9", "7x", "\u0669", '40\x1e9\x1e42["ping"]'])
async def test_unknown_engineio_packet_type_over_long_polling(target: ServerProcess, payload: str) -> None:
    """A long-polling POST holding a packet of a type Engine.IO does not have
    (a digit past 6) is refused without a stack trace in the server's log."""
    logged_before = len(target.output().splitlines())
    url = target.url + "/socket.io/?EIO=4&transport=polling"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PROMPT)) as http:
        async with http.get(url) as resp:
            sid = json.loads((await resp.text())[1:])["sid"]
        async with http.post(f"{url}&sid={sid}", data="40") as resp:
            assert resp.status == 200
        async with http.post(f"{url}&sid={sid}", data=payload.encode()) as resp:
            assert resp.status in (200, 400), resp.status
    await asyncio.sleep(0.2)
    new = target.output().splitlines()[logged_before:]
    errors = [line for line in new if LOGGED_ERROR.search(line)]
    assert not errors, f"packet {payload!r} was logged as a server error:\n" + "\n".join(new[:12])
    assert target.running


NESTED = "[" * 20000 + "]" * 20000


async def test_very_deep_nesting(target: ServerProcess, clients: ClientPool) -> None:
    """Nesting deeper than any JSON parser recurses: refused, and nobody else notices."""
    bystander = await clients.ws(target.url)
    assert_subscribe_ack(await bystander.subscribe(CONTROL), [CONTROL], [CONTROL])
    ws = await clients.ws(target.url)
    await ws.send_text('{"action": "subscribe", "symbols": ' + NESTED + "}")
    reply = await before_close(ws.next_reply(), ws.closed, "an error frame")
    check_error(reply, {"invalid_payload"})
    assert (await ws.request({"action": "ping"})).get("type") == "pong"

    raw = await socketio_connection(target)
    try:
        await raw.send_text('421["subscribe",' + NESTED + "]")
        frames = await raw.drain(timeout=1.0)
        for opcode, payload in frames:
            if opcode == 0x1:
                check_no_trace(payload.decode(errors="replace"))
                if payload.startswith(b"431"):
                    body = json.loads(payload[3:])[0]
                    assert body.get("ok") is False, body
                    check_error(body.get("error"), {"invalid_payload"})
    finally:
        raw.close()
    assert target.running, target.output_tail()
    assert_subscribe_ack(await bystander.subscribe(CONTROL), [CONTROL], [])


# -- long sequences of generated requests on one connection --------------------------------------

SEQUENCE_SYMBOLS = ["LSQA", "LSQB", "LSQC"]
# What JSON decoders accept but a reply cannot carry back (lone surrogates, integers
# beyond 64 bits), next to ordinary and wrong values.
SEQUENCE_VALUES: list[Any] = [
    "\ud800",
    "\udfff",
    "A\ud83d",
    2**64,
    -(2**70),
    1e308,
    None,
    True,
    0,
    -1,
    "",
    " ",
    "$$",
    "A" * 40,
    [],
    {},
    [[["LSQA"]]],
    {"symbols": "LSQA"},
]


def generated_request(rng: random.Random) -> tuple[str, Any]:
    """One request as (action, payload), shaped like real ones more often than not."""
    action = rng.choice(["subscribe", "subscribe", "unsubscribe", "history", "ping", "bogus\ud800"])
    symbols = [rng.choice(SEQUENCE_SYMBOLS + SEQUENCE_VALUES) for _ in range(rng.randint(0, 4))]
    shape = rng.randrange(5)
    if action == "history":
        payload: Any = {
            "symbol": rng.choice(SEQUENCE_SYMBOLS + SEQUENCE_VALUES),
            rng.choice(["from", "to", "limit"]): rng.choice(SEQUENCE_VALUES + [5, 10**12]),
        }
    elif shape == 0:
        payload = symbols
    elif shape == 1:
        payload = {"symbols": symbols, rng.choice(["since", "sinceSeq", "x"]): rng.choice(SEQUENCE_VALUES + [1])}
    elif shape == 2:
        payload = {"symbol": symbols[0] if symbols else rng.choice(SEQUENCE_VALUES)}
    elif shape == 3:
        payload = rng.choice(SEQUENCE_VALUES)
    else:
        payload = symbols[0] if symbols else "LSQA"
    return action, payload


SEQUENCE_LENGTH = 300


async def publish_control(redis_server: RedisServer, symbol: str, price: float) -> None:
    redis = aioredis.from_url(redis_server.url, socket_timeout=5)
    try:
        await redis.publish(f"stock:{symbol}", json.dumps({"symbol": symbol, "price": price, "timestamp": now_ms()}))
    finally:
        await redis.aclose()


@pytest.mark.parametrize("seed", [1, 2])
async def test_long_sequence_on_one_socketio_connection(
    target: ServerProcess, redis_server: RedisServer, clients: ClientPool, seed: int
) -> None:
    """Hundreds of generated requests on one python-socketio connection, odd text and
    numbers included: every one is answered with an ack (ok, or a catalogue error that
    is not `internal`), nothing is logged as a server failure, and the connection
    then still subscribes and streams."""
    logged_before = len(target.output().splitlines())
    rng = random.Random(seed)
    client = await clients.sio(target.url, transports=["websocket"])
    for i in range(SEQUENCE_LENGTH):
        action, payload = generated_request(rng)
        ack = await client.call(action, payload, timeout=PROMPT)
        assert isinstance(ack, dict), f"request {i} {action!r} {payload!r}: ack {ack!r}"
        if ack.get("ok") is not True:
            check_error(ack.get("error"))
        check_no_trace(ack)
        assert client.connected, f"disconnected after request {i} {action!r} {payload!r}"
    await client.call("unsubscribe", SEQUENCE_SYMBOLS)
    assert_subscribe_ack(await client.subscribe(CONTROL), [CONTROL], [CONTROL])
    mark = len(client.updates.items)
    await publish_control(redis_server, CONTROL, 42.0)
    await client.updates.wait_count(mark + 1)
    assert client.updates.items[-1]["price"] == 42.0
    await client.call("unsubscribe", [CONTROL])
    new = target.output().splitlines()[logged_before:]
    failures = server_failures(new)
    assert not failures, "the server failed on client input:\n" + "\n".join(failures[:20])


@pytest.mark.parametrize("seed", [3, 4])
async def test_long_sequence_on_one_live_price_connection(
    target: ServerProcess, redis_server: RedisServer, clients: ClientPool, seed: int
) -> None:
    """Hundreds of generated requests on one /live-price connection, each with an id:
    every one is answered (a reply or a catalogue error, never `internal`), the
    connection stays open, and it then still subscribes and streams."""
    logged_before = len(target.output().splitlines())
    rng = random.Random(seed)
    ws = await clients.ws(target.url)
    for i in range(SEQUENCE_LENGTH):
        action, payload = generated_request(rng)
        frame: dict[str, Any] = {"action": action, "id": i}
        if isinstance(payload, dict):
            frame.update(payload)
        else:
            frame["symbols" if isinstance(payload, list) else "symbol"] = payload
        reply = await ws.request(frame)
        assert reply.get("id") == i, f"request {i} {frame!r}: answered {reply!r}"
        if reply.get("type") == "error":
            check_error(reply)
        check_no_trace(reply)
        assert not ws.closed.is_set(), f"closed after request {i} {frame!r}"
    await ws.unsubscribe(*SEQUENCE_SYMBOLS)
    assert_subscribe_ack(await ws.subscribe(CONTROL), [CONTROL], [CONTROL])
    mark = len(ws.updates.items)
    await publish_control(redis_server, CONTROL, 43.0)
    await ws.updates.wait_count(mark + 1)
    assert ws.updates.items[-1]["price"] == 43.0
    await ws.unsubscribe(CONTROL)
    new = target.output().splitlines()[logged_before:]
    failures = server_failures(new)
    assert not failures, "the server failed on client input:\n" + "\n".join(failures[:20])


# -- after all of it --------------------------------------------------------------------------------


async def test_server_still_serves_after_all_of_it(
    target: ServerProcess, redis_server: RedisServer, clients: ClientPool
) -> None:
    assert target.running, target.output_tail()
    sio = await clients.sio(target.url)
    ws = await clients.ws(target.url)
    assert_subscribe_ack(await sio.subscribe(CONTROL), [CONTROL], [CONTROL])
    assert_subscribe_ack(await ws.subscribe(CONTROL), [CONTROL], [CONTROL])
    redis = aioredis.from_url(redis_server.url, socket_timeout=5)
    try:
        sent = []
        for i in range(20):
            update = {"symbol": CONTROL, "price": 10 + i, "timestamp": now_ms(), "n": i}
            await redis.publish(f"stock:{CONTROL}", json.dumps(update))
            sent.append(update)
    finally:
        await redis.aclose()
    for client in (sio, ws):
        await client.updates.wait_count(20)
        assert [canonical(u) for u in client.updates.items] == [canonical(u) for u in sent]
    # A new subscriber of the fuzzed symbol gets no snapshot, or a valid one.
    fresh = await clients.ws(target.url)
    reply = await fresh.subscribe(FUZZ_SYMBOL)
    assert reply.get("type") == "subscribed", reply
    await asyncio.sleep(0.3)
    for update in fresh.updates.items:
        valid, _ = contract_valid(json.dumps(update).encode(), FUZZ_SYMBOL)
        assert valid, f"invalid stored snapshot sent: {update!r:.300}"
    # Whatever was thrown at it, none of the server's own code failed on it.
    failures = server_failures(target.output().splitlines())
    assert not failures, "the server failed on client input:\n" + "\n".join(failures[:20])
