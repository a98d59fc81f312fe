"""Bounded waiting: every wait in the suite names what it waits for and gives up in time."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any, Awaitable, Callable, Generic, Iterable, TypeVar

T = TypeVar("T")

# How long a test waits for something that should happen "at once" on a loaded
# two-core machine; conditions are polled, so a healthy run never waits this long.
PROMPT = 5.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def now_ms() -> int:
    return int(time.time() * 1000)


async def period_with_room(period_ms: int, room_ms: int) -> int:
    """The start of a period of `period_ms` with at least `room_ms` of it still
    ahead: the current one, or the next (waited for) when too little is left.
    For tests whose updates must fall in the period the server calls current."""
    now = now_ms()
    start = now - now % period_ms
    if start + period_ms - now >= room_ms:
        return start
    await asyncio.sleep((start + period_ms - now) / 1000 + 0.01)
    return start + period_ms


def tail_text(items: Iterable[Any], limit: int = 12) -> str:
    """The last few items of a sequence, as compact text for failure messages."""
    items = list(items)
    shown = items[-limit:]
    text = ", ".join(json.dumps(i, default=repr)[:300] for i in shown)
    more = f"... ({len(items) - len(shown)} earlier) " if len(items) > len(shown) else ""
    return f"[{more}{text}]"


class Inbox(Generic[T]):
    """Everything one stream delivered, in arrival order, with bounded waits on it.

    `items` keeps the whole history (for assertions about order and absence),
    `arrived` the time.monotonic() each item arrived at (for assertions about timing);
    `next()` consumes items one by one through a cursor.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.items: list[T] = []
        self.arrived: list[float] = []
        self._cursor = 0
        self._changed = asyncio.Event()

    def put(self, item: T) -> None:
        self.items.append(item)
        self.arrived.append(time.monotonic())
        self._changed.set()

    def __len__(self) -> int:
        return len(self.items)

    async def wait_for(
        self, check: Callable[[list[T]], Any], timeout: float = PROMPT, what: str = "a condition"
    ) -> Any:
        """Wait until check(items) is truthy and return its value."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            result = check(self.items)
            if result:
                return result
            self._changed.clear()
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(
                    f"{self.name}: timed out after {timeout}s waiting for {what}; "
                    f"received {len(self.items)}: {tail_text(self.items)}"
                )
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    async def next(
        self, pred: Callable[[T], bool] | None = None, timeout: float = PROMPT, what: str | None = None
    ) -> T:
        """The next unconsumed item (matching pred, skipping others)."""

        def find(items: list[T]) -> tuple[T] | None:
            for index in range(self._cursor, len(items)):
                if pred is None or pred(items[index]):
                    self._cursor = index + 1
                    return (items[index],)
            return None

        found = await self.wait_for(find, timeout, what or ("the next item" if pred is None else "a matching item"))
        return found[0]

    async def wait_count(self, count: int, timeout: float = PROMPT) -> list[T]:
        await self.wait_for(lambda items: len(items) >= count, timeout, f"{count} items")
        return self.items[:count]

    def since(self, index: int) -> list[T]:
        return self.items[index:]


async def eventually(
    check: Callable[[], Any | Awaitable[Any]],
    timeout: float = PROMPT,
    what: str = "a condition",
    interval: float = 0.02,
) -> Any:
    """Poll check() (sync or async) until truthy; fail with `what` after timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    while True:
        try:
            last = check()
            if asyncio.iscoroutine(last):
                last = await last
        except AssertionError as exc:
            last = exc
        else:
            if last:
                return last
        if loop.time() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        await asyncio.sleep(interval)


class JsParsed(dict):
    """An object parsed by a JavaScript client: JSON numbers lost the int/float
    distinction there (189.0 arrives as 189), so comparisons ignore it."""


def _js_numbers(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _js_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_js_numbers(v) for v in value]
    return value


def canonical(update: Any, js_numbers: bool = False) -> str:
    """JSON text that differs whenever two updates differ (types included: 189 vs 189.0,
    unless js_numbers, as seen by a JavaScript client)."""
    if js_numbers or isinstance(update, JsParsed):
        update = _js_numbers(update)
    return json.dumps(update, sort_keys=True, separators=(",", ":"))


def assert_same_json(received: Any, expected: Any) -> None:
    js = isinstance(received, JsParsed) or isinstance(expected, JsParsed)
    got, want = canonical(received, js), canonical(expected, js)
    assert got == want, f"update not delivered exactly as published:\n  got      {got}\n  expected {want}"
