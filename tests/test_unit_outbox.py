"""The outbox keeps each symbol's updates in order, whole or conflated (no servers, milliseconds)."""

from __future__ import annotations

import json
from typing import Collection

from stockstream.outbox import FlushScheduler, Outbox
from stockstream.updates import Update


def update(symbol: str, n: int) -> Update:
    return Update(symbol, float(n), 1000, None, json.dumps({"symbol": symbol, "price": n, "timestamp": 1000}).encode())


class FakeSink:
    def __init__(self) -> None:
        self.accepting = True
        self.written: list[object] = []

    def send(self, items: Collection[object], limit: int | None) -> bool:
        if not self.accepting and limit is not None:
            return False
        self.written.extend(items)
        return True

    def backlog(self) -> int:
        return 0


def labels(items: list[object]) -> list[str]:
    return [f"{i.symbol}{int(i.price)}" if isinstance(i, Update) else str(i) for i in items]


def make() -> tuple[Outbox, FakeSink]:
    sink = FakeSink()
    scheduler = FlushScheduler()
    slow: list[bool] = []
    return Outbox(sink, scheduler, 1000, 60.0, lambda: slow.append(True)), sink


async def test_everything_goes_out_in_push_order() -> None:
    """Replies and updates of all symbols leave in the order they were pushed."""
    outbox, sink = make()
    outbox.push("ack")
    outbox.push_update(update("A", 1))
    outbox.push_update(update("B", 1))
    outbox.push_update(update("A", 2))
    outbox.flush()
    assert labels(sink.written) == ["ack", "A1", "B1", "A2"]


async def test_a_client_behind_gets_the_latest_per_symbol_never_an_older_one_after() -> None:
    """Behind, a symbol's queued update is replaced by the newer one in place: what goes
    out per symbol is still increasing, and replies are never dropped."""
    outbox, sink = make()
    sink.accepting = False
    outbox.push_update(update("A", 1))
    outbox.push_update(update("B", 1))
    assert outbox.flush() is True  # backed up: now behind
    outbox.push_update(update("A", 2))
    outbox.push("reply")
    outbox.push_update(update("A", 3))
    sink.accepting = True
    outbox.flush()
    assert labels(sink.written) == ["A3", "B1", "reply"]


async def test_an_unsubscribed_symbol_leaves_nothing_queued() -> None:
    """Updates of a symbol queued before its unsubscribe are not sent after it."""
    outbox, sink = make()
    outbox.push_update(update("A", 1))
    outbox.push_update(update("B", 1))
    outbox.drop_symbol("A")
    outbox.flush()
    assert labels(sink.written) == ["B1"]


async def test_a_client_behind_keeps_every_symbol_of_conflated_batches() -> None:
    """Behind, a queued `stockUpdates` batch replaced by a newer one is merged into it:
    the newest update of every symbol of both goes out, in one batch."""
    outbox, sink = make()
    sink.accepting = False
    outbox.push_update(Update.batch([update("A", 1), update("B", 1)]))
    assert outbox.flush() is True  # backed up: now behind
    outbox.push_update(Update.batch([update("A", 2), update("C", 1)]))
    sink.accepting = True
    outbox.flush()
    (batch,) = sink.written
    assert isinstance(batch, Update) and batch.parts is not None
    assert labels([*batch.parts]) == ["A2", "B1", "C1"]
