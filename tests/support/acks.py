"""Waiting for an answer that must come before the connection closes, and
Socket.IO emits with an ack callback as futures."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, TypeVar

from .waiting import PROMPT

T = TypeVar("T")


async def before_close(waiter: Awaitable[T], closed: asyncio.Event, what: str, grace: float = 0.5) -> T:
    """What `waiter` yields, which must come before (or right with) the connection's
    close: a connection that closes without it fails at once, not after a timeout."""
    task = asyncio.ensure_future(waiter)
    closing = asyncio.ensure_future(closed.wait())
    try:
        done, _ = await asyncio.wait({task, closing}, timeout=PROMPT, return_when=asyncio.FIRST_COMPLETED)
        if task not in done and closing in done:
            done, _ = await asyncio.wait({task}, timeout=grace)
        if task in done:
            return task.result()
        if closed.is_set():
            raise AssertionError(f"the connection was closed without {what}")
        raise AssertionError(f"no {what} within {PROMPT}s")
    finally:
        task.cancel()
        closing.cancel()


def sio_ack(client: Any, event: str, payload: Any) -> asyncio.Future:
    """Emit with an ack callback; the future gets the ack's first argument."""
    answered = asyncio.get_running_loop().create_future()

    def on_ack(*args: Any) -> None:
        if not answered.done():
            answered.set_result(args[0] if args else None)

    return asyncio.ensure_future(_emit_then(client, event, payload, on_ack, answered))


async def _emit_then(client: Any, event: str, payload: Any, on_ack: Any, answered: asyncio.Future) -> Any:
    await client.sio.emit(event, payload, callback=on_ack)
    return await answered
