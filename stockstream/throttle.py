"""Throttled streams: the subscribers of one stream at one period, one timer for all.

A throttled subscriber gets at most one update per symbol per period, always
the latest: the first update after a quiet period goes out at once (leading
edge), later ones within the period wait and only the newest of them goes out
when the period ends (trailing edge), which starts the next period. The group
runs this once for all its members, so 10,000 clients at one period on a hot
symbol cost one timer and one emission per period, not 10,000.

A group of symbol `*` (every symbol, a wildcard subscription) keeps the newest
update of each symbol that changed in the period and emits them together.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from .updates import BATCH_SYMBOL, Update

MIN_THROTTLE_MS = 100
MAX_THROTTLE_MS = 60_000


class ThrottledMember(Protocol):
    """What a group delivers to."""

    def deliver_throttled(self, update: Update) -> None:
        """One symbol's update, or (from a `*` group) a batch of symbol `*`."""


class ThrottleGroup:
    """The members of one (symbol, period): one pending slot, one timer.

    `deliver` is called for every update of the stream (the hub's fan-out
    treats the group as one subscriber); what the group emits goes to every
    member through `deliver_throttled`, the same object for all.
    """

    __slots__ = ("_on_emit", "_timer", "members", "pending", "period_ms", "symbol")

    def __init__(self, symbol: str, period_ms: int, on_emit: Callable[[int], None] | None = None) -> None:
        self.symbol = symbol
        self.period_ms = period_ms
        self.members: set[ThrottledMember] = set()
        # The newest update per symbol received since the last emission.
        self.pending: dict[str, Update] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._on_emit = on_emit

    def deliver(self, update: Update) -> None:
        if self._timer is None:
            self._emit([update])
            self._start_period()
        else:
            self.pending[update.symbol] = update

    # A `*` group is a wildcard member of the hub: it takes every symbol's updates.
    deliver_wildcard = deliver

    def _start_period(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self.period_ms / 1000, self._period_ended)

    def _period_ended(self) -> None:
        if not self.pending:
            self._timer = None  # quiet: the next update goes out at once
            return
        updates = list(self.pending.values())
        self.pending.clear()
        self._emit(updates)
        self._start_period()

    def _emit(self, updates: list[Update]) -> None:
        members = self.members
        if not members:
            return
        item = Update.batch(updates) if self.symbol == BATCH_SYMBOL else updates[0]
        for member in members:
            member.deliver_throttled(item)
        if self._on_emit is not None:
            self._on_emit(len(members))

    def take_pending(self, symbol: str) -> Update | None:
        """The update of `symbol` waiting for the period's end, if any."""
        return self.pending.get(symbol)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.pending.clear()

    def __len__(self) -> int:
        return len(self.members)
