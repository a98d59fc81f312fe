"""Application heartbeats: `{"type": "heartbeat", "seq": N}` every period, so a
client can tell a stale feed from a quiet one.

A connection asks for a period (whole seconds) in its subscribe. Connections
asking for the same period share one ticker: a single timer that, once per
period, walks its members and asks each for a beat. So a connection costs a
dict entry, not a task or a timer of its own, and the number of timers is
bounded by the number of distinct periods (at most MAX_HEARTBEAT_SECONDS).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

log = logging.getLogger("stockstream.heartbeat")

HEARTBEAT_EVENT = "heartbeat"
# Members beaten per event-loop turn: a walk over many connections is spread
# over several turns (a few milliseconds each) so price updates are not held up.
BEATS_PER_TURN = 500


class Beating(Protocol):
    """What a ticker asks of a member once per period."""

    def beat(self) -> None:
        """Queue one heartbeat (or skip it, when the client cannot take it now)."""


class _Ticker:
    """One timer for every member of one period, rescheduled on a fixed grid
    (start + k * period) so the beats do not drift by the time a walk takes."""

    __slots__ = ("_due", "_handle", "_walking", "members", "period")

    def __init__(self, period: int) -> None:
        self.period = period
        # Insertion-ordered; a dict, so leaving is O(1).
        self.members: dict[Beating, None] = {}
        loop = asyncio.get_running_loop()
        self._due = loop.time() + period
        self._handle: asyncio.TimerHandle | None = loop.call_at(self._due, self._tick)
        self._walking: asyncio.Handle | None = None

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        if self._walking is None:  # else the last walk is not over: this beat is skipped
            self._walk(list(self.members), 0)
        self._due += self.period
        now = loop.time()
        if self._due <= now:
            # The loop was blocked for more than a period: no burst of late
            # beats, the next one a whole period from now.
            self._due = now + self.period
        self._handle = loop.call_at(self._due, self._tick)

    def _walk(self, members: list[Beating], start: int) -> None:
        self._walking = None
        end = start + BEATS_PER_TURN
        for member in members[start:end]:
            if member not in self.members:
                continue  # left during the walk
            try:
                member.beat()
            except Exception:  # one member's failure must not stop the others' beats
                log.exception("heartbeat failed")
        if end < len(members):
            self._walking = asyncio.get_running_loop().call_soon(self._walk, members, end)

    def cancel(self) -> None:
        for handle in (self._handle, self._walking):
            if handle is not None:
                handle.cancel()
        self._handle = self._walking = None


class Heartbeats:
    """Every ticker of this instance, by period; built once by create_app."""

    __slots__ = ("_period_of", "_tickers")

    def __init__(self) -> None:
        self._tickers: dict[int, _Ticker] = {}
        self._period_of: dict[Beating, int] = {}

    def set(self, member: Beating, period: int) -> None:
        """Beat `member` every `period` seconds from now on; 0 stops it. A new
        period replaces the old one."""
        old = self._period_of.get(member)
        if old == period:
            return
        if old is not None:
            self._leave(member, old)
        if period > 0:
            ticker = self._tickers.get(period)
            if ticker is None:
                ticker = self._tickers[period] = _Ticker(period)
            ticker.members[member] = None
            self._period_of[member] = period

    def stop(self, member: Beating) -> None:
        self.set(member, 0)

    def period_of(self, member: Beating) -> int:
        return self._period_of.get(member, 0)

    def timers(self) -> int:
        """Timers running (one per period in use)."""
        return len(self._tickers)

    def members(self) -> int:
        return len(self._period_of)

    def close(self) -> None:
        for ticker in self._tickers.values():
            ticker.cancel()
        self._tickers.clear()
        self._period_of.clear()

    def _leave(self, member: Beating, period: int) -> None:
        del self._period_of[member]
        ticker = self._tickers[period]
        ticker.members.pop(member, None)
        if not ticker.members:
            ticker.cancel()
            del self._tickers[period]
