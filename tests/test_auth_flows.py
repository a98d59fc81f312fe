"""JWT authentication end to end, on Socket.IO and /live-price.

Every way a client can present a token (the `authenticate` event as a string or
{token}, with or without an ack; the Socket.IO handshake `auth: {token}`;
`/live-price?token=`; the `authenticate` frame) is tried with a valid token and
with each kind of bad one, against servers verifying HS256 (JWT_SECRET) and
RS256 / ES256 (JWT_PUBLIC_KEY_FILE). Then entitlements, REQUIRE_AUTH, the
expiry of a live connection and the ordering of authenticate + subscribe.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator

import jwt
import pytest
import socketio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.support.acks import before_close, sio_ack
from tests.support.clients import ClientPool
from tests.support.inprocess import Stack, inprocess_stack
from tests.support.protocol import assert_error_ack, assert_error_object, assert_subscribe_ack
from tests.support.servers import ServerFactory, ServerProcess
from tests.support.waiting import PROMPT

SECRET = "auth-flows-secret-that-is-longer-than-32-bytes"
OTHER_SECRET = "some-other-secret-that-is-longer-than-32-bytes"
AUDIENCE = "stockstream-tests"
USER = "alice"


# -- signing keys ---------------------------------------------------------------------


@dataclass(frozen=True)
class Signer:
    """One key type: how the server is configured and how tokens are signed."""

    algorithm: str
    key: Any
    other_key: Any  # an unrelated key of the same type: a "wrong signature"
    public_pem: bytes = b""  # empty for HS256

    def sign(self, claims: dict[str, Any], *, other: bool = False) -> str:
        return jwt.encode(claims, self.other_key if other else self.key, algorithm=self.algorithm)

    def server_env(self, key_dir: Path) -> dict[str, str]:
        """Environment of a server verifying this key type."""
        if self.algorithm == "HS256":
            return {"JWT_SECRET": SECRET}
        path = key_dir / f"{self.algorithm.lower()}-public.pem"
        path.write_bytes(self.public_pem)
        return {"JWT_PUBLIC_KEY_FILE": str(path)}

    def settings(self, key_dir: Path) -> dict[str, Any]:
        """Settings overrides of an in-process server verifying this key type."""
        return {k.lower(): v for k, v in self.server_env(key_dir).items()}


def _public_pem(private: Any) -> bytes:
    return private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture(scope="module")
def signers() -> dict[str, Signer]:
    rsa_key, other_rsa = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2))
    ec_key, other_ec = (ec.generate_private_key(ec.SECP256R1()) for _ in range(2))
    return {
        "HS256": Signer("HS256", SECRET, OTHER_SECRET),
        "RS256": Signer("RS256", rsa_key, other_rsa, _public_pem(rsa_key)),
        "ES256": Signer("ES256", ec_key, other_ec, _public_pem(ec_key)),
    }


def claims(sub: str = USER, ttl: float = 3600, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    body: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + ttl, "aud": AUDIENCE}
    body.update(extra)
    return {k: v for k, v in body.items() if v is not None}


# The token cases: name -> token made with a Signer. Only "valid" is accepted.
TOKENS: dict[str, Callable[[Signer], str]] = {
    "valid": lambda s: s.sign(claims()),
    "wrong-signature": lambda s: s.sign(claims(), other=True),
    "expired": lambda s: s.sign(claims(exp=int(time.time()) - 120, iat=int(time.time()) - 300)),
    "not-yet-valid": lambda s: s.sign(claims(nbf=int(time.time()) + 3600)),
    "wrong-audience": lambda s: s.sign(claims(aud="some-other-service")),
    "garbage": lambda s: "eyJhbGciOiJIUzI1NiJ9.not-base64!.garbage",
}


def check_auth_failed(error: Any, case: str) -> None:
    assert_error_object(error, "auth_failed")
    if case == "expired":
        assert "expire" in error["message"].lower(), f"message does not say the token expired: {error!r}"


# -- servers --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def auth_servers(
    tmp_path_factory: pytest.TempPathFactory, signers: dict[str, Signer]
) -> Iterator[dict[str, ServerProcess]]:
    """One server process per key type, REQUIRE_AUTH=true and a required audience,
    configured from the environment the way an operator does it."""
    workdir = tmp_path_factory.mktemp("auth-servers")
    factory = ServerFactory(workdir)
    try:
        running = {}
        for name, signer in signers.items():
            env = {"REQUIRE_AUTH": "true", "JWT_AUDIENCE": AUDIENCE, **signer.server_env(workdir)}
            running[name] = factory.launch(env)
        for server in running.values():
            server.wait_ready_sync(30)
        yield running
    finally:
        factory.close_all()


@contextlib.asynccontextmanager
async def auth_stack(tmp_path: Path, clients: ClientPool, signer: Signer, **overrides: Any) -> AsyncIterator[Stack]:
    """An in-process server (embedded backend) verifying `signer`'s key type; the
    test's clients leave before it stops, so its shutdown does not wait for them."""
    overrides.setdefault("jwt_audience", AUDIENCE)
    async with inprocess_stack("memory", None, **signer.settings(tmp_path), **overrides) as stack:
        try:
            yield stack
        finally:
            await clients.close_all()


