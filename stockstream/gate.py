"""Gates: where a symbol's stream (re)starts, ordered against its snapshot."""
from __future__ import annotations

import time

from .updates import Update


class Gate:
    """Orders the start of a symbol's stream for one client against its snapshot.

    While a subscribe fetches the snapshot (or the history to replay), live
    updates are held here. Once the first updates are known, those held that
    are newer follow them, the rest are dropped, and for a short while after
    the gate keeps dropping live updates not newer than what was sent: the
    Redis subscription and the snapshot read race by at most that long, and a
    publisher whose `seq` restarted must not be muted for longer.
    """

    __slots__ = ("held", "floor", "floor_until")

    FLOOR_SECONDS = 2.0

    def __init__(self) -> None:
        self.held: list[Update] | None = []
        self.floor: Update | None = None
        self.floor_until = 0.0

    def offer(self, update: Update) -> bool:
        """Whether `update` may go out now; held or dropped otherwise."""
        if self.held is not None:
            self.held.append(update)
            return False
        if (self.floor is not None and not update.is_newer_than(self.floor)
                and time.monotonic() < self.floor_until):
            return False
        self.floor = None
        return True

    def release(self, first: list[Update], point: Update | None = None) -> list[Update]:
        """Open with `first` (snapshot or replay): what to send, in order.

        `point` stands for the last update a resuming client already has
        (see resume_point): with nothing to replay after it, held or in-flight
        updates not newer than it are dropped all the same.
        """
        held, self.held = self.held or [], None
        last = first[-1] if first else point
        if last is None:
            return held
        newer = [u for u in held if u.is_newer_than(last)]
        if not newer:
            self.floor = last
            self.floor_until = time.monotonic() + self.FLOOR_SECONDS
        return first + newer

    @property
    def open(self) -> bool:
        return self.held is None and self.floor is None


def resume_point(symbol: str, since_ms: int | None, since_seq: int | None) -> Update | None:
    """A stand-in for the last update a client resuming from `since_seq` (or
    `since_ms`) has: Update.is_newer_than compares by seq, else by timestamp."""
    if since_seq is not None:
        return Update(symbol, 0.0, 0, since_seq, b"")
    if since_ms is not None:
        return Update(symbol, 0.0, since_ms + 1, None, b"")
    return None
