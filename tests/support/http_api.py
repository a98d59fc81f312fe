"""Requests and publishing shared by the tests of the HTTP API."""

from __future__ import annotations

from typing import Any

import aiohttp


async def get_json(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        async with http.get(url, headers=headers) as resp:
            return resp.status, await resp.json(content_type=None)


async def publish_series(stack: Any, symbol: str, count: int, base: int, step: int, **extra: Any) -> list[dict]:
    return [await stack.publish(symbol, 100 + i / 100, timestamp=base + i * step, **extra) for i in range(count)]