async def expect_subscribed(client: Any, symbol: str = "AAPL") -> None:
    """A subscribe that only an authenticated client gets (REQUIRE_AUTH=true)."""
    reply = await client.subscribe(symbol)
    if client.kind == "ws":
        assert reply.get("type") == "subscribed", reply
    assert_subscribe_ack(reply, [symbol], [symbol])


async def expect_sio_refused(client: Any, case: str) -> None:
    """After a refused authenticate, the server disconnects the Socket.IO client."""
    try:
        await client.wait_disconnected(PROMPT)
    except asyncio.TimeoutError:
        raise AssertionError(
            f"{case} token: client still connected {PROMPT}s after auth_failed; "
            f"timeline: {client.timeline.items[-6:]!r}"
        ) from None


async def expect_ws_refused(client: Any, case: str) -> None:
    """An `error` auth_failed frame, then the server closes the socket."""
    reply = await before_close(client.next_reply(), client.closed, f"an auth_failed error frame ({case} token)")
    assert reply.get("type") == "error", reply
    check_auth_failed(reply, case)
    await client.wait_closed()
    # Nothing but the error before the close.
    assert [f for f in client.frames.items if f[0] == "text"] == [("text", reply)], client.frames.items


# -- every path x every token x every key type -----------------------------------------

KEY_TYPES = ["HS256", "RS256", "ES256"]
SIO_EVENT_FORMS = {
    "string": lambda token: token,
    "object": lambda token: {"token": token},
}


