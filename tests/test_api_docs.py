"""The API descriptions: `/openapi.json` is valid OpenAPI 3.1 and `/asyncapi.json` valid
AsyncAPI 3.0 (checked with real validators), they describe every route and every error
code of the catalogue, their enumerations come from the code, and what the server
really answers, on the embedded backend, one Redis and a Redis Cluster, matches their
schemas."""

from __future__ import annotations

import copy
import json
from typing import Any, AsyncIterator

import aiohttp
import jsonschema
import openapi_spec_validator
import pytest
import referencing
import referencing.jsonschema

from stockstream.app import api_vocabulary, create_app
from stockstream.auth import mint_token
from stockstream.broker import broker_kinds
from stockstream.errors import ErrorCode
from stockstream.config import MAX_HEARTBEAT_SECONDS
from stockstream.session import Session
from stockstream.symbols import SYMBOL_PATTERN
from stockstream.transports import socketio_transport, websocket
from tests.support.inprocess import Stack, inprocess_stack, settings_for, url_for_backend
from tests.support.node import JS_DIR
from tests.support.waiting import PROMPT, now_ms, period_with_room

SECRET = "api-docs-tests-secret-of-at-least-32-bytes"
TIMEOUT = aiohttp.ClientTimeout(total=15)


# The backend each kind of stack reports as readiness's `backend`.
BACKEND_KINDS = {"memory": "memory", "redis": "redis", "cluster": "redis-cluster"}


@pytest.fixture
async def docs_stack() -> AsyncIterator[Stack]:
    async with inprocess_stack("memory", jwt_secret=SECRET, max_message_bytes=2048) as stack:
        yield stack


@pytest.fixture(params=list(BACKEND_KINDS))
async def any_stack(request: pytest.FixtureRequest) -> AsyncIterator[Stack]:
    """A stack on each backend: embedded, one Redis, a Redis Cluster."""
    async with inprocess_stack(
        request.param, url_for_backend(request.param, request), jwt_secret=SECRET, max_message_bytes=2048
    ) as stack:
        yield stack


def asyncapi_errors(document: dict[str, Any]) -> list[str]:
    """What the official AsyncAPI 3.0.0 JSON Schema finds wrong with `document`."""
    meta = asyncapi_meta_schema()
    validator = jsonschema.validators.validator_for(meta)(meta)
    return [f"{list(e.absolute_path)}: {e.message[:200]}" for e in validator.iter_errors(document)]


