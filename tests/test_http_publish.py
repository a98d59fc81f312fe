"""Publishing prices over HTTP (`POST /api/publish`): rights from the token's `publish`
claim, whole requests checked before anything is published, the same atomic step
(snapshot, seq, history, fan-out) as every other publisher, on both backends."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator

import aiohttp
import jwt
import pytest

from stockstream.auth import TokenVerifier, mint_token
from stockstream.app import node_of
from stockstream.broker import BackendUnavailable
from stockstream.cli import main as cli_main
from stockstream.config import Settings
from stockstream.errors import ClientError
from tests.support.inprocess import Stack, inprocess_stack
from tests.support.waiting import now_ms

SECRET = "publish-tests-secret-of-at-least-32-bytes"
SETTINGS = Settings.from_env({}, jwt_secret=SECRET)
TIMEOUT = aiohttp.ClientTimeout(total=15)


def token(publish: Any = True, **claims: Any) -> str:
    return mint_token(SETTINGS, "feed", publish=publish, **claims)


@contextlib.asynccontextmanager
async def publishing_stack(backend: str, request: pytest.FixtureRequest, **overrides: Any) -> AsyncIterator[Stack]:
    redis_url = request.getfixturevalue("redis_url") if backend == "redis" else None
    async with inprocess_stack(backend, redis_url, jwt_secret=SECRET, **overrides) as stack:
        yield stack


@pytest.fixture
async def pstack(backend: str, request: pytest.FixtureRequest) -> AsyncIterator[Stack]:
    async with publishing_stack(backend, request) as stack:
        yield stack


async def post(
    url: str, body: Any = None, *, bearer: str | None = None, data: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    headers = dict(headers or {})
    if bearer is not None:
        headers["Authorization"] = f"Bearer {bearer}"
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        kwargs: dict[str, Any] = {"data": data} if data is not None else {"json": body}
        async with http.post(url + "/api/publish", headers=headers, **kwargs) as resp:
            return resp.status, await resp.json(content_type=None)


async def stored(stack: Stack, symbol: str) -> list[dict]:
    return [u.to_dict() for u in await stack.broker.history(symbol, limit=5000)]


# -- publishing reaches subscribers ----------------------------------------------------------


async def test_posted_updates_reach_socketio_and_live_price_subscribers(pstack: Stack, clients: Any) -> None:
    """What is POSTed is stored with its seq, answered as stored, and delivered to
    subscribers of both transports exactly as published, extra fields included."""
    sio = await clients.sio(pstack.url)
    assert (await sio.subscribe(["HTP", "HTQ"]))["ok"] is True
    ws = await clients.ws(pstack.url)
    await ws.request({"action": "subscribe", "symbols": ["HTP"]})

    before = now_ms()
    status, body = await post(pstack.url, {"symbol": "htp", "price": 10.5}, bearer=token())
    assert status == 200, body
    (first,) = body["published"]
    assert first["symbol"] == "HTP" and first["price"] == 10.5 and first["seq"] == 1
    assert before <= first["timestamp"] <= now_ms(), "a missing timestamp is the server's clock"

    batch = [
        {"symbol": "HTP", "price": 11, "timestamp": 1_700_000_000_000, "volume": 300},
        {"symbol": "HTQ", "price": 2.25, "venue": "X"},
    ]
    status, body = await post(pstack.url, batch, bearer=token(["HTP", "htq"]))
    assert status == 200, body
    assert body["published"][0] == {
        "symbol": "HTP",
        "price": 11,
        "timestamp": 1_700_000_000_000,
        "volume": 300,
        "seq": 2,
    }
    assert body["published"][1]["venue"] == "X" and body["published"][1]["seq"] == 1
    published = [first, *body["published"]]

    await sio.updates.wait_count(3)
    assert sio.updates.items == published
    await ws.updates.wait_count(2)
    assert ws.updates.items == [u for u in published if u["symbol"] == "HTP"]
    assert await stored(pstack, "HTP") == published[:2]
    assert (await pstack.broker.snapshots(["HTQ"]))["HTQ"].to_dict() == published[2]


async def test_posted_on_one_instance_reaches_subscribers_of_another(redis_url: str, clients: Any) -> None:
    """Two instances on one Redis: what is POSTed to one reaches a subscriber of the
    other, once and in order."""
    async with (
        inprocess_stack("redis", redis_url, jwt_secret=SECRET) as first,
        inprocess_stack("redis", redis_url, jwt_secret=SECRET) as second,
    ):
        sio = await clients.sio(second.url)
        await sio.subscribe("XIN")
        batch = [{"symbol": "XIN", "price": 100 + i} for i in range(20)]
        status, body = await post(first.url, batch, bearer=token(["XIN"]))
        assert status == 200
        await sio.updates.wait_count(20)
        assert sio.updates.items == body["published"]
        assert [u["seq"] for u in sio.updates.items] == list(range(1, 21))


# -- refusals: nothing of a refused request is published ---------------------------------------


async def test_publishing_needs_a_valid_token_with_the_publish_right(pstack: Stack) -> None:
    """401 auth_required without a token, 401 auth_failed for a bad one, 403 forbidden
    for a symbol the token may not publish; a refused request publishes nothing."""
    update = {"symbol": "REF", "price": 1.0}
    cases = [
        (None, 401, "auth_required"),
        ("not-a-jwt", 401, "auth_failed"),
        (
            mint_token(Settings.from_env({}, jwt_secret="another-secret-of-at-least-32-bytes!"), "x", publish=True),
            401,
            "auth_failed",
        ),
        (mint_token(SETTINGS, "x", publish=True, ttl=-10), 401, "auth_failed"),
        (mint_token(SETTINGS, "reader"), 403, "forbidden"),  # no publish claim
        (token(["OTHER"]), 403, "forbidden"),
    ]
    for bearer, status, code in cases:
        got, body = await post(pstack.url, update, bearer=bearer)
        assert (got, body["error"]["code"]) == (status, code), (bearer, got, body)
        assert isinstance(body["error"]["message"], str) and body["error"]["message"]

    # One symbol it may not publish refuses the whole list, listed in `symbols`.
    got, body = await post(pstack.url, [update, {"symbol": "NOPE", "price": 2.0}], bearer=token(["REF"]))
    assert got == 403 and body["error"]["code"] == "forbidden" and body["error"]["symbols"] == ["NOPE"]
    assert (await pstack.broker.snapshots(["REF", "NOPE"])) == {"REF": None, "NOPE": None}

    # A `*` claim and a list claim allow what they name.
    assert (await post(pstack.url, update, bearer=token("*")))[0] == 200
    assert (await post(pstack.url, update, bearer=token(["ref"])))[0] == 200
    assert [u["seq"] for u in await stored(pstack, "REF")] == [1, 2]


@pytest.mark.parametrize("backend", ["memory"])
async def test_invalid_bodies_are_refused_whole(pstack: Stack) -> None:
    """Every update is checked before any is published: a bad body or one bad update
    in a list answers 400 with a typed error and publishes nothing."""
    bearer = token()
    good = {"symbol": "INV", "price": 1.0}
    cases: list[tuple[Any, str]] = [
        ([], "invalid_payload"),
        ("AAPL", "invalid_payload"),
        ([good, 5], "invalid_payload"),
        ([good, {"symbol": "INV"}], "invalid_payload"),
        ([good, {"symbol": "INV", "price": True}], "invalid_payload"),
        ([good, {"symbol": "INV", "price": "1.5"}], "invalid_payload"),
        ([good, {"symbol": "INV", "price": 1, "timestamp": -1}], "invalid_payload"),
        ([good, {"symbol": "INV", "price": 1, "timestamp": 1.5}], "invalid_payload"),
        ([good, {"symbol": "INV", "price": 1, "timestamp": None}], "invalid_payload"),
        ([good, {"symbol": 7, "price": 1}], "invalid_payload"),
        ([good, {"symbol": "BAD SYMBOL", "price": 1}], "invalid_symbol"),
    ]
    for body, code in cases:
        got, answer = await post(pstack.url, body, bearer=bearer)
        assert (got, answer["error"]["code"]) == (400, code), (body, got, answer)
    for raw in (b"{not json", b"[1.0, NaN]", b'{"symbol": "INV", "price": Infinity}', b"", b"null", b"\xff\xfe"):
        got, answer = await post(pstack.url, data=raw, bearer=bearer)
        assert (got, answer["error"]["code"]) == (400, "invalid_payload"), (raw, got, answer)
    assert (await pstack.broker.snapshots(["INV"]))["INV"] is None, "a refused request published something"


@pytest.mark.parametrize("backend", ["memory"])
async def test_bodies_over_the_size_limit_are_refused_unread(backend: str, request: pytest.FixtureRequest) -> None:
    """A body over MAX_MESSAGE_BYTES answers 413 invalid_payload: at once from its
    Content-Length, or as soon as a chunked body passes the limit."""
    async with publishing_stack(backend, request, max_message_bytes=1024) as stack:
        one = b'{"symbol": "BIG", "price": 1.0},'
        big = b"[" + one * 200 + b'{"symbol": "BIG", "price": 1.0}]'
        got, answer = await post(stack.url, data=big, bearer=token())
        assert got == 413 and answer["error"]["code"] == "invalid_payload" and answer["error"]["limit"] == 1024

        async def chunks() -> AsyncIterator[bytes]:
            yield b"["
            for _ in range(200):
                yield one
            yield b'{"symbol": "BIG", "price": 1.0}]'

        got, answer = await post(stack.url, data=chunks(), bearer=token())
        assert got == 413 and answer["error"]["code"] == "invalid_payload"

        fits = b"[" + one * 10 + b'{"symbol": "BIG", "price": 1.0}]'
        got, answer = await post(stack.url, data=fits, bearer=token())
        assert got == 200 and [u["seq"] for u in answer["published"]] == list(range(1, 12))


@pytest.mark.parametrize("backend", ["redis"])
async def test_publishing_while_redis_is_down_answers_unavailable(pstack: Stack, redis_server: Any) -> None:
    """With the backend unreachable the answer is 503 unavailable, not a crash."""
    redis_server.kill()
    got, answer = await post(pstack.url, {"symbol": "OUT", "price": 1.0}, bearer=token())
    assert got == 503 and answer["error"]["code"] == "unavailable", answer


@pytest.mark.parametrize("backend", ["memory"])
async def test_a_backend_failure_mid_list_says_what_was_published(pstack: Stack) -> None:
    """When the backend fails after some updates of a list went out, the 503 error
    lists exactly those in `published`, so the publisher can resend the rest."""
    broker = node_of(pstack.app).publisher.broker
    real_publish = broker.publish
    calls = 0

    async def failing_on_the_third(update: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise BackendUnavailable("backend lost")
        return await real_publish(update, **kwargs)

    broker.publish = failing_on_the_third
    batch = [{"symbol": "MID", "price": float(i)} for i in range(5)]
    got, answer = await post(pstack.url, batch, bearer=token())
    assert got == 503 and answer["error"]["code"] == "unavailable", answer
    assert [u["price"] for u in answer["error"]["published"]] == [0.0, 1.0]
    assert answer["error"]["published"] == await stored(pstack, "MID")
    calls = 10
    got, answer = await post(pstack.url, batch[:1], bearer=token())
    assert got == 200 and answer["published"][0]["seq"] == 3


# -- concurrency ------------------------------------------------------------------------------


async def test_concurrent_posts_keep_seq_gap_free_and_ordered_per_symbol(pstack: Stack, clients: Any) -> None:
    """Many concurrent POSTs for a few symbols: each symbol's seq runs 1..N without
    gaps or repeats, in history and at a subscriber, and each request's updates
    keep their order."""
    symbols = ["CCA", "CCB", "CCC"]
    sio = await clients.sio(pstack.url)
    await sio.subscribe(symbols)
    bearer = token()
    requests, per_request = 40, 6

    async def one(n: int, http: aiohttp.ClientSession) -> list[dict]:
        body = [{"symbol": symbols[(n + i) % 3], "price": n + i / 10, "req": n, "i": i} for i in range(per_request)]
        async with http.post(
            pstack.url + "/api/publish", json=body, headers={"Authorization": f"Bearer {bearer}"}
        ) as resp:
            assert resp.status == 200, await resp.text()
            return (await resp.json())["published"]

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        answers = await asyncio.gather(*(one(n, http) for n in range(requests)))

    total = requests * per_request
    for answer in answers:
        for symbol in symbols:
            seqs = [u["seq"] for u in answer if u["symbol"] == symbol]
            assert seqs == sorted(seqs), "one request's updates are published in its order"
    await sio.updates.wait_count(total, timeout=30)
    counts = 0
    for symbol in symbols:
        history = await stored(pstack, symbol)
        assert [u["seq"] for u in history] == list(range(1, len(history) + 1))
        assert [u["seq"] for u in sio.updates_for(symbol)] == list(range(1, len(history) + 1))
        counts += len(history)
    assert counts == total


# -- minting publisher tokens ------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, claim",
    [
        (["--publish"], True),
        (["--publish", "*"], True),
        (["--publish", "aapl,MSFT"], ["AAPL", "MSFT"]),
        ([], None),
    ],
)
def test_token_command_mints_the_publish_claim(
    argv: list[str], claim: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    """`python -m stockstream token --publish [SYMBOLS]` mints a token whose publish
    claim the server accepts: alone or * for all symbols, else the listed ones."""
    monkeypatch.setenv("JWT_SECRET", SECRET)
    assert cli_main(["--env-file", str(tmp_path / "none.env"), "token", "--sub", "feed", *argv]) == 0
    minted = capsys.readouterr().out.strip()
    claims = jwt.decode(minted, SECRET, algorithms=["HS256"])
    assert claims.get("publish") == claim
    identity = TokenVerifier(SETTINGS).verify(minted)
    assert identity.may_publish("AAPL") is (claim is not None)
    assert identity.may_publish("TSLA") is (claim is True)


def test_token_command_refuses_a_bad_publish_list(
    capsys: pytest.CaptureFixture[str], tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad symbol in --publish is a usage error (exit 2)."""
    monkeypatch.setenv("JWT_SECRET", SECRET)
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["--env-file", str(tmp_path / "none.env"), "token", "--sub", "x", "--publish", "bad symbol"])
    assert exit_info.value.code == 2
    assert "--publish" in capsys.readouterr().err


