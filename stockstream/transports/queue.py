"""A slimmer stand-in for asyncio.Queue in Engine.IO's sockets.

Each Engine.IO socket owns a queue that is empty nearly all the time. An
asyncio.Queue carries four deques and an Event (about 2.5 KB); this keeps one
list and creates futures only while someone waits, which matters at tens of
thousands of idle connections. It implements what Engine.IO calls.

A long-polling response carries at most MAX_PACKETS_PER_POLL packets: Engine.IO's
poll takes one item with get() and then drains with get_nowait() until QueueEmpty
(python-engineio 4.15), and python-engineio's client refuses a payload of more
than 16 packets (Payload.max_decode_packets) as a transport error, dropping the
connection under a burst. The rest waits for the next poll, in order.

Once a socket is on a WebSocket, nothing waits on its queue: packets are handed
to the socket's writer as they are put (`attach`), in the order they were put.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

MAX_PACKETS_PER_POLL = 16


class SlimQueue:
    __slots__ = ("_items", "_getters", "_unfinished", "_joined", "_sink", "_polled")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._getters: list[asyncio.Future[None]] | None = None
        self._unfinished = 0
        self._joined: asyncio.Future[None] | None = None
        self._sink: Callable[[Any], None] | None = None
        self._polled = 0  # items taken since the last get(): one poll's payload

    def attach(self, sink: Callable[[Any], None]) -> None:
        """Hand what is queued, then every item put from now on, to `sink`."""
        items, self._items = self._items, []
        for item in items:
            sink(item)
            self.task_done()
        self._sink = sink

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, item: Any) -> None:
        if self._sink is not None:
            self._sink(item)
            return
        self._items.append(item)
        self._unfinished += 1
        if self._getters:
            for getter in self._getters:
                if not getter.done():
                    getter.set_result(None)
                    break

    async def put(self, item: Any) -> None:
        self.put_nowait(item)

    def get_nowait(self) -> Any:
        if not self._items or self._polled >= MAX_PACKETS_PER_POLL:
            raise asyncio.QueueEmpty
        self._polled += 1
        return self._items.pop(0)

    async def get(self) -> Any:
        # An item stays in the list until its consumer runs and takes it
        # (never handed over at put time): the Socket.IO transport reads
        # empty() to know that nothing sent through Engine.IO is still unwritten.
        while not self._items:
            getter = asyncio.get_running_loop().create_future()
            if self._getters is None:
                self._getters = []
            self._getters.append(getter)
            try:
                await getter
            finally:
                self._getters.remove(getter)
                if not self._getters:
                    self._getters = None
        self._polled = 1
        return self._items.pop(0)

    def task_done(self) -> None:
        self._unfinished = max(0, self._unfinished - 1)
        if not self._unfinished and self._joined is not None and not self._joined.done():
            self._joined.set_result(None)

    async def join(self) -> None:
        if self._unfinished:
            if self._joined is None or self._joined.done():
                self._joined = asyncio.get_running_loop().create_future()
            await self._joined