@pytest.fixture(params=KEY_TYPES)
def key_type(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(params=list(TOKENS))
def case(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def auth_server(auth_servers: dict[str, Any], key_type: str) -> Any:
    """The server verifying tokens of `key_type`."""
    return auth_servers[key_type]


@pytest.fixture
def token(signers: dict[str, Signer], key_type: str, case: str) -> str:
    """A `case` token signed with the `key_type` key."""
    return TOKENS[case](signers[key_type])


@pytest.mark.parametrize("form", list(SIO_EVENT_FORMS))
async def test_authenticate_event_with_ack(auth_server, token, clients, case, form):
    client = await clients.sio(auth_server.url)
    ack = await before_close(
        sio_ack(client, "authenticate", SIO_EVENT_FORMS[form](token)),
        client.disconnected,
        f"the authenticate ack ({case} token)",
    )
    if case == "valid":
        assert isinstance(ack, dict) and ack.get("ok") is True and ack.get("user") == USER, ack
        expires = jwt.decode(token, options={"verify_signature": False})["exp"] * 1000
        assert ack.get("expiresAt") == expires, ack
        event = await client.timeline.next(lambda e: e[:2] == ("event", "authenticated"))
        assert event[2] == [{"user": USER, "expiresAt": expires}], event
        await expect_subscribed(client)
        assert client.connected
    else:
        assert_error_ack(ack, "auth_failed")
        check_auth_failed(ack["error"], case)
        await expect_sio_refused(client, case)


@pytest.mark.parametrize("form", list(SIO_EVENT_FORMS))
async def test_authenticate_event_without_ack(auth_server, token, clients, case, form):
    client = await clients.sio(auth_server.url)
    await client.emit("authenticate", SIO_EVENT_FORMS[form](token))
    if case == "valid":
        event = await client.timeline.next(lambda e: e[:2] == ("event", "authenticated"))
        assert len(event[2]) == 1 and event[2][0].get("user") == USER, event
        assert isinstance(event[2][0].get("expiresAt"), int), event
        await expect_subscribed(client)
        assert client.errors.items == []
    else:
        error = await before_close(
            client.expect_error(), client.disconnected, f"an auth_failed error event ({case} token)"
        )
        check_auth_failed(error, case)
        await expect_sio_refused(client, case)


async def test_socketio_handshake_token(auth_server, token, clients, case):
    client = await clients.sio(auth_server.url, auth={"token": token}, connect=False)
    if case == "valid":
        await client.connect()
        await expect_subscribed(client)
        return
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect()
    check_python_refusal(client.connect_error, case)
    assert not client.connected


def check_python_refusal(data: Any, case: str) -> None:
    """python-socketio hands its connect_error handler the refusal packet's
    whole payload: the error's code and message, and the error object as
    `data` (what socket.io-client exposes as `err.data`)."""
    assert isinstance(data, dict), f"connect_error data is not an object: {data!r}"
    check_auth_failed(data, case)
    assert set(data) == {"code", "message", "data"}, data
    assert data["data"] == {"code": data["code"], "message": data["message"]}, data


@pytest.mark.parametrize("case", ["wrong-signature", "expired"])
async def test_refused_handshake_carries_the_error_for_both_client_libraries(
    auth_servers, signers, clients, sio_kind, case
):
    """A handshake token that fails refuses the connection with the auth_failed
    error object: socket.io-client's `connect_error` error has it as `err.data`
    (and a human `err.message`); python-socketio's handler gets a dict with
    `code` auth_failed."""
    token = TOKENS[case](signers["HS256"])
    client = await clients.sio(auth_servers["HS256"].url, kind=sio_kind, auth={"token": token}, connect=False)
    with pytest.raises((socketio.exceptions.ConnectionError, ConnectionError)):
        await client.connect()
    assert not client.connected
    if sio_kind == "python":
        check_python_refusal(client.connect_error, case)
        return
    line = await client.node.lines.next(lambda l: l.get("kind") == "connect_error")
    assert isinstance(line.get("data"), dict), f"socket.io-client's err.data is not the error object: {line!r}"
    check_auth_failed(line["data"], case)
    assert set(line["data"]) == {"code", "message"}, line
    assert line["message"] == line["data"]["message"], line


async def test_live_price_query_token(auth_server, token, clients, case):
    client = await clients.ws(f"{auth_server.ws_url}?token={token}")
    if case == "valid":
        await expect_subscribed(client)
    else:
        await expect_ws_refused(client, case)


async def test_live_price_authenticate_frame(auth_server, token, clients, case):
    client = await clients.ws(auth_server.ws_url)
    await client.send({"action": "authenticate", "token": token})
    if case == "valid":
        reply = await client.next_reply()
        expires = jwt.decode(token, options={"verify_signature": False})["exp"] * 1000
        assert reply.get("type") == "authenticated" and reply.get("ok") is True, reply
        assert reply.get("user") == USER and reply.get("expiresAt") == expires, reply
        await expect_subscribed(client)
    else:
        await expect_ws_refused(client, case)


@pytest.mark.parametrize("key_type", ["RS256", "ES256"])
async def test_hs256_token_refused_by_public_key_server(auth_servers, signers, clients, key_type):
    """A token signed with a shared secret is not accepted where only a public key is configured."""
    token = TOKENS["valid"](signers["HS256"])
    client = await clients.ws(auth_servers[key_type].ws_url)
    await client.send({"action": "authenticate", "token": token})
    await expect_ws_refused(client, "wrong-algorithm")


# -- entitlements -----------------------------------------------------------------------


@pytest.fixture
def hs256(signers: dict[str, Signer]) -> Signer:
    return signers["HS256"]


@pytest.mark.parametrize("transport", ["socketio", "websocket"])
async def test_forbidden_symbols_fail_alone(tmp_path, hs256, clients, transport):
    token = hs256.sign(claims(symbols=["AAPL", "MSFT"]))
    async with auth_stack(tmp_path, clients, hs256) as stack:
        await stack.publish("TSLA", 250.0)
        request = ["AAPL", "TSLA", "msft", "$BAD", "IBM"]
        if transport == "socketio":
            client = await clients.sio(stack.url, auth={"token": token})
            ack = await client.subscribe(request)
        else:
            client = await clients.ws(f"{stack.ws_url}?token={token}")
            ack = await client.subscribe(*request)
            assert ack.get("type") == "subscribed", ack
        assert ack.get("ok") is True, ack
        assert ack.get("symbols") == ["AAPL", "MSFT"] and ack.get("added") == ["AAPL", "MSFT"], ack
        failed = sorted((f["symbol"], f["code"]) for f in ack.get("failed", []))
        assert failed == [("$BAD", "invalid_symbol"), ("IBM", "forbidden_symbol"), ("TSLA", "forbidden_symbol")], ack
        mark = len(client.updates)
        await stack.publish("TSLA", 251.0)
        await stack.publish("IBM", 140.0)
        last = await stack.publish("AAPL", 190.0)
        await client.expect_update(lambda u: u.get("price") == last["price"] and u["symbol"] == "AAPL")
        assert {u["symbol"] for u in client.updates.since(mark)} == {"AAPL"}, client.updates.since(mark)
        # A whole forbidden request changes nothing either.
        ack = await client.subscribe("TSLA")
        assert ack.get("ok") is True and ack.get("added") == [] and ack.get("symbols") == ["AAPL", "MSFT"], ack


async def test_forbidden_symbols_without_ack_send_error_event(tmp_path, hs256, clients):
    token = hs256.sign(claims(symbols=["AAPL"]))
    async with auth_stack(tmp_path, clients, hs256) as stack:
        client = await clients.sio(stack.url, auth={"token": token})
        await client.emit("subscribe", ["AAPL", "TSLA", "IBM"])
        error = await client.expect_error()
        assert_error_object(error, "forbidden_symbol")
        assert sorted(error.get("symbols", [])) == ["IBM", "TSLA"], error
        assert_subscribe_ack(await client.subscribe("AAPL"), ["AAPL"], [])


@pytest.mark.parametrize("claim", ["*", ["*"], ["AAPL", "*"]])
async def test_star_claim_allows_every_symbol(tmp_path, hs256, clients, claim):
    token = hs256.sign(claims(symbols=claim))
    async with auth_stack(tmp_path, clients, hs256) as stack:
        client = await clients.sio(stack.url)
        assert (await client.call("authenticate", token)).get("ok") is True
        assert_subscribe_ack(
            await client.subscribe(["TSLA", "^GSPC", "EUR/USD"]),
            ["TSLA", "^GSPC", "EUR/USD"],
            ["TSLA", "^GSPC", "EUR/USD"],
        )


async def test_history_of_forbidden_symbol_is_refused(tmp_path, hs256, clients):
    token = hs256.sign(claims(symbols=["AAPL"]))
    async with auth_stack(tmp_path, clients, hs256) as stack:
        await stack.publish("TSLA", 250.0)
        client = await clients.sio(stack.url, auth={"token": token})
        assert_error_ack(await client.call("history", {"symbol": "TSLA"}), "forbidden_symbol")
        ack = await client.call("history", {"symbol": "AAPL"})
        assert ack.get("ok") is True, ack


# -- REQUIRE_AUTH -------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["socketio", "websocket"])
async def test_subscribe_before_authenticating_is_auth_required(tmp_path, hs256, clients, transport):
    async with auth_stack(tmp_path, clients, hs256, require_auth=True) as stack:
        await stack.publish("AAPL", 189.0)
        token = hs256.sign(claims())
        if transport == "socketio":
            client = await clients.sio(stack.url)
            assert_error_ack(await client.subscribe(["AAPL", "MSFT"]), "auth_required")
            assert (await client.call("authenticate", token)).get("ok") is True
            ack = await client.subscribe("IBM")
        else:
            client = await clients.ws(stack.url)
            reply = await client.subscribe("AAPL", "MSFT")
            assert reply.get("type") == "error", reply
            assert_error_object(reply, "auth_required")
            reply = await client.request({"action": "authenticate", "token": token})
            assert reply.get("type") == "authenticated", reply
            ack = await client.subscribe("IBM")
        # The refused request left the set empty: only IBM is in it now.
        assert_subscribe_ack(ack, ["IBM"], ["IBM"])
        await stack.publish("AAPL", 190.0)
        last = await stack.publish("IBM", 140.0)
        await client.expect_update(lambda u: u.get("symbol") == "IBM" and u["price"] == last["price"])
        assert client.updates_for("AAPL") == [], client.updates.items


async def test_auth_required_without_ack_sends_error_event(tmp_path, hs256, clients):
    async with auth_stack(tmp_path, clients, hs256, require_auth=True) as stack:
        client = await clients.sio(stack.url)
        await client.emit("subscribe", "AAPL")
        assert_error_object(await client.expect_error(), "auth_required")
        assert client.connected


@pytest.mark.parametrize("transport", ["polling", "websocket", "live-price"])
async def test_authenticate_then_subscribe_back_to_back(tmp_path, hs256, clients, transport):
    """Requests take effect in the order sent: a subscribe sent right behind an
    authenticate, before its answer, is already authenticated."""
    async with auth_stack(tmp_path, clients, hs256, require_auth=True) as stack:
        for attempt in range(8):
            token = hs256.sign(claims(sub=f"user-{attempt}"))
            symbol = f"SYM{attempt}"
            if transport == "live-price":
                client = await clients.ws(stack.url)
                await client.send({"action": "authenticate", "token": token})
                await client.send({"action": "subscribe", "symbol": symbol})
                first, second = await client.next_reply(), await client.next_reply()
                assert first.get("type") == "authenticated", (attempt, first, second)
                assert second.get("type") == "subscribed", (attempt, first, second)
                assert_subscribe_ack(second, [symbol], [symbol])
            else:
                client = await clients.sio(stack.url, transports=[transport])
                loop = asyncio.get_running_loop()
                answers = [loop.create_future(), loop.create_future()]

                def answer(index: int) -> Callable[..., None]:
                    return lambda *args: answers[index].done() or answers[index].set_result(args)

                await client.sio.emit("authenticate", token, callback=answer(0))
                await client.sio.emit("subscribe", symbol, callback=answer(1))
                (auth_ack,), (sub_ack,) = await asyncio.wait_for(asyncio.gather(*answers), PROMPT)
                assert auth_ack.get("ok") is True, (attempt, auth_ack, sub_ack)
                assert_subscribe_ack(sub_ack, [symbol], [symbol])
            await client.close()


# -- expiry of a live connection ------------------------------------------------------------

TTL = 3  # seconds; the token's exp is a whole second, so it expires in 2-3 s


async def publish_steadily(stack: Stack, symbol: str, stop: asyncio.Event) -> int:
    n = 0
    while not stop.is_set():
        n += 1
        await stack.publish(symbol, 100 + n / 100, n=n)
        try:
            await asyncio.wait_for(stop.wait(), 0.1)
        except asyncio.TimeoutError:
            pass
    return n


@contextlib.asynccontextmanager
async def steady_publishing(stack: Stack, symbol: str) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(publish_steadily(stack, symbol, stop))
    try:
        yield
    finally:
        stop.set()
        await task


async def open_authenticated(stack: Stack, clients: ClientPool, token: str, transport: str, how: str) -> Any:
    """A client authenticated with `token` (in the handshake/URL or with a request),
    subscribed to AAPL."""
    if transport == "socketio":
        if how == "connect":
            client = await clients.sio(stack.url, auth={"token": token})
        else:
            client = await clients.sio(stack.url)
            assert (await client.call("authenticate", token)).get("ok") is True
    else:
        if how == "connect":
            client = await clients.ws(f"{stack.ws_url}?token={token}")
        else:
            client = await clients.ws(stack.url)
            reply = await client.request({"action": "authenticate", "token": token})
            assert reply.get("type") == "authenticated", reply
    await expect_subscribed(client)
    return client


@pytest.mark.slow
@pytest.mark.parametrize("how", ["connect", "request"])
@pytest.mark.parametrize("transport", ["socketio", "websocket"])
async def test_connection_closed_when_token_expires(tmp_path, hs256, clients, transport, how):
    # No tokenExpiring frame here: test_token_renewal.py checks it.
    async with auth_stack(tmp_path, clients, hs256, require_auth=True, token_expiry_warning=0) as stack:
        token = hs256.sign(claims(ttl=TTL))
        exp = jwt.decode(token, options={"verify_signature": False})["exp"]
        async with steady_publishing(stack, "AAPL"):
            client = await open_authenticated(stack, clients, token, transport, how)
            await client.expect_update(what="updates while the token is valid")
            timeout = exp - time.time() + PROMPT
            if transport == "socketio":
                error = await client.expect_error(timeout=timeout)
                told_at = time.time()
                check_auth_failed(error, "expired")
                await client.wait_disconnected()
            else:
                error = await client.next_reply(timeout=timeout)
                told_at = time.time()
                assert error.get("type") == "error", error
                check_auth_failed(error, "expired")
                await client.wait_closed()
            assert told_at >= exp - 0.5, f"told {exp - told_at:.2f}s before the token expired"
            count = len(client.updates)
            await asyncio.sleep(0.5)
            assert len(client.updates) == count, "updates after the connection was closed"


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["socketio", "websocket"])
async def test_fresh_token_before_expiry_keeps_streaming(tmp_path, hs256, clients, transport):
    # No tokenExpiring frame here: test_token_renewal.py checks it.
    async with auth_stack(tmp_path, clients, hs256, require_auth=True, token_expiry_warning=0) as stack:
        token = hs256.sign(claims(ttl=TTL))
        exp = jwt.decode(token, options={"verify_signature": False})["exp"]
        async with steady_publishing(stack, "AAPL"):
            client = await open_authenticated(stack, clients, token, transport, "request")
            await client.expect_update()
            fresh = hs256.sign(claims(ttl=3600))
            if transport == "socketio":
                ack = await client.call("authenticate", {"token": fresh})
                assert ack.get("ok") is True and ack.get("user") == USER, ack
            else:
                reply = await client.request({"action": "authenticate", "token": fresh})
                assert reply.get("type") == "authenticated" and reply.get("ok") is True, reply
            # Well past the first token's expiry the client still streams.
            await asyncio.sleep(max(0.0, exp - time.time()) + 1.5)
            mark = len(client.updates)
            await client.updates.wait_for(lambda items: len(items) >= mark + 3, what="3 more updates")
            if transport == "socketio":
                assert client.connected and client.errors.items == [], client.timeline.items[-5:]
            else:
                assert client.is_open and client.replies.items[-1].get("type") == "authenticated", client.replies.items
            # And the subscription set is intact.
            assert_subscribe_ack(await client.subscribe("AAPL"), ["AAPL"], [])
