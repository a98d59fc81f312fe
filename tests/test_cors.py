"""CORS on the HTTP API: `/api/*` answers browsers from the origins in CORS_ORIGINS
(preflight included), as the Socket.IO endpoint does, and no others."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.support.inprocess import inprocess_stack

ALLOWED = "https://dashboard.example"
ALSO_ALLOWED = "https://ops.example:8443"
STRANGER = "https://evil.example"
TIMEOUT = aiohttp.ClientTimeout(total=10)


async def request(method: str, url: str, origin: str, **headers: str) -> tuple[int, Any, Any]:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        async with http.request(method, url, headers={"Origin": origin, **headers}) as resp:
            return resp.status, resp.headers, await resp.read()


async def preflight(url: str, origin: str, method: str = "POST") -> tuple[int, Any, Any]:
    return await request(
        "OPTIONS",
        url,
        origin,
        **{"Access-Control-Request-Method": method, "Access-Control-Request-Headers": "authorization, content-type"},
    )


async def test_listed_origins_are_answered_and_others_are_not() -> None:
    """With CORS_ORIGINS listing two origins, a preflight from either is allowed
    (POST with Authorization and Content-Type), responses carry its origin, error
    responses too; a preflight from another origin is refused (403, typed error)
    and its responses carry no CORS header. The Socket.IO endpoint agrees."""
    async with inprocess_stack("memory", cors_origins=(ALLOWED, ALSO_ALLOWED)) as stack:
        await stack.publish("CRS", 12.5)
        for origin in (ALLOWED, ALSO_ALLOWED):
            status, headers, _ = await preflight(stack.url + "/api/publish", origin)
            assert status == 200
            assert headers["Access-Control-Allow-Origin"] == origin
            assert "POST" in headers["Access-Control-Allow-Methods"]
            allowed_headers = headers["Access-Control-Allow-Headers"].upper()
            assert "AUTHORIZATION" in allowed_headers and "CONTENT-TYPE" in allowed_headers

        status, headers, _ = await request("GET", stack.url + "/api/quotes/CRS", ALLOWED)
        assert status == 200 and headers["Access-Control-Allow-Origin"] == ALLOWED
        assert "Origin" in headers.get("Vary", ""), "caches must keep each origin's answer apart"
        status, headers, body = await request("GET", stack.url + "/api/quotes/NONE", ALLOWED)
        assert status == 404 and headers["Access-Control-Allow-Origin"] == ALLOWED, (
            "a browser must be able to read error bodies too"
        )
        status, headers, _ = await preflight(stack.url + "/api/history/CRS", ALLOWED, method="GET")
        assert status == 200 and headers["Access-Control-Allow-Origin"] == ALLOWED

        status, headers, _ = await request("GET", stack.url + "/openapi.json", ALLOWED)
        assert status == 200 and headers["Access-Control-Allow-Origin"] == ALLOWED, (
            "API documents can be read by tools on an allowed origin"
        )

        status, headers, body = await preflight(stack.url + "/api/publish", STRANGER)
        assert status == 403 and "Access-Control-Allow-Origin" not in headers
        assert b'"code":"forbidden"' in body
        status, headers, _ = await request("GET", stack.url + "/api/quotes/CRS", STRANGER)
        assert status == 200 and "Access-Control-Allow-Origin" not in headers

        # Socket.IO's long-polling handshake follows the same list.
        handshake = stack.url + "/socket.io/?EIO=4&transport=polling"
        status, headers, _ = await request("GET", handshake, ALLOWED)
        assert status == 200 and headers["Access-Control-Allow-Origin"] == ALLOWED
        status, headers, _ = await request("GET", handshake, STRANGER)
        assert "Access-Control-Allow-Origin" not in headers


async def test_any_origin_with_the_default_star() -> None:
    """With the default CORS_ORIGINS=*, any origin may call the API, preflight included."""
    async with inprocess_stack("memory") as stack:
        await stack.publish("STR", 1.5)
        for origin in (ALLOWED, STRANGER):
            status, headers, _ = await preflight(stack.url + "/api/publish", origin)
            assert status == 200 and headers["Access-Control-Allow-Origin"] in ("*", origin)
            status, headers, _ = await request("GET", stack.url + "/api/quotes?symbols=STR", origin)
            assert status == 200 and headers["Access-Control-Allow-Origin"] in ("*", origin)
        status, headers, _ = await request("GET", stack.url + "/api/candles/STR?interval=1m", STRANGER)
        assert status == 200 and headers["Access-Control-Allow-Origin"] in ("*", STRANGER)


async def test_preflights_need_no_token_when_auth_is_required() -> None:
    """Browsers send preflights without credentials: with REQUIRE_AUTH=true they are
    still answered, while the request itself needs its token."""
    async with inprocess_stack(
        "memory", cors_origins=(ALLOWED,), require_auth=True, jwt_secret="cors-tests-secret-of-at-least-32-bytes"
    ) as stack:
        status, headers, _ = await preflight(stack.url + "/api/quotes/AUT", ALLOWED, method="GET")
        assert status == 200 and headers["Access-Control-Allow-Origin"] == ALLOWED
        status, headers, body = await request("GET", stack.url + "/api/quotes/AUT", ALLOWED)
        assert status == 401 and b"auth_required" in body
        assert headers["Access-Control-Allow-Origin"] == ALLOWED
