"""A raw client of the plain WebSocket endpoint (/live-price), on aiohttp."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any, Callable

import aiohttp

from .waiting import PROMPT, Inbox

Update = dict[str, Any]


class WsClient:
    """One /live-price connection.

    updates -- frames without "type" (price updates), in arrival order
    replies -- frames with "type" (subscribed, unsubscribed, pong, error, ...)
    frames  -- every frame as received: ("text", parsed-or-raw) / ("binary", bytes)
    last_reply_mark -- len(updates) when the latest reply arrived
    """

    kind = "ws"
    _ids = itertools.count(1)

    def __init__(self, url: str, *, name: str | None = None, headers: dict[str, str] | None = None) -> None:
        self.url = url
        self.name = name or f"ws-{next(self._ids)}"
        self.headers = headers or {}
        self.updates: Inbox[Update] = Inbox(f"{self.name} updates")
        self.replies: Inbox[dict[str, Any]] = Inbox(f"{self.name} replies")
        self.frames: Inbox[tuple] = Inbox(f"{self.name} frames")
        self.last_reply_mark = 0
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task | None = None

    async def connect(self, timeout: float = 10.0) -> "WsClient":
        self._session = aiohttp.ClientSession()
        try:
            self._ws = await self._session.ws_connect(
                self.url,
                headers=self.headers,
                timeout=aiohttp.ClientWSTimeout(ws_close=timeout),
                max_msg_size=0,
                autoping=True,
            )
        except BaseException:
            await self._session.close()
            raise
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for msg in self._ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    try:
                        data = json.loads(msg.data)
                    except ValueError:
                        self.frames.put(("text", msg.data))
                        continue
                    self.frames.put(("text", data))
                    if isinstance(data, dict) and "type" in data:
                        self.last_reply_mark = len(self.updates)
                        self.replies.put(data)
                    else:
                        self.updates.put(data)
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    self.frames.put(("binary", msg.data))
                elif msg.type == aiohttp.WSMsgType.ERROR:
                    self.frames.put(("error", repr(msg.data)))
        finally:
            self.close_code = self._ws.close_code
            self.closed.set()

    # -- sending -----------------------------------------------------------------------
    async def send(self, obj: Any) -> None:
        assert self._ws is not None
        await self._ws.send_str(json.dumps(obj))

    async def send_text(self, text: str) -> None:
        assert self._ws is not None
        await self._ws.send_str(text)

    async def send_bytes(self, data: bytes) -> None:
        assert self._ws is not None
        await self._ws.send_bytes(data)

    async def request(self, obj: Any, timeout: float = PROMPT) -> dict[str, Any]:
        """Send a frame and return the next reply (replies come in request order)."""
        await self.send(obj)
        return await self.next_reply(timeout=timeout)

    async def next_reply(self, pred: Callable[[dict], bool] | None = None, timeout: float = PROMPT) -> dict[str, Any]:
        return await self.replies.next(pred, timeout)

    async def subscribe(self, *symbols: str, timeout: float = PROMPT, **extra: Any) -> dict[str, Any]:
        """subscribe with "symbol" for one symbol, "symbols" for several."""
        body: dict[str, Any] = {"action": "subscribe"}
        body.update({"symbol": symbols[0]} if len(symbols) == 1 else {"symbols": list(symbols)})
        body.update(extra)
        return await self.request(body, timeout)

    async def unsubscribe(self, *symbols: str, timeout: float = PROMPT, **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"action": "unsubscribe"}
        body.update({"symbol": symbols[0]} if len(symbols) == 1 else {"symbols": list(symbols)})
        body.update(extra)
        return await self.request(body, timeout)

    # -- waiting -----------------------------------------------------------------------
    async def expect_update(
        self, pred: Callable[[Update], bool] | None = None, timeout: float = PROMPT, what: str | None = None
    ) -> Update:
        return await self.updates.next(pred, timeout, what)

    def updates_for(self, symbol: str, since: int = 0) -> list[Update]:
        return [
            u for u in self.updates.items[since:] if isinstance(u, dict) and str(u.get("symbol", "")).upper() == symbol
        ]

    async def wait_closed(self, timeout: float = PROMPT) -> int | None:
        try:
            await asyncio.wait_for(self.closed.wait(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(
                f"{self.name}: socket still open after {timeout}s; frames: {self.frames.items[-5:]!r}"
            ) from None
        return self.close_code

    @property
    def last_ack_mark(self) -> int:
        """Same meaning as SioClientBase.last_ack_mark: len(updates) at the latest reply."""
        return self.last_reply_mark

    @property
    def is_open(self) -> bool:
        return self._ws is not None and not self._ws.closed and not self.closed.is_set()

    async def close(self) -> None:
        try:
            if self._ws is not None and not self._ws.closed:
                await asyncio.wait_for(self._ws.close(), 5)
        except (asyncio.TimeoutError, Exception):
            pass
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except (asyncio.CancelledError, Exception):
                pass
        if self._session is not None:
            await self._session.close()

    def __repr__(self) -> str:
        return f"<WsClient {self.name} {self.url}>"