async def fetch(method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        async with http.request(method, url, **kwargs) as resp:
            return resp.status, await resp.json(content_type=None)


def asyncapi_meta_schema() -> dict[str, Any]:
    """The official AsyncAPI 3.0.0 JSON Schema, from the npm package @asyncapi/specs
    (installed with tests/js by the node_harness fixture)."""
    return json.loads((JS_DIR / "node_modules/@asyncapi/specs/schemas/3.0.0.json").read_text())


class Schemas:
    """Validates instances against a schema inside one of the documents, by JSON pointer."""

    def __init__(self, document: dict[str, Any], dialect: Any, validator: Any) -> None:
        resource = dialect.create_resource(document)
        self._registry = referencing.Registry().with_resource("urn:doc", resource)
        self._validator = validator

    def check(self, pointer: str, instance: Any) -> None:
        schema = {"$ref": f"urn:doc#{pointer}"}
        self._validator(schema, registry=self._registry).validate(instance)

    def rejects(self, pointer: str, instance: Any) -> bool:
        try:
            self.check(pointer, instance)
        except jsonschema.ValidationError:
            return True
        return False


def openapi_schemas(document: dict[str, Any]) -> Schemas:
    return Schemas(document, referencing.jsonschema.DRAFT202012, jsonschema.Draft202012Validator)


def asyncapi_schemas(document: dict[str, Any]) -> Schemas:
    return Schemas(document, referencing.jsonschema.DRAFT7, jsonschema.Draft7Validator)


# -- the documents themselves ---------------------------------------------------------------


async def test_openapi_document_is_valid_openapi_3_1(docs_stack: Stack) -> None:
    """GET /openapi.json is an OpenAPI 3.1 document the reference validator accepts."""
    status, document = await fetch("GET", docs_stack.url + "/openapi.json")
    assert status == 200 and document["openapi"] == "3.1.0"
    openapi_spec_validator.validate(document)
    broken = copy.deepcopy(document)
    broken["paths"]["/api/publish"]["post"]["responses"]["200"] = {"content": {}}  # no description
    with pytest.raises(jsonschema.ValidationError):
        openapi_spec_validator.validate(broken)


async def test_asyncapi_document_is_valid_asyncapi_3_0(docs_stack: Stack, node_harness: None) -> None:
    """GET /asyncapi.json validates against the official AsyncAPI 3.0.0 JSON Schema and
    names the host the client asked for."""
    status, document = await fetch("GET", docs_stack.url + "/asyncapi.json")
    assert status == 200 and document["asyncapi"] == "3.0.0"
    assert asyncapi_errors(document) == []
    assert document["servers"]["livePrice"]["host"] == f"127.0.0.1:{docs_stack.port}"
    broken = copy.deepcopy(document)
    broken["operations"]["socketioSubscribe"]["action"] = "publish"
    assert asyncapi_errors(broken), "the meta-schema must catch an invalid document"


def test_every_route_is_described() -> None:
    """Every HTTP route the application serves has its path and method in the OpenAPI document."""
    from stockstream.http.docs import openapi_document

    document = openapi_document(api_vocabulary())
    app = create_app(settings_for(None, 0))
    missing = []
    for route in app.router.routes():
        path = route.resource.canonical
        if route.method in ("HEAD", "OPTIONS"):
            continue
        described = document["paths"].get(path, {})
        if route.method == "*" and described or route.method.lower() in described:
            continue
        missing.append(f"{route.method} {path}")
    assert missing == []


def test_error_codes_come_from_the_catalogue() -> None:
    """Both documents list exactly the catalogue's codes: HTTP all of them, the
    streaming transports all but the HTTP-only ones."""
    from stockstream.http.docs import asyncapi_document, openapi_document

    every = [c.value for c in ErrorCode]
    assert openapi_document(api_vocabulary())["components"]["schemas"]["Error"]["properties"]["code"]["enum"] == every
    assert "forbidden" in every and "not_found" in every
    streaming = asyncapi_document(api_vocabulary())["components"]["schemas"]["StreamError"]["allOf"][1]["properties"][
        "code"
    ]["enum"]
    assert streaming == [c for c in every if c not in ("forbidden", "not_found")]


def test_enumerations_come_from_the_code() -> None:
    """The readiness backend lists every broker's kind (redis-cluster included), the
    symbol patterns are symbols.py's, the heartbeat bounds heartbeat.py's, and every
    request a session answers has its messages and operations on both channels."""
    from stockstream.http.docs import asyncapi_document, openapi_document

    schemas = openapi_document(api_vocabulary())["components"]["schemas"]
    assert schemas["Readiness"]["properties"]["backend"]["enum"] == broker_kinds() == list(BACKEND_KINDS.values())
    assert schemas["Symbol"]["pattern"] == f"^{SYMBOL_PATTERN.pattern}$"
    document = asyncapi_document(api_vocabulary())
    heartbeat = document["components"]["schemas"]["SubscribeFrame"]["allOf"][0]["properties"]["heartbeat"]
    assert (heartbeat["minimum"], heartbeat["maximum"]) == (0, MAX_HEARTBEAT_SECONDS)
    socketio = document["channels"]["socketio"]["messages"]
    live_price = document["channels"]["livePrice"]["messages"]
    assert socketio_transport.EVENTS and Session.actions
    for action in Session.actions:
        name = action[0].upper() + action[1:]
        assert action in live_price and f"livePrice{name}" in document["operations"]
        reply = websocket.REPLY_TYPES[action]
        assert (reply if reply != action else f"{action}Reply") in live_price
    for event in socketio_transport.EVENTS:
        name = event[0].upper() + event[1:]
        assert {event, event + "Ack"} <= set(socketio) and f"socketio{name}" in document["operations"]
    assert "ping" not in socketio, "Socket.IO has no ping event (Engine.IO pings)"
    assert "heartbeat" in socketio and "heartbeat" in live_price


async def test_a_new_request_appears_in_the_documents_by_itself(
    monkeypatch: pytest.MonkeyPatch, node_harness: None
) -> None:
    """A request added to the session's list (and so to the Socket.IO events and the
    /live-price reply types) is listed in the AsyncAPI document's messages and
    operations without touching the document builder, and the document stays valid AsyncAPI 3.0."""
    from stockstream.http.docs import asyncapi_document

    monkeypatch.setattr(Session, "actions", Session.actions | {"frobnicate"})
    monkeypatch.setattr(socketio_transport, "EVENTS", socketio_transport.EVENTS | {"frobnicate"})
    monkeypatch.setitem(websocket.REPLY_TYPES, "frobnicate", "frobnicated")
    document = asyncapi_document(api_vocabulary())
    assert {"frobnicate", "frobnicateAck"} <= set(document["channels"]["socketio"]["messages"])
    assert {"frobnicate", "frobnicated"} <= set(document["channels"]["livePrice"]["messages"])
    assert {"socketioFrobnicate", "livePriceFrobnicate"} <= set(document["operations"])
    assert asyncapi_errors(document) == []
    schemas = asyncapi_schemas(document)
    schemas.check("/channels/livePrice/messages/frobnicate/payload", {"action": "frobnicate", "id": 3})
    schemas.check("/channels/livePrice/messages/frobnicated/payload", {"type": "frobnicated", "ok": True})
    assert schemas.rejects("/channels/livePrice/messages/frobnicate/payload", {"action": "subscribe"})


# -- real answers against the schemas --------------------------------------------------------


async def test_http_answers_match_the_openapi_schemas(any_stack: Stack) -> None:
    """Readiness, quotes, history, candles, publish, health and every kind of error body,
    as the server answers them on each backend, validate against the schema the document
    gives for that route and status; and the schemas do reject a wrong shape."""
    docs_stack = any_stack
    _, document = await fetch("GET", docs_stack.url + "/openapi.json")
    schemas = openapi_schemas(document)
    url = docs_stack.url
    publisher = mint_token(settings_for(None, 0, jwt_secret=SECRET), "feed", publish=["DOC", "DOD"])
    reader = mint_token(settings_for(None, 0, jwt_secret=SECRET), "reader", symbols=["DOC"])
    base = now_ms() - 120_000

    def pointer(path: str, method: str, status: int) -> str:
        escaped = path.replace("~", "~0").replace("/", "~1")
        responses = document["paths"][path][method]["responses"]
        assert str(status) in responses, f"{method.upper()} {path} answered {status}, which is not documented"
        return f"/paths/{escaped}/{method}/responses/{status}/content/application~1json/schema"

    async def check(method: str, template: str, concrete: str, expected: int, **kwargs: Any) -> Any:
        status, body = await fetch(method.upper(), url + concrete, **kwargs)
        assert status == expected, (concrete, status, body)
        schemas.check(pointer(template, method, status), body)
        return body

    auth = {"Authorization": f"Bearer {publisher}"}
    request = [{"symbol": "DOC", "price": 10 + i, "timestamp": base + i * 1000, "volume": 5} for i in range(3)]
    body = await check("post", "/api/publish", "/api/publish", 200, json=request, headers=auth)
    assert len(body["published"]) == 3
    schemas.check(
        pointer("/api/publish", "post", 200).replace(
            "/responses/200/content/application~1json/schema", "/requestBody/content/application~1json/schema"
        ),
        request,
    )
    await check("post", "/api/publish", "/api/publish", 200, json={"symbol": "dod", "price": 1.5}, headers=auth)
    await check("get", "/api/quotes/{symbol}", "/api/quotes/DOC", 200)
    await check("get", "/api/quotes", "/api/quotes?symbols=DOC,DOD,NOPE", 200)
    await check("get", "/api/history/{symbol}", "/api/history/DOC?limit=2", 200)
    candles = await check("get", "/api/candles/{symbol}", f"/api/candles/DOC?interval=1s&from={base}", 200)
    assert candles["candles"] and "volume" in candles["candles"][0]
    await check("get", "/healthz", "/healthz", 200)
    ready = await check("get", "/readyz", "/readyz", 200)
    assert ready["backend"] == BACKEND_KINDS[docs_stack.backend] == docs_stack.broker.kind

    await check("get", "/api/quotes/{symbol}", "/api/quotes/NOPE", 404)
    await check("get", "/api/quotes/{symbol}", "/api/quotes/bad%20symbol", 400)
    await check("get", "/api/history/{symbol}", "/api/history/DOC?limit=0", 400)
    await check("get", "/api/candles/{symbol}", "/api/candles/DOC?interval=7m", 400)
    await check("get", "/api/quotes/{symbol}", "/api/quotes/DOD", 403, headers={"Authorization": f"Bearer {reader}"})
    await check("get", "/api/quotes/{symbol}", "/api/quotes/DOC?token=junk", 401)
    await check("post", "/api/publish", "/api/publish", 401, json=request)
    await check("post", "/api/publish", "/api/publish", 401, json=request, headers={"Authorization": "Bearer junk"})
    await check("post", "/api/publish", "/api/publish", 403, json={"symbol": "ZZZ", "price": 1}, headers=auth)
    await check("post", "/api/publish", "/api/publish", 400, json={"symbol": "DOC", "price": "x"}, headers=auth)
    await check("post", "/api/publish", "/api/publish", 413, data=b"[" + b" " * 4096 + b"]", headers=auth)

    # The schemas are strict enough to catch a wrong answer.
    assert schemas.rejects(pointer("/api/quotes/{symbol}", "get", 200), {"symbol": "DOC", "price": "1"})
    assert schemas.rejects(pointer("/api/publish", "post", 403), {"error": {"code": "nope", "message": "x"}})
    assert schemas.rejects(pointer("/readyz", "get", 200), {"status": "ready", "backend": "etcd"})


async def test_socketio_and_live_price_messages_match_the_asyncapi_schemas(any_stack: Stack, clients: Any) -> None:
    """Socket.IO acks (subscribe, unsubscribe, history, authenticate, refusals), events
    (stockUpdate, authenticated, heartbeat, error) and every kind of /live-price frame
    (heartbeat included), as the server sends them on each backend, validate against
    the AsyncAPI document's message payloads; so do the requests the clients send."""
    docs_stack = any_stack
    _, document = await fetch("GET", docs_stack.url + "/asyncapi.json")
    schemas = asyncapi_schemas(document)

    def sio_message(name: str, instance: Any) -> None:
        schemas.check(f"/channels/socketio/messages/{name}/payload", instance)

    def frame(name: str, instance: Any) -> None:
        schemas.check(f"/channels/livePrice/messages/{name}/payload", instance)

    token = mint_token(settings_for(None, 0, jwt_secret=SECRET), "reader", symbols=["DOC", "DOE"])
    await docs_stack.publish("DOC", 20.5, volume=7)

    sio = await clients.sio(docs_stack.url)
    requests_and_acks = [
        ("authenticate", {"token": token}, "authenticateAck"),
        ("subscribe", {"symbols": ["doc", "DOE", "bad symbol", "DOF"]}, "subscribeAck"),
        ("subscribe", {"symbols": [5]}, "subscribeAck"),
        ("history", {"symbol": "DOC", "limit": 10}, "historyAck"),
        ("history", {"symbol": "DOC", "limit": 0}, "historyAck"),
        ("unsubscribe", ["DOE"], "unsubscribeAck"),
    ]
    acks = []
    for event, payload, ack_name in requests_and_acks:
        ack = await sio.call(event, payload)
        if ack["ok"]:
            sio_message(event, payload)
        else:
            assert schemas.rejects(f"/channels/socketio/messages/{event}/payload", payload)
        sio_message(ack_name, ack)
        acks.append(ack)
    assert [a["ok"] for a in acks] == [True, True, False, True, False, True]
    assert acks[1]["failed"] == [
        {"symbol": "bad symbol", "code": "invalid_symbol"},
        {"symbol": "DOF", "code": "forbidden_symbol"},
    ]
    await docs_stack.publish("DOC", 21.0)
    await sio.updates.wait_count(2)
    for update in sio.updates.items:
        sio_message("stockUpdate", update)
    authenticated = [
        args[0]
        for kind, *rest in sio.timeline.items
        if kind == "event"
        for name, args in [rest]
        if name == "authenticated"
    ]
    assert authenticated
    sio_message("authenticated", authenticated[0])
    await sio.emit("subscribe", {"symbols": "not a list"})
    sio_message("error", await sio.expect_error())
    asked = {"symbols": ["DOC"], "heartbeat": 1}
    sio_message("subscribe", asked)
    sio_message("subscribeAck", await sio.call("subscribe", asked))
    beat = await sio.timeline.next(lambda item: item[:2] == ("event", "heartbeat"), 1 + 2 * PROMPT)
    sio_message("heartbeat", beat[2][0])

    ws = await clients.ws(docs_stack.url)
    frames = [
        ({"action": "authenticate", "token": token, "id": 1}, "authenticate", "authenticated"),
        ({"action": "subscribe", "symbols": ["DOC", "DOF"], "id": "s"}, "subscribe", "subscribed"),
        ({"action": "history", "symbol": "DOC", "from": 0}, "history", "historyReply"),
        ({"action": "ping"}, "ping", "pong"),
        ({"action": "unsubscribe", "symbol": "DOC"}, "unsubscribe", "unsubscribed"),
        ({"action": "subscribe", "symbols": []}, None, "error"),
        ({"action": "launch"}, None, "error"),
    ]
    for request, request_name, reply_name in frames:
        if request_name is not None:
            frame(request_name, request)
        else:
            assert all(
                schemas.rejects(f"/channels/livePrice/messages/{name}/payload", request)
                for name in ("subscribe", "unsubscribe", "history", "authenticate", "ping")
            )
        reply = await ws.request(request)
        frame(reply_name, reply)
    assert ws.updates.items, "the subscribe's snapshot"
    for update in ws.updates.items:
        frame("update", update)
    for asked in (
        {"action": "subscribe", "heartbeat": 1, "id": "hb"},
        {"action": "subscribe", "symbol": "DOC", "heartbeat": 1},
    ):
        frame("subscribe", asked)
        await ws.send(asked)
        # The Socket.IO client's timer of the same period may tick for this connection at any moment.
        frame("subscribed", await ws.next_reply(lambda r: r.get("type") != "heartbeat"))
    heartbeat = await ws.next_reply(lambda r: r.get("type") == "heartbeat", 1 + 2 * PROMPT)
    frame("heartbeat", heartbeat)
    for bad in (0.5, -1, MAX_HEARTBEAT_SECONDS + 1, "5"):
        assert schemas.rejects(
            "/channels/livePrice/messages/subscribe/payload", {"action": "subscribe", "symbol": "DOC", "heartbeat": bad}
        )
        assert schemas.rejects("/channels/socketio/messages/subscribe/payload", {"symbol": "DOC", "heartbeat": bad})
    assert schemas.rejects("/channels/livePrice/messages/subscribe/payload", {"action": "subscribe"})

    # The schemas are strict enough to catch a wrong message.
    assert schemas.rejects("/channels/socketio/messages/subscribeAck/payload", {"ok": True, "symbols": []})
    assert schemas.rejects("/channels/livePrice/messages/pong/payload", {"type": "pong"})
    assert schemas.rejects("/channels/livePrice/messages/heartbeat/payload", {"type": "heartbeat", "seq": 0})
    assert schemas.rejects("/channels/socketio/messages/heartbeat/payload", {"seq": "1"})
    assert schemas.rejects("/channels/livePrice/messages/update/payload", {"symbol": "DOC", "price": 1})


async def test_live_candle_and_token_expiry_messages_match_the_asyncapi_schemas(
    docs_stack: Stack, clients: Any
) -> None:
    """subscribeCandles and unsubscribeCandles with their acks and reply frames,
    `candle` and `tokenExpiring` on both transports, and the forbidden_symbol
    error after a narrower token, validate against the AsyncAPI document."""
    _, document = await fetch("GET", docs_stack.url + "/asyncapi.json")
    schemas = asyncapi_schemas(document)
    settings = settings_for(None, 0, jwt_secret=SECRET)
    # 30 s left, under TOKEN_EXPIRY_WARNING (60 s): tokenExpiring comes at once.
    token = mint_token(settings, "reader", symbols=["DOC", "DOE"], ttl=30)
    # Both subscribes below start with the current 1m candle: this update's.
    await period_with_room(60_000, 20_000)
    await docs_stack.publish("DOC", 20.5, volume=7)

    def check(channel: str, name: str, instance: Any) -> None:
        schemas.check(f"/channels/{channel}/messages/{name}/payload", instance)

    sio = await clients.sio(docs_stack.url, auth={"token": token})
    subscribe = {"symbols": ["DOC", "DOE", "DOF"], "interval": "1m"}
    check("socketio", "subscribeCandles", subscribe)
    ack = await sio.call("subscribeCandles", subscribe)
    check("socketio", "subscribeCandlesAck", ack)
    assert ack["failed"] == [{"symbol": "DOF", "code": "forbidden_symbol"}], ack
    refused = await sio.call("subscribeCandles", {"symbols": ["DOC"]})
    check("socketio", "subscribeCandlesAck", refused)
    assert schemas.rejects("/channels/socketio/messages/subscribeCandles/payload", {"symbols": ["DOC"]})

    def both(items: list[Any]) -> dict[str, Any] | None:
        found = {e[1]: e[2][0] for e in items if e[0] == "event" and e[1] in ("candle", "tokenExpiring")}
        return found if len(found) == 2 else None

    named = await sio.timeline.wait_for(both, what="a candle and tokenExpiring")
    check("socketio", "candle", named["candle"])
    check("socketio", "tokenExpiring", named["tokenExpiring"])
    unsubscribe = {"symbol": "DOE", "interval": "1m"}
    check("socketio", "unsubscribeCandles", unsubscribe)
    check("socketio", "unsubscribeCandlesAck", await sio.call("unsubscribeCandles", unsubscribe))
    narrower = mint_token(settings, "reader", symbols=["DOE"], ttl=3600)
    assert (await sio.call("authenticate", narrower))["ok"] is True
    check("socketio", "error", await sio.expect_error(lambda e: e.get("code") == "forbidden_symbol"))

    ws = await clients.ws(f"{docs_stack.ws_url}?token={token}")
    frames = [
        ({"action": "subscribeCandles", "symbol": "DOC", "interval": "1m", "id": 1}, "candlesSubscribed"),
        ({"action": "unsubscribeCandles", "symbols": ["DOC"], "interval": "1m", "id": 2}, "candlesUnsubscribed"),
    ]
    for request, reply_name in frames:
        check("livePrice", request["action"], request)
        await ws.send(request)
        check(
            "livePrice",
            reply_name,
            await ws.replies.wait_for(lambda rs, i=request["id"]: next((r for r in rs if r.get("id") == i), None)),
        )
    for name in ("candle", "tokenExpiring"):
        check(
            "livePrice",
            name,
            await ws.replies.wait_for(lambda rs, n=name: next((r for r in rs if r.get("type") == n), None)),
        )
    assert schemas.rejects("/channels/livePrice/messages/candle/payload", {"type": "candle", "symbol": "DOC"})


async def test_throttled_and_wildcard_messages_match_the_asyncapi_schemas(docs_stack: Stack, clients: Any) -> None:
    """A throttled `*` subscribe, its ack and the `stockUpdates` event and frame, as
    sent on both transports, validate against the AsyncAPI document; a throttle out of
    range does not."""
    _, document = await fetch("GET", docs_stack.url + "/asyncapi.json")
    schemas = asyncapi_schemas(document)
    await docs_stack.publish("WILD", 1.0)
    request = {"symbols": ["*", "DOC"], "throttle": 100}
    schemas.check("/channels/socketio/messages/subscribe/payload", request)
    assert schemas.rejects("/channels/socketio/messages/subscribe/payload", {"symbol": "DOC", "throttle": 50})
    sio = await clients.sio(docs_stack.url)
    ack = await sio.call("subscribe", request)
    assert ack["ok"] is True and ack["throttle"] == 100 and "*" in ack["symbols"], ack
    schemas.check("/channels/socketio/messages/subscribeAck/payload", ack)
    event = await sio.timeline.next(lambda e: e[0] == "event" and e[1] == "stockUpdates")
    schemas.check("/channels/socketio/messages/stockUpdates/payload", event[2][0])

    ws = await clients.ws(docs_stack.url)
    subscribe = {"action": "subscribe", "symbol": "*", "throttle": 100}
    schemas.check("/channels/livePrice/messages/subscribe/payload", subscribe)
    assert schemas.rejects("/channels/livePrice/messages/subscribe/payload", {**subscribe, "throttle": 60001})
    reply = await ws.request(subscribe)
    schemas.check("/channels/livePrice/messages/subscribed/payload", reply)
    batch = await ws.next_reply(lambda r: r.get("type") == "stockUpdates")
    schemas.check("/channels/livePrice/messages/stockUpdates/payload", batch)
    unsubscribed = await ws.request({"action": "unsubscribe", "symbol": "*"})
    schemas.check("/channels/livePrice/messages/unsubscribed/payload", unsubscribed)
