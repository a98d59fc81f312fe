"""Live candles and other server events as a test sees them, on any client.

`Market(client)` wraps a Socket.IO client (python or node) or a /live-price
client, so one test body covers all three: requests answered by ack or
reply frame, and the server events (`candle`, `tokenExpiring`, `error`)
each client received, in arrival order.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from .waiting import PROMPT, JsParsed

Body = dict[str, Any]
CANDLE_KEYS = {"symbol", "interval", "start", "open", "high", "low", "close", "volume", "count", "closed"}


def as_api_candle(body: Body) -> Body:
    """A `candle` event's object as /api/candles writes the same candle
    (without `volume` when no update carried one)."""
    out = {k: body[k] for k in ("start", "open", "high", "low", "close", "count")}
    if body.get("volume") is not None:
        out["volume"] = body["volume"]
    return out


class Market:
    """One client's requests and server events, whatever its library."""

    _ids = itertools.count(1)

    def __init__(self, client: Any) -> None:
        self.client = client
        self.ws = client.kind == "ws"

    @property
    def kind(self) -> str:
        return self.client.kind

    # -- requests -------------------------------------------------------------------------
    async def request(self, action: str, payload: Any, timeout: float = PROMPT) -> Body:
        """The ack (Socket.IO) or the reply frame (/live-price, matched by its id)."""
        if not self.ws:
            return await self.client.call(action, payload, timeout=timeout)
        ident = next(self._ids)
        frame = (
            {**payload, "action": action, "id": ident}
            if isinstance(payload, dict)
            else {"action": action, "symbols": payload, "id": ident}
        )
        await self.client.send(frame)
        return await self.client.replies.wait_for(
            lambda items: next((r for r in items if r.get("id") == ident), None), timeout, f"the reply to {action}"
        )

    async def send(self, action: str, payload: Any) -> None:
        """A request without an ack (Socket.IO) or id (/live-price)."""
        if self.ws:
            await self.client.send({**payload, "action": action})
        else:
            await self.client.emit(action, payload)

    # -- events ---------------------------------------------------------------------------
    def marks(self) -> int:
        """A position in everything received: events() after it came later."""
        return len(self.client.replies.items) if self.ws else len(self.client.timeline.items)

    def events(self, name: str, since: int = 0) -> list[Body]:
        """Every `name` event's object, in arrival order (from position `since`)."""
        if self.ws:
            found = [
                {k: v for k, v in r.items() if k != "type"}
                for r in self.client.replies.items[since:]
                if r.get("type") == name and "id" not in r
            ]
        else:
            found = [e[2][0] for e in self.client.timeline.items[since:] if e[0] == "event" and e[1] == name and e[2]]
        return [JsParsed(b) for b in found] if self.kind == "node" else found

    def candles(self, since: int = 0) -> list[Body]:
        return self.events("candle", since)

    async def wait_events(
        self,
        name: str,
        check: Callable[[list[Body]], Any],
        timeout: float = PROMPT,
        what: str = "events",
        since: int = 0,
    ) -> Any:
        inbox = self.client.replies if self.ws else self.client.timeline
        return await inbox.wait_for(lambda _: check(self.events(name, since)), timeout, what)

    async def wait_candle(
        self, check: Callable[[Body], bool], timeout: float = PROMPT, what: str = "a matching candle", since: int = 0
    ) -> Body:
        found = await self.wait_events(
            "candle", lambda items: next(((c,) for c in items if check(c)), None), timeout, what, since
        )
        return found[0]

    def updates(self) -> list[Body]:
        return list(self.client.updates.items)

    async def closed(self, timeout: float = PROMPT) -> None:
        """Wait until the server closed the connection."""
        if self.ws:
            await self.client.wait_closed(timeout)
        else:
            await self.client.wait_disconnected(timeout)
