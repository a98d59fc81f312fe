"""Rooms: which local sessions want which symbol, and delivery into them.

The hub is the broker's UpdateSink. It owns the per-symbol rooms of this
instance and asks the broker to feed exactly the symbols that have a room, so
each update reaches each local subscriber once whichever instance published it.

Throttled subscribers are grouped by (symbol, period): the group is one member
of the room, and it alone keeps the timer and hands its members the update
it emits (see throttle.py). Wildcard subscribers (`*`) get every update the
broker feeds, which then is every symbol's.
"""

from __future__ import annotations

import collections
import logging
from typing import Callable, Iterable, Protocol, cast

from .broker import Broker
from .gate import Gates
from .throttle import ThrottleGroup
from .updates import BATCH_SYMBOL, Update

log = logging.getLogger("stockstream.hub")


class Subscriber(Protocol):
    """What the hub delivers to: anything that accepts an update. The hub
    knows nothing else of its subscribers (sessions live above it)."""

    def deliver(self, update: Update) -> None: ...


class ThrottledSubscriber(Subscriber, Protocol):
    """A subscriber that may also be served at a throttle period."""

    def deliver_throttled(self, update: Update) -> None: ...


class WildcardSubscriber(Protocol):
    """What the hub hands every symbol's updates to (a `*` subscription)."""

    def deliver_wildcard(self, update: Update) -> None: ...