@pytest.mark.parametrize(
    "claim, allowed, refused",
    [
        (True, ["AAPL", "TSLA"], []),
        ("*", ["AAPL", "TSLA"], []),
        (["aapl", "*"], ["AAPL", "TSLA"], []),
        (["aapl", "brk.b"], ["AAPL", "BRK.B"], ["TSLA"]),
        (False, [], ["AAPL"]),
        ([], [], ["AAPL"]),
    ],
)
def test_publish_claim_grants_what_it_names(claim: Any, allowed: list[str], refused: list[str]) -> None:
    """The publish claim: true or "*" (alone or in a list) for every symbol, a list for
    those symbols (case-insensitive), false or an empty list for none."""
    identity = TokenVerifier(SETTINGS).verify(jwt.encode({"sub": "feed", "publish": claim}, SECRET))
    assert [s for s in allowed + refused if identity.may_publish(s)] == allowed


@pytest.mark.parametrize("claim", [5, "AAPL", {"AAPL": True}, ["bad symbol"], [7], None])
def test_a_malformed_publish_claim_fails_authentication(claim: Any) -> None:
    """A publish claim that is not true/false, "*" or a list of symbols makes the token invalid."""
    forged = jwt.encode({"sub": "feed", "publish": claim}, SECRET)
    with pytest.raises(ClientError) as refused:
        TokenVerifier(SETTINGS).verify(forged)
    assert refused.value.code.value == "auth_failed" and "publish claim" in refused.value.message
