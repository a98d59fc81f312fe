"""Rooms: which local sessions want which symbol, and delivery into them.

The hub is the broker's UpdateSink. It owns the per-symbol rooms of this
instance and asks the broker to feed exactly the symbols that have a room, so
each update reaches each local subscriber once whichever instance published it.
"""
from __future__ import annotations

import collections
import logging
from typing import TYPE_CHECKING, Iterable

from .broker import Broker
from .gate import Gate
from .updates import Update

if TYPE_CHECKING:
    from .session import Session

log = logging.getLogger("stockstream.hub")


class Hub:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.rooms: dict[str, set["Session"]] = {}
        self.sessions: set["Session"] = set()
        self.users: collections.Counter[str] = collections.Counter()
        self.updates_received = 0
        # The position of the last update received: every update the broker
        # feeds is numbered in arrival order, across all symbols.
        self.position = 0
        self.deliveries = 0
        # After a feed interruption, a Gate per room opened with the snapshot
        # that was re-sent: live updates not newer than it are covered by it.
        self._floors: dict[str, Gate] = {}
        # The last update delivered into each room (None: the room knows there
        # is no price yet): a client joining a room gets it as its snapshot,
        # without a Redis read and without any race against the live updates.
        self.latest: dict[str, Update | None] = {}

    # -- UpdateSink ------------------------------------------------------------

    def on_update(self, update: Update) -> None:
        self.updates_received += 1
        self.position += 1
        update.pos = self.position
        room = self.rooms.get(update.symbol)
        if not room:
            return
        if self._floors:
            gate = self._floors.get(update.symbol)
            if gate is not None:
                if not gate.offer(update):
                    return
                if gate.open:
                    del self._floors[update.symbol]
        self.latest[update.symbol] = update
        self.deliveries += len(room)
        for session in room:
            session.deliver(update)

    def on_resync(self, snapshots: dict[str, Update | None]) -> None:
        for symbol, snapshot in snapshots.items():
            room = self.rooms.get(symbol)
            if not room:
                continue
            self.latest[symbol] = snapshot
            if snapshot is None:
                continue
            gate = self._floors[symbol] = Gate()
            gate.release([snapshot])
            for session in room:
                session.deliver(snapshot)

    def on_state(self, ready: bool) -> None:
        # Readiness is the broker's to report (Broker.ready); rooms do not change with it.
        pass

    # -- membership ----------------------------------------------------------------

    def register(self, session: "Session") -> None:
        self.sessions.add(session)

    def unregister(self, session: "Session") -> None:
        self.sessions.discard(session)

    async def join(self, session: "Session", symbols: Iterable[str]) -> dict[str, Update | None]:
        """Enter rooms; returns once the broker feeds every one of them, with
        the latest update of those rooms that already streamed one."""
        symbols = list(symbols)
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
        return known

    def remember(self, snapshots: dict[str, Update | None]) -> None:
        """Snapshots read from the backend, for rooms that saw no update since."""
        for symbol, snapshot in snapshots.items():
            if symbol in self.rooms and symbol not in self.latest:
                self.latest[symbol] = snapshot

    async def leave(self, session: "Session", symbols: Iterable[str]) -> None:
        """Leave rooms at once; the broker stops feeding the emptied ones."""
        emptied = []
        for symbol in symbols:
            room = self.rooms.get(symbol)
            if room is None:
                continue
            room.discard(session)
            if not room:
                del self.rooms[symbol]
                self._floors.pop(symbol, None)
                self.latest.pop(symbol, None)
                emptied.append(symbol)
        if emptied:
            # Called before any await: a join racing this leave sees the same state.
            await self.broker.unsubscribe(emptied)

    @property
    def subscription_count(self) -> int:
        return sum(len(room) for room in self.rooms.values())
