"""The embedded backend: snapshots, sequence numbers and history in memory.

One process only; it needs nothing installed, so `python run.py --simulate`
shows live prices on a bare machine.
"""
from __future__ import annotations

import collections
import time
from typing import Any, Iterable

from ..config import Settings
from ..updates import Update, encode_update, validate_fields
from . import Broker, UpdateSink


class MemoryBroker(Broker):
    kind = "memory"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._sink: UpdateSink | None = None
        self._wanted: set[str] = set()
        self._latest: dict[str, Update] = {}
        self._seq: collections.Counter[str] = collections.Counter()
        self._history: dict[str, collections.deque[Update]] = {}
        self._offsets: dict[str, int] = {}

    @property
    def ready(self) -> bool:
        return self._sink is not None

    async def start(self, sink: UpdateSink) -> None:
        self._sink = sink
        sink.on_state(True)

    async def close(self) -> None:
        if self._sink is not None:
            self._sink.on_state(False)
        self._sink = None

    async def subscribe(self, symbols: Iterable[str]) -> None:
        self._wanted.update(symbols)

    async def unsubscribe(self, symbols: Iterable[str]) -> None:
        self._wanted.difference_update(symbols)

    async def publish(self, update: dict[str, Any], *, dedupe: tuple[str, int] | None = None) -> Update | None:
        if dedupe is not None:
            stream, offset = dedupe
            if offset <= self._offsets.get(stream, -1):
                return None
            self._offsets[stream] = offset
        symbol, price, timestamp, _ = validate_fields(update)
        self._seq[symbol] += 1
        seq = self._seq[symbol]
        raw = encode_update(update, seq)
        stored = Update(symbol, price, timestamp, seq, raw)
        self._latest[symbol] = stored
        self._record(stored)
        if self._sink is not None and symbol in self._wanted:
            self._sink.on_update(stored)
        return stored

    def _record(self, update: Update) -> None:
        limit = self._settings.history_max_entries
        if not limit:
            return
        entries = self._history.get(update.symbol)
        if entries is None:
            entries = self._history[update.symbol] = collections.deque(maxlen=limit)
        entries.append(update)
        horizon = time.time() * 1000 - self._settings.history_max_age * 1000
        while entries and entries[0].timestamp < horizon:
            entries.popleft()

    async def snapshots(self, symbols: list[str]) -> dict[str, Update | None]:
        return {s: self._latest.get(s) for s in symbols}

    async def history(self, symbol: str, start_ms: int | None = None, end_ms: int | None = None,
                      limit: int = 1000) -> list[Update]:
        entries = self._history.get(symbol, ())
        matched = [u for u in entries
                   if (start_ms is None or u.timestamp >= start_ms) and (end_ms is None or u.timestamp <= end_ms)]
        return matched[-limit:] if limit else []

    async def replay(self, symbol: str, since_ms: int | None = None, since_seq: int | None = None,
                     limit: int = 10000) -> tuple[list[Update], bool]:
        entries = list(self._history.get(symbol, ()))
        if since_seq is not None:
            first_seq = entries[0].seq if entries else self._seq[symbol] + 1
            reaches = since_seq + 1 >= first_seq
            updates = [u for u in entries if u.seq is not None and u.seq > since_seq]
        else:
            trimmed = len(entries) < self._seq[symbol]
            reaches = not trimmed or (bool(entries) and entries[0].timestamp <= (since_ms or 0))
            updates = [u for u in entries if u.timestamp > (since_ms or 0)]
        if not reaches:
            return [], False
        return updates[:limit], True
