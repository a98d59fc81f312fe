"""A connection's `*` subscription: every symbol, and where each symbol's stream starts.

It is ordered like a Gate (gate.py), by stream position: while the snapshots
of every priced symbol are read, live updates are held; once they are known
with the position each was read at, the held updates after their symbol's
position follow them and the others (covered) are dropped. Throttled, the
client gets `stockUpdates` batches instead: the snapshots in chunks, then one
batch per period.
"""

from __future__ import annotations

from .gate import Gates
from .updates import Update

# Snapshots per `stockUpdates` message when a throttled `*` subscription starts.
SNAPSHOT_CHUNK = 500


class WildcardStream:
    __slots__ = ("echoes", "floors", "held", "throttle_ms")

    def __init__(self, throttle_ms: int | None) -> None:
        self.throttle_ms = throttle_ms
        self.held: list[Update] | None = []
        # Unthrottled: a third party's SET read before its PUBLISH (see Gate).
        self.echoes = Gates()
        # Throttled: the first batch after the start may still carry updates
        # its symbol's snapshot covers (the group collected them before).
        self.floors: dict[str, int] | None = None

    def offer(self, update: Update) -> Update | None:
        """What to send for a live update or batch: itself, a batch without
        what the snapshots covered, or nothing (held or covered)."""
        if self.held is not None:
            self.held.append(update)
            return None
        if update.parts is not None:
            floors, self.floors = self.floors, None
            return update if not floors else _after(update, floors)
        if self.echoes and not self.echoes.offer(update):
            return None
        return update

    def release(self, snapshots: dict[str, Update], positions: dict[str, int]) -> list[Update]:
        """Start with `snapshots`, read at `positions`: what to send now, in order."""
        held, self.held = self.held or [], None
        if self.throttle_ms is not None:
            firsts = list(snapshots.values())
            out = [Update.batch(firsts[i : i + SNAPSHOT_CHUNK]) for i in range(0, len(firsts), SNAPSHOT_CHUNK)]
            for batch in held:
                kept = _after(batch, positions)
                if kept is not None:
                    out.append(kept)
            self.floors = positions
            return out
        out = list(snapshots.values())
        for symbol, snapshot in snapshots.items():
            self.echoes.expect_echo(symbol, [snapshot])
        for update in held:
            position = positions.get(update.symbol)
            if (position is None or update.pos > position) and self.offer(update) is not None:
                out.append(update)
        return out


def _after(batch: Update, positions: dict[str, int]) -> Update | None:
    """`batch` without the updates at or before their symbol's position."""
    parts = batch.parts or []
    kept = [u for u in parts if u.pos > positions.get(u.symbol, -1)]
    if len(kept) == len(parts):
        return batch
    return Update.batch(kept) if kept else None
