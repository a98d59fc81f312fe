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

    def release(self, first: list[Update]) -> list[Update]:
        """Open with `first` (snapshot or replay): what to send, in order."""
        held, self.held = self.held or [], None
        if not first:
            return held
        last = first[-1]
        newer = [u for u in held if u.is_newer_than(last)]
        if not newer:
            self.floor = last
            self.floor_until = time.monotonic() + self.FLOOR_SECONDS
        return first + newer

    @property
    def open(self) -> bool:
        return self.held is None and self.floor is None
