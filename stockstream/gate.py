"""Gates: where a symbol's stream (re)starts, ordered against its first updates.

Ordering is by stream position (Hub.position), never by timestamp or timing:
the first updates (a snapshot or a replay) are read at a known position, so a
live update is covered by them exactly when its position is at or before it.
"""

from __future__ import annotations

from .updates import Update


class Gate:
    """Orders the start of one symbol's stream for one client.

    While the first updates are read, live updates are held. Once they are
    known with the `position` they were read at, the held updates received
    after that position follow them and the others (covered) are dropped.

    `echo`: a publisher that writes the snapshot (SET) and then announces it
    (PUBLISH) in two commands can be read between the two; its announcement
    then comes after the read's position although the read already holds it.
    The first live update after the position is dropped when it is
    byte-identical to the last first update; nothing else ever is.
    """

    __slots__ = ("held", "echo")

    def __init__(self) -> None:
        self.held: list[Update] | None = []
        self.echo: bytes | None = None

    def offer(self, update: Update) -> bool:
        """Whether `update` may go out now; held or dropped otherwise."""
        if self.held is not None:
            self.held.append(update)
            return False
        if self.echo is not None:
            echo, self.echo = self.echo, None
            return update.raw != echo
        return True

    def release(self, first: list[Update], position: int, echo: bytes | None = None) -> list[Update]:
        """Open with `first`, read at `position`: what to send now, in order."""
        held, self.held = self.held or [], None
        self.echo = echo
        out = list(first)
        for update in held:
            if update.pos > position and self.offer(update):
                out.append(update)
        return out

    @property
    def open(self) -> bool:
        """Nothing held and nothing left to check: the gate can go."""
        return self.held is None and self.echo is None


def echo_of(first: list[Update]) -> bytes | None:
    """The echo to expect after `first`: only an update without `seq` (written by
    a third party with SET, then PUBLISH) can be announced after it was read;
    stockstream's publisher writes and announces in one atomic step."""
    if first and first[-1].seq is None:
        return first[-1].raw
    return None


class Gates(dict[str, Gate]):
    """The gates of one owner (a session, or the hub), by symbol.

    A dict so that `if gates:` (asked once per delivery on the hot path)
    stays a C-level check rather than a Python call.
    """

    __slots__ = ()

    def hold(self, symbol: str) -> None:
        """Hold `symbol`'s live updates until release()."""
        self[symbol] = Gate()

    def offer(self, update: Update) -> bool:
        """Whether `update` may go out now (always, for a symbol without a gate)."""
        gate = self.get(update.symbol)
        if gate is None:
            return True
        passed = gate.offer(update)
        if gate.open:
            del self[update.symbol]
        return passed

    def release(self, symbol: str, first: list[Update], position: int) -> list[Update]:
        """Open `symbol`'s gate with `first`, read at `position`: what to send, in order.
        Without a gate (dropped meanwhile) nothing is sent."""
        gate = self.get(symbol)
        if gate is None:
            return []
        out = gate.release(first, position, echo_of(first))
        if gate.open:
            del self[symbol]
        return out

    def expect_echo(self, symbol: str, first: list[Update]) -> None:
        """With no gate held: drop the next update if it echoes `first` (a resync)."""
        echo = echo_of(first)
        if echo is not None and symbol not in self:
            gate = self[symbol] = Gate()
            gate.held = None
            gate.echo = echo

    def drop(self, symbol: str) -> None:
        self.pop(symbol, None)
