"""Rooms: which local sessions want which symbol, and delivery into them.

The hub is the broker's UpdateSink. It owns the per-symbol rooms of this
instance and asks the broker to feed exactly the symbols that have a room, so
each update reaches each local subscriber once whichever instance published it.
"""
from __future__ import annotations

import collections
import logging
from typing import Callable, Iterable, Protocol

from .broker import Broker
from .gate import Gates
from .updates import Update

log = logging.getLogger("stockstream.hub")


class Subscriber(Protocol):
    """What the hub delivers to: anything that accepts an update. The hub
    knows nothing else of its subscribers (sessions live above it)."""

    def deliver(self, update: Update) -> None: ...


class Hub:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.rooms: dict[str, set[Subscriber]] = {}
        self.users: collections.Counter[str] = collections.Counter()
        self.updates_received = 0
        # The position of the last update received: every update the broker
        # feeds is numbered in arrival order, across all symbols.
        self.position = 0
        self.deliveries = 0
        # After a feed interruption, the rooms whose re-sent snapshot came
        # from a third-party SET whose PUBLISH may still follow (see Gate).
        self._echoes = Gates()
        # The last update delivered into each room (None: the room knows there
        # is no price yet): a client joining a room gets it as its snapshot,
        # without a Redis read and without any race against the live updates.
        self.latest: dict[str, Update | None] = {}
        # Told the symbols of each resync, after their rooms got the snapshots
        # (live candles read the current period again: they missed updates).
        self.resync_listeners: list[Callable[[Iterable[str]], None]] = []

    # -- UpdateSink ------------------------------------------------------------

    def on_update(self, update: Update) -> None:
        self.updates_received += 1
        self.position += 1
        update.pos = self.position
        room = self.rooms.get(update.symbol)
        if not room:
            return
        if self._echoes and not self._echoes.offer(update):
            return
        self.latest[update.symbol] = update
        self.deliveries += len(room)
        for session in room:
            session.deliver(update)

    def on_resync(self, snapshots: dict[str, Update | None]) -> None:
        # Called by the listener at the stream position the snapshots were
        # read at: what it received before is covered, what follows is newer.
        for symbol, snapshot in snapshots.items():
            room = self.rooms.get(symbol)
            if not room:
                continue
            self.latest[symbol] = snapshot
            if snapshot is None:
                continue
            self.position += 1
            snapshot.pos = self.position
            self._echoes.expect_echo(symbol, [snapshot])
            for session in room:
                session.deliver(snapshot)
        for listener in self.resync_listeners:
            listener(snapshots.keys())

    def mark(self) -> int:
        """The current stream position: every update received so far is at or
        before it, every later one after it."""
        return self.position

    def on_state(self, ready: bool) -> None:
        # Readiness is the broker's to report (Broker.ready); rooms do not change with it.
        pass

    # -- membership ----------------------------------------------------------------

    def admit_user(self, user: str, limit: int) -> bool:
        """Count one more connection of `user`, unless it already holds
        `limit` of them (0: no limit); False when refused."""
        if limit and self.users[user] >= limit:
            return False
        self.users[user] += 1
        return True

    def release_user(self, user: str) -> None:
        """One connection of `user` ended or changed identity."""
        self.users[user] -= 1
        if self.users[user] <= 0:
            del self.users[user]

    async def join(self, session: Subscriber, symbols: Iterable[str]) -> tuple[dict[str, Update | None], int]:
        """Enter rooms; returns once the broker feeds every one of them, with
        the latest update of those rooms that already streamed one and the
        stream position it stands at (taken before any await: every update
        delivered to the session from then on is after it)."""
        symbols = list(symbols)
        position = self.position
        known = {}
        for symbol in symbols:
            room = self.rooms.get(symbol)
            if room is None:
                room = self.rooms[symbol] = set()
            elif symbol in self.latest:
                known[symbol] = self.latest[symbol]
            room.add(session)
        if symbols:
            await self.broker.subscribe(symbols)
        return known, position

    def remember(self, snapshots: dict[str, Update | None], positions: dict[str, int]) -> None:
        """Snapshots read from the backend at `positions[symbol]`, for rooms
        that received nothing after it (a later update is newer than the read)."""
        for symbol, snapshot in snapshots.items():
            if symbol not in self.rooms:
                continue
            position = positions[symbol]
            latest = self.latest.get(symbol)
            if symbol not in self.latest or (latest is not None and latest.pos <= position):
                if snapshot is not None:
                    snapshot.pos = position
                self.latest[symbol] = snapshot

    async def leave(self, session: Subscriber, symbols: Iterable[str]) -> None:
        """Leave rooms at once; the broker stops feeding the emptied ones."""
        emptied = []
        for symbol in symbols:
            room = self.rooms.get(symbol)
            if room is None:
                continue
            room.discard(session)
            if not room:
                del self.rooms[symbol]
                self._echoes.drop(symbol)
                self.latest.pop(symbol, None)
                emptied.append(symbol)
        if emptied:
            # Called before any await: a join racing this leave sees the same state.
            await self.broker.unsubscribe(emptied)

    @property
    def subscription_count(self) -> int:
        return sum(len(room) for room in self.rooms.values())
