"""The embedded backend: snapshots, sequence numbers and history in memory.

One process only; it needs nothing installed, so `python run.py --simulate`
shows live prices on a bare machine.
"""

from __future__ import annotations

import collections
import time
from typing import Iterable

from ..config import Settings
from ..updates import CheckedUpdate, Update
from . import Broker, Replay, SessionStore, Snapshots, UpdateSink

SESSION_SWEEP_EVERY = 1.0


class MemorySessionStore(SessionStore):
    """Sessions of the embedded backend: this process's clients only."""

    def __init__(self) -> None:
        # pid -> (expiry on the monotonic clock, state)
        self._sessions: dict[str, tuple[float, bytes]] = {}
        self._next_sweep = 0.0

    async def save(self, pid: str, data: bytes, ttl: float) -> None:
        now = time.monotonic()
        # Expired entries are dropped here, so the dict stays bounded by what one
        # window holds; at most once a second, since every connection saves an
        # entry when it opens (a scan per save would cost a connect storm dearly).
        if now >= self._next_sweep:
            self._next_sweep = now + SESSION_SWEEP_EVERY
            for stale in [k for k, (until, _) in self._sessions.items() if until <= now]:
                del self._sessions[stale]
        self._sessions[pid] = (now + ttl, data)

    async def take(self, pid: str) -> bytes | None:
        entry = self._sessions.pop(pid, None)
        if entry is None or entry[0] <= time.monotonic():
            return None
        return entry[1]


class MemoryBroker(Broker):
    kind = "memory"
    embedded = True

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._sink: UpdateSink | None = None
        self._wanted: set[str] = set()
        self._all = False
        self._latest: dict[str, Update] = {}
        self._seq: collections.Counter[str] = collections.Counter()
        self._history: dict[str, collections.deque[Update]] = {}
        # Per symbol: the newest timestamp and seq that history no longer holds.
        self._lost: dict[str, tuple[int, int]] = {}
        self._offsets: dict[str, int] = {}
        self.sessions = MemorySessionStore()

    @property
    def ready(self) -> bool:
        return self._sink is not None

    async def start(self, sink: UpdateSink) -> None:
        self._sink = sink

    async def close(self) -> None:
        self._sink = None

    async def subscribe(self, symbols: Iterable[str]) -> None:
        self._wanted.update(symbols)

    async def unsubscribe(self, symbols: Iterable[str]) -> None:
        self._wanted.difference_update(symbols)

    async def subscribe_all(self) -> None:
        self._all = True

    async def unsubscribe_all(self) -> None:
        self._all = False

    async def symbols_with_price(self, limit: int) -> list[str]:
        return sorted(self._latest)[:limit]

    async def publish(self, update: CheckedUpdate, *, dedupe: tuple[str, int] | None = None) -> Update | None:
        if dedupe is not None:
            stream, offset = dedupe
            if offset <= self._offsets.get(stream, -1):
                return None
            self._offsets[stream] = offset
        symbol = update.symbol
        self._seq[symbol] += 1
        seq = self._seq[symbol]
        stored = Update(symbol, update.price, update.timestamp, seq, update.encode(seq))
        self._latest[symbol] = stored
        self._record(stored)
        if self._sink is not None and (self._all or symbol in self._wanted):
            self._sink.on_update(stored)
        return stored

    def _record(self, update: Update) -> None:
        entries = self._history.get(update.symbol)
        if entries is None:
            entries = self._history[update.symbol] = collections.deque()
        entries.append(update)
        horizon = time.time() * 1000 - self._settings.history_max_age * 1000
        while entries and (len(entries) > self._settings.history_max_entries or entries[0].timestamp < horizon):
            self._forget(entries.popleft())

    def _forget(self, update: Update) -> None:
        """Remember how far history has lost updates, for replay's completeness."""
        lost_ms, lost_seq = self._lost.get(update.symbol, (-1, 0))
        self._lost[update.symbol] = (max(lost_ms, update.timestamp), max(lost_seq, update.seq or 0))

    async def snapshots(self, symbols: list[str]) -> dict[str, Update | None]:
        return {s: self._latest.get(s) for s in symbols}

    async def history(
        self, symbol: str, start_ms: int | None = None, end_ms: int | None = None, limit: int = 1000
    ) -> list[Update]:
        entries = self._history.get(symbol, ())
        matched = [
            u
            for u in entries
            if (start_ms is None or u.timestamp >= start_ms) and (end_ms is None or u.timestamp <= end_ms)
        ]
        return matched[-limit:] if limit > 0 else []

    def _position(self) -> int:
        # Updates reach the sink as they are stored, with no await between:
        # the position now is the position of the read.
        return self._sink.mark() if self._sink is not None else 0

    async def snapshots_at(self, symbols: list[str]) -> Snapshots:
        return Snapshots({s: self._latest.get(s) for s in symbols}, dict.fromkeys(symbols, self._position()))

    async def replay_at(
        self, symbol: str, since_ms: int | None = None, since_seq: int | None = None, limit: int = 10000
    ) -> Replay:
        updates, complete = self._replay(symbol, since_ms, since_seq, limit)
        return Replay(updates, complete, self._position())

    def _replay(
        self, symbol: str, since_ms: int | None, since_seq: int | None, limit: int
    ) -> tuple[list[Update], bool]:
        # Complete when no update after the point was ever dropped from history.
        entries = self._history.get(symbol, ())
        lost_ms, lost_seq = self._lost.get(symbol, (-1, 0))
        if since_seq is not None:
            if since_seq > self._seq[symbol]:
                return [], False  # a point this history never had
            complete = lost_seq <= since_seq
            updates = [u for u in entries if u.seq is not None and u.seq > since_seq]
        else:
            complete = lost_ms <= (since_ms or 0)
            updates = [u for u in entries if u.timestamp > (since_ms or 0)]
        if not complete or len(updates) > limit:
            return [], False
        return updates, True
