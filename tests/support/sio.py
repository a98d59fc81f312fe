"""Socket.IO test clients: python-socketio here, socket.io-client (Node) in node.py.

Both offer the same interface (SioClientBase) so a test can run with either.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any, Callable, Sequence

import socketio

from .waiting import PROMPT, Inbox

Update = dict[str, Any]


class AckTimeout(AssertionError):
    pass


class SioClientBase:
    """What a test sees of one Socket.IO connection.

    updates  -- every `stockUpdate` payload, in arrival order
    errors   -- every `error` event payload
    timeline -- everything in arrival order: ("connect",), ("event", name, args),
                ("ack", id, value), ("disconnect", reason)
    last_ack_mark -- len(updates) at the moment the latest ack arrived, so that
                updates.since(mark) is exactly what came after that ack
    """

    kind = "?"

    def __init__(self, url: str, name: str) -> None:
        self.url = url
        self.name = name
        self.updates: Inbox[Update] = Inbox(f"{name} stockUpdate")
        self.errors: Inbox[dict[str, Any]] = Inbox(f"{name} error events")
        self.timeline: Inbox[tuple] = Inbox(f"{name} timeline")
        self.last_ack_mark = 0
        self.disconnected = asyncio.Event()
        self.disconnect_reason: Any = None

    # -- recording (called in arrival order) ------------------------------------------
    def _on_event(self, event: str, args: list[Any]) -> None:
        self.timeline.put(("event", event, args))
        if event == "stockUpdate":
            # With connection state recovery on, an update's offset follows it as a string.
            recoverable = len(args) == 2 and isinstance(args[1], str)
            self.updates.put(args[0] if len(args) == 1 or recoverable else args)
        elif event == "error":
            self.errors.put(args[0] if len(args) == 1 else args)

    def _on_ack(self, ack_id: Any, args: Sequence[Any]) -> Any:
        value = args[0] if len(args) == 1 else (None if not args else list(args))
        self.last_ack_mark = len(self.updates)
        self.timeline.put(("ack", ack_id, value))
        return value

    def _on_disconnect(self, reason: Any) -> None:
        self.disconnect_reason = reason
        self.timeline.put(("disconnect", reason))
        self.disconnected.set()

    # -- requests ----------------------------------------------------------------------
    async def connect(self, timeout: float = 10.0) -> None:
        raise NotImplementedError

    async def call(self, event: str, *args: Any, timeout: float = PROMPT) -> Any:
        """Emit with an ack callback; return the ack's (first) argument."""
        raise NotImplementedError

    async def emit(self, event: str, *args: Any) -> None:
        """Emit without an ack callback."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    @property
    def transport(self) -> str | None:
        raise NotImplementedError

    async def subscribe(self, payload: Any, timeout: float = PROMPT) -> Any:
        return await self.call("subscribe", payload, timeout=timeout)

    async def unsubscribe(self, payload: Any, timeout: float = PROMPT) -> Any:
        return await self.call("unsubscribe", payload, timeout=timeout)

    # -- waiting -----------------------------------------------------------------------
    async def expect_update(
        self, pred: Callable[[Update], bool] | None = None, timeout: float = PROMPT, what: str | None = None
    ) -> Update:
        """The next unconsumed stockUpdate matching pred (others are skipped)."""
        return await self.updates.next(pred, timeout, what)

    async def expect_error(self, pred: Callable[[dict], bool] | None = None, timeout: float = PROMPT) -> dict[str, Any]:
        return await self.errors.next(pred, timeout)

    def updates_for(self, symbol: str, since: int = 0) -> list[Update]:
        return [
            u for u in self.updates.items[since:] if isinstance(u, dict) and str(u.get("symbol", "")).upper() == symbol
        ]

    async def wait_disconnected(self, timeout: float = PROMPT) -> Any:
        await asyncio.wait_for(self.disconnected.wait(), timeout)
        return self.disconnect_reason

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.url}>"


class PySioClient(SioClientBase):
    """python-socketio AsyncClient; default transports are polling, then upgrade."""

    kind = "python"
    _ids = itertools.count(1)

    def __init__(
        self,
        url: str,
        *,
        transports: list[str] | None = None,
        auth: Any = None,
        headers: dict[str, str] | None = None,
        reconnection: bool = False,
        name: str | None = None,
    ) -> None:
        super().__init__(url, name or f"py-sio-{next(self._ids)}")
        self.transports = transports
        self.auth = auth
        self.headers = headers or {}
        self.sio = socketio.AsyncClient(reconnection=reconnection, logger=False, engineio_logger=False)
        self.connect_error: Any = None
        self._ack_ids = itertools.count(1)

        # Handlers are plain functions: python-socketio then runs them in arrival order.
        def on_any(event: str, *args: Any) -> None:
            self._on_event(event, list(args))

        def on_connect() -> None:
            self.timeline.put(("connect",))

        def on_connect_error(data: Any = None) -> None:
            self.connect_error = data
            self.timeline.put(("connect_error", data))

        def on_disconnect(reason: Any = None) -> None:
            self._on_disconnect(reason)

        self.sio.on("*", on_any)
        self.sio.on("connect", on_connect)
        self.sio.on("connect_error", on_connect_error)
        self.sio.on("disconnect", on_disconnect)

    async def connect(self, timeout: float = 10.0) -> None:
        await self.sio.connect(
            self.url, headers=self.headers, auth=self.auth, transports=self.transports, wait_timeout=timeout
        )

    async def call(self, event: str, *args: Any, timeout: float = PROMPT) -> Any:
        loop = asyncio.get_running_loop()
        answered: asyncio.Future = loop.create_future()
        ack_id = next(self._ack_ids)

        def on_ack(*ack_args: Any) -> None:
            value = self._on_ack(ack_id, ack_args)
            if not answered.done():
                answered.set_result(value)

        # A tuple is sent as that many arguments, so (None,) sends an explicit null.
        await self.sio.emit(event, tuple(args), callback=on_ack)
        try:
            return await asyncio.wait_for(answered, timeout)
        except asyncio.TimeoutError:
            raise AckTimeout(
                f"{self.name}: no ack for {event}{args!r} within {timeout}s; timeline: {self.timeline.items[-10:]!r}"
            ) from None

    async def emit(self, event: str, *args: Any) -> None:
        await self.sio.emit(event, tuple(args))

    @property
    def transport(self) -> str | None:
        try:
            return self.sio.transport()
        except Exception:
            return None

    @property
    def connected(self) -> bool:
        return self.sio.connected

    async def close(self) -> None:
        if not self.sio.connected:
            return
        try:
            if self.transport == "polling":
                await self._close_polling()
            else:
                await asyncio.wait_for(self.sio.disconnect(), 5)
        except (asyncio.TimeoutError, Exception):
            pass

    async def _close_polling(self) -> None:
        # python-engineio's server does not answer a pending long-poll when the client
        # closes, so a polite disconnect would wait out the ping timeout (45 s). Say
        # goodbye politely, wait only until that has been POSTed, then drop the poll.
        eio = self.sio.eio
        writer, reader = eio.write_loop_task, eio.read_loop_task
        closing = asyncio.create_task(self.sio.disconnect())
        if writer is not None:
            await asyncio.wait({writer}, timeout=5)
        for task in (closing, reader):
            if task is not None and not task.done():
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass
        if eio.http is not None and not eio.http.closed:
            await eio.http.close()