class WildcardMember(WildcardSubscriber, Protocol):
    """A `*` subscriber, served unthrottled or by a `*` group's batches."""

    def deliver_throttled(self, update: Update) -> None: ...


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
        # symbol -> period (ms) -> the group of that room's members at that period.
        self.groups: dict[str, dict[int, ThrottleGroup]] = {}
        # Unthrottled `*` sessions, and a group per period of throttled ones.
        self.wildcard: set[WildcardSubscriber] = set()
        self.wildcard_groups: dict[int, ThrottleGroup] = {}

    # -- UpdateSink ------------------------------------------------------------

    def on_update(self, update: Update) -> None:
        self.updates_received += 1
        self.position += 1
        update.pos = self.position
        room = self.rooms.get(update.symbol)
        wildcard = self.wildcard
        if not room and not wildcard:
            return
        if self._echoes and not self._echoes.offer(update):
            return
        if room:
            self.latest[update.symbol] = update
            # A throttle group counts what it emits, when it emits it.
            groups = self.groups.get(update.symbol)
            self.deliveries += len(room) - len(groups) if groups else len(room)
            for session in room:
                session.deliver(update)
        if wildcard:
            self.deliveries += len(wildcard) - len(self.wildcard_groups)
            for member in wildcard:
                member.deliver_wildcard(update)

    def on_resync(self, snapshots: dict[str, Update | None]) -> None:
        # Called by the listener at the stream position the snapshots were
        # read at: what it received before is covered, what follows is newer.
        wildcard = self.wildcard
        for symbol, snapshot in snapshots.items():
            room = self.rooms.get(symbol)
            if not room and not wildcard:
                continue
            if room:
                self.latest[symbol] = snapshot
            if snapshot is None:
                continue
            self.position += 1
            snapshot.pos = self.position
            self._echoes.expect_echo(symbol, [snapshot])
            for session in room or ():
                session.deliver(snapshot)
            for member in wildcard:
                member.deliver_wildcard(snapshot)
        for listener in self.resync_listeners:
            listener(snapshots.keys())

    def on_resume(self, updates: dict[str, list[Update]]) -> None:
        # Called by the listener at the stream position the replays were read
        # at: each replayed update is numbered and delivered as a live one.
        for symbol, replay in updates.items():
            latest = self.latest.get(symbol)
            if latest is not None and replay and replay[0].raw == latest.raw:
                # A snapshot the listener could not place (it knew no resume
                # point) that this room already holds.
                replay = replay[1:]
            for update in replay:
                self.on_update(update)
            if symbol in self.rooms:
                self._echoes.expect_echo(symbol, replay)

    def mark(self) -> int:
        """The current stream position: every update received so far is at or
        before it, every later one after it."""
        return self.position

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

    async def join(
        self, session: Subscriber, symbols: Iterable[str], throttle_ms: int | None = None
    ) -> tuple[dict[str, Update | None], int]:
        """Enter rooms; returns once the broker feeds every one of them, with
        the latest update of those rooms that already streamed one and the
        stream position it stands at (taken before any await: every update
        delivered to the session from then on is after it). With `throttle_ms`
        the session joins each room's group at that period instead
        (the group then hands it what it emits)."""
        symbols = list(symbols)
        position = self.position
        known = {}
        for symbol in symbols:
            room = self.rooms.get(symbol)
            if room is None:
                room = self.rooms[symbol] = set()
            elif symbol in self.latest:
                known[symbol] = self.latest[symbol]
            if throttle_ms is None:
                room.add(session)
            else:
                # Whoever asks for a period can be served at one (a session).
                self._group(symbol, throttle_ms).members.add(cast(ThrottledSubscriber, session))
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
            self._leave_room(session, symbol)
            if not room:
                del self.rooms[symbol]
                self._echoes.drop(symbol)
                self.latest.pop(symbol, None)
                emptied.append(symbol)
        if emptied:
            # Called before any await: a join racing this leave sees the same state.
            await self.broker.unsubscribe(emptied)

    # -- throttle groups -------------------------------------------------------

    def _group(self, symbol: str, period_ms: int) -> ThrottleGroup:
        groups = self.groups.setdefault(symbol, {})
        group = groups.get(period_ms)
        if group is None:
            group = groups[period_ms] = ThrottleGroup(symbol, period_ms, self._count_emitted)
            self.rooms[symbol].add(group)
        return group

    def _count_emitted(self, members: int) -> None:
        self.deliveries += members

    def group_of(self, session: object, symbol: str) -> ThrottleGroup | None:
        """The group `session` is served by for `symbol` (None: unthrottled or absent)."""
        for group in self.groups.get(symbol, {}).values():
            if session in group.members:
                return group
        return None

    def _leave_room(self, session: Subscriber, symbol: str) -> None:
        """Out of the room itself or out of its group (which goes once empty)."""
        room = self.rooms[symbol]
        if session in room:
            room.discard(session)
            return
        group = self.group_of(session, symbol)
        if group is None:
            return
        # Only a member of the group (a ThrottledSubscriber) is found in it.
        group.members.discard(cast(ThrottledSubscriber, session))
        if not group.members:
            group.close()
            room.discard(group)
            groups = self.groups[symbol]
            del groups[group.period_ms]
            if not groups:
                del self.groups[symbol]

    def retune(
        self, session: ThrottledSubscriber, symbol: str, throttle_ms: int | None
    ) -> tuple[Update | None, int | None]:
        """Serve a joined `session` at another period (None: unthrottled), at once.

        Returns what the session must do to stay exactly-once and in order:
        an update its old group held for it that the new place will not send
        (deliver it now), and a floor: the new group may hold an update the
        session already got, so updates at or before the floor are not for it.
        """
        old = self.group_of(session, symbol)
        if (old.period_ms if old is not None else None) == throttle_ms or symbol not in self.rooms:
            return None, None
        held = old.take_pending(symbol) if old is not None else None
        self._leave_room(session, symbol)
        if throttle_ms is None:
            self.rooms[symbol].add(session)
            return held, None
        target = self._group(symbol, throttle_ms)
        target.members.add(session)
        waiting = target.take_pending(symbol)
        if held is not None and waiting is not None:
            return None, None  # both hold the newest update, which the session has not had
        return held, self.position

    # -- wildcard ----------------------------------------------------------------

    async def join_wildcard(self, member: WildcardMember, throttle_ms: int | None = None) -> int:
        """Receive every symbol's updates (throttled: batches of `*`); returns
        once the broker feeds every symbol, with the stream position it was
        taken at (before any await)."""
        position = self.position
        if throttle_ms is None:
            self.wildcard.add(member)
        else:
            group = self.wildcard_groups.get(throttle_ms)
            if group is None:
                group = self.wildcard_groups[throttle_ms] = ThrottleGroup(
                    BATCH_SYMBOL, throttle_ms, self._count_emitted
                )
                self.wildcard.add(group)
            group.members.add(member)
        await self.broker.subscribe_all()
        return position

    async def leave_wildcard(self, member: WildcardMember) -> None:
        """Stop receiving every symbol; the broker stops feeding them when no one wants them."""
        self.wildcard.discard(member)
        for period, group in list(self.wildcard_groups.items()):
            if member in group.members:
                group.members.discard(member)
                if not group.members:
                    group.close()
                    del self.wildcard_groups[period]
                    self.wildcard.discard(group)
        if not self.wildcard:
            # Called before any await: a join racing this leave sees the same state.
            await self.broker.unsubscribe_all()

    @property
    def subscription_count(self) -> int:
        groups = [g for by_period in self.groups.values() for g in by_period.values()]
        wildcard = sum(1 for m in self.wildcard if not isinstance(m, ThrottleGroup))
        return (
            sum(len(room) for room in self.rooms.values())
            - len(groups)
            + sum(len(g) for g in groups)
            + wildcard
            + sum(len(g) for g in self.wildcard_groups.values())
        )
