"""The HTTP API's errors: JSON bodies with fitting statuses, never a trace."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest

from tests.support.http_api import get_json


async def test_http_errors_are_json_with_a_fitting_status(stack: Any) -> None:
    await stack.publish("ERR", 1.25)

    async def expect(path: str, status: int, code: str) -> dict:
        got, body = await get_json(stack.url + path)
        assert got == status, (path, got, body)
        assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["message"], body
        return body["error"]

    await expect("/api/quotes/NOPE", 404, "not_found")
    await expect("/api/quotes/bad%20symbol", 400, "invalid_symbol")
    await expect("/api/quotes?symbols=", 400, "invalid_payload")
    await expect("/api/quotes?symbols=NOPE,NADA", 404, "not_found")
    await expect("/api/history/NOPE", 404, "not_found")
    await expect("/api/history/ERR?from=abc", 400, "invalid_payload")
    await expect("/api/history/ERR?from=-5", 400, "invalid_payload")
    await expect("/api/history/ERR?from=20&to=10", 400, "invalid_payload")
    await expect("/api/history/ERR?limit=0", 400, "invalid_payload")
    await expect("/api/candles/NOPE", 404, "not_found")
    await expect("/api/candles/ERR?interval=2m", 400, "invalid_payload")
    await expect("/api/candles/ERR?from=x", 400, "invalid_payload")
    await expect("/api/candles/ERR?from=9&to=1", 400, "invalid_payload")
    await expect("/api/no-such-route", 404, "not_found")

    status, body = await get_json(f"{stack.url}/api/quotes?symbols=err,%20NOPE,ERR")
    assert status == 200 and list(body["quotes"]) == ["ERR"] and body["missing"] == ["NOPE"]
    status, body = await get_json(f"{stack.url}/api/history/ERR?from=1&to=2")
    assert status == 200 and body["updates"] == []  # a known symbol, an empty range
    status, body = await get_json(f"{stack.url}/api/history/ERR?from={2**80}")
    assert status == 200 and body["updates"] == []


async def test_an_unexpected_failure_answers_json_500_without_a_trace(
    stack: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(symbols: list[str]) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(stack.broker, "snapshots", broken)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        async with http.get(f"{stack.url}/api/quotes/ANY") as resp:
            text = await resp.text()
            assert resp.status == 500 and resp.content_type == "application/json"
    assert "secret internals" not in text and "Traceback" not in text
    assert orjson.loads(text)["error"]["code"] == "internal"
