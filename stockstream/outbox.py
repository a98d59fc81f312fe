"""Per-connection outbound queues and the writer that flushes them.

Everything a connection is sent goes through its Outbox, in order. Pushing is
cheap (a dict insert); the FlushScheduler writes every outbox that has
something pending once per event-loop turn, in one write call per connection,
so a burst of updates costs one system call per client rather than one per
update. A client whose socket backs up is "behind": its queued updates are
conflated to the latest per symbol, and if it stays behind too long it is
dropped, so memory stays bounded and nobody else waits for it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable, Collection, Protocol, Union

from .shared_events import SharedEvent
from .updates import Update

Item = Union[Update, str, SharedEvent]
RECHECK_BLOCKED = 0.02
MAX_DELAY_SAMPLES = 10000
DELAY_SAMPLE_EVERY = 16
# The longest pause between two flushes, however long the last one took.
MAX_FLUSH_PAUSE = 0.02


class Sink(Protocol):
    """A connection's way out: frames items and hands them to the socket."""

    def send(self, items: Collection[Item], limit: int | None) -> bool:
        """Frame and write items (updates, or message texts) in order, unless
        more than `limit` bytes already wait to be sent: then write nothing
        and return False. A closed connection accepts (and drops) everything."""

    def backlog(self) -> int:
        """Bytes written but not yet accepted by the kernel."""


class DeliveryStats:
    """Counters of the delivery path, read by the metrics collector."""

    __slots__ = ("writes", "conflated", "dropped", "slow_disconnects", "delays")

    def __init__(self) -> None:
        self.dropped = 0  # queued messages discarded because their client went away
        self.writes = 0
        self.conflated = 0
        self.slow_disconnects = 0
        self.delays: list[float] = []  # publish-to-send seconds, drained by the collector


class Outbox:
    __slots__ = (
        "_sink",
        "_scheduler",
        "_limit",
        "_slow_after",
        "_on_slow",
        "_pending",
        "_n",
        "_scheduled",
        "behind_since",
        "given_up",
        "closed",
    )

    def __init__(
        self, sink: Sink, scheduler: "FlushScheduler", limit: int, slow_after: float, on_slow: Callable[[], None]
    ) -> None:
        self._sink = sink
        self._scheduler = scheduler
        self._limit = limit
        self._slow_after = slow_after
        self._on_slow = on_slow
        # Insertion-ordered; updates are keyed by symbol while behind, so a
        # newer price replaces the queued one in place (order kept per symbol).
        self._pending: dict[object, Item] = {}
        self._n = 0
        self._scheduled = False
        self.behind_since: float | None = None
        # Set once the client was found too slow: it is being disconnected,
        # and nothing more is queued for it (nor is it counted again).
        self.given_up = False
        self.closed = False

    def push_update(self, update: Update) -> None:
        if self.given_up:
            self._scheduler.stats.dropped += 1
            return
        if self.behind_since is None:
            self._n += 1
            self._pending[self._n] = update
        else:
            previous = self._pending.get(update.symbol)
            if previous is not None:
                self._scheduler.stats.conflated += 1
                update = _conflated(previous, update)
            self._pending[update.symbol] = update
        if not self._scheduled:
            self._scheduled = True
            self._scheduler.mark(self)

    def push(self, message: str | SharedEvent) -> None:
        """Queue a message text (acks, errors, replies) or an event framed
        once for many clients (a candle); never conflated."""
        self._n += 1
        self._pending[self._n] = message
        if not self._scheduled:
            self._scheduled = True
            self._scheduler.mark(self)

    def drop_symbol(self, symbol: str) -> None:
        """Forget queued updates of a symbol (it was unsubscribed)."""
        stale = [k for k, v in self._pending.items() if type(v) is Update and v.symbol == symbol]
        for key in stale:
            del self._pending[key]

    def drop_updates(self, unwanted: Callable[[Update], bool]) -> None:
        """Forget queued updates that are `unwanted` (a subscription ended)."""
        stale = [k for k, v in self._pending.items() if type(v) is Update and unwanted(v)]
        for key in stale:
            del self._pending[key]

    def flush(self) -> bool:
        """Write what is pending unless the socket is backed up; True if still pending."""
        self._scheduled = False
        pending = self._pending
        if self.closed or self.given_up or not pending:
            return False
        if self._sink.send(pending.values(), self._limit):
            self._scheduler.written(pending)
            pending.clear()
            self.behind_since = None
            return False
        if self.behind_since is None:
            self.behind_since = time.monotonic()
            self._rekey_by_symbol()
        elif time.monotonic() - self.behind_since > self._slow_after:
            self.given_up = True
            self._scheduler.stats.slow_disconnects += 1
            self._on_slow()
            return False
        return True

    def flush_final(self, last: str | None = None, *, drop_pending: bool = False) -> None:
        """Before a disconnect: write what is queued (or drop it), then `last`,
        past the backlog limit."""
        if drop_pending:
            self._scheduler.stats.dropped += len(self._pending)
            self._pending.clear()
        if last is not None:
            self._n += 1
            self._pending[self._n] = last
        if self._pending and not self.closed:
            self._sink.send(self._pending.values(), None)
        self._pending.clear()

    def pending(self) -> int:
        return len(self._pending)

    def close(self) -> None:
        self.closed = True
        self._scheduler.stats.dropped += len(self._pending)
        self._pending.clear()

    def _rekey_by_symbol(self) -> None:
        rekeyed: dict[object, Item] = {}
        for key, item in self._pending.items():
            if type(item) is Update:
                previous = rekeyed.get(item.symbol)
                if previous is not None:
                    self._scheduler.stats.conflated += 1
                    item = _conflated(previous, item)
                rekeyed[item.symbol] = item
            else:
                rekeyed[key] = item
        self._pending = rekeyed


def _conflated(previous: Item, newer: Update) -> Update:
    """What replaces a queued update: the newer one; for `stockUpdates` batches,
    one batch with the newest update of every symbol of both."""
    if newer.parts is None or type(previous) is not Update or previous.parts is None:
        return newer
    latest = {u.symbol: u for u in previous.parts}
    latest.update((u.symbol, u) for u in newer.parts)
    return Update.batch(list(latest.values()))


class FlushScheduler:
    """Flushes marked outboxes at the end of the current event-loop turn.

    Under load it waits after a flush as long as that flush took before the
    next: writing then takes at most about half the time, and whatever arrives
    meanwhile goes out together, one write per client for several updates.
    Light load flushes at once (a flush of a few clients takes microseconds).
    A `write_delay` makes every pause at least that long: fewer writes for
    clients of many symbols, each update up to that much later.
    """

    def __init__(self, write_delay: float = 0.0) -> None:
        self._write_delay = write_delay
        self.stats = DeliveryStats()
        self._marked: list[Outbox] = []
        self._blocked: set[Outbox] = set()
        self._handle: asyncio.Handle | None = None
        self._recheck: asyncio.TimerHandle | None = None
        self._next_flush = 0.0

    def mark(self, outbox: Outbox) -> None:
        self._marked.append(outbox)
        if self._handle is None:
            loop = asyncio.get_running_loop()
            if self._next_flush > loop.time():
                self._handle = loop.call_at(self._next_flush, self.flush)
            else:
                self._handle = loop.call_soon(self.flush)

    def written(self, pending: dict[object, Item]) -> None:
        stats = self.stats
        stats.writes += 1
        # One delay sample every few writes is plenty for the histogram, and
        # keeps the per-update cost of the hot path at zero.
        if not stats.writes % DELAY_SAMPLE_EVERY and len(stats.delays) < MAX_DELAY_SAMPLES:
            for item in pending.values():
                if type(item) is Update:
                    stats.delays.append(time.time() - item.timestamp / 1000)
                    break

    def flush(self) -> None:
        self._handle = None
        loop = asyncio.get_running_loop()
        started = loop.time()
        marked, self._marked = self._marked, []
        for outbox in marked:
            if outbox.flush():
                self._blocked.add(outbox)
        finished = loop.time()
        self._next_flush = finished + max(self._write_delay, min(MAX_FLUSH_PAUSE, finished - started))
        if self._blocked and self._recheck is None:
            self._recheck = asyncio.get_running_loop().call_later(RECHECK_BLOCKED, self._flush_blocked)

    def _flush_blocked(self) -> None:
        self._recheck = None
        blocked, self._blocked = self._blocked, set()
        for outbox in blocked:
            if outbox.flush():
                self._blocked.add(outbox)
        if self._blocked:
            self._recheck = asyncio.get_running_loop().call_later(RECHECK_BLOCKED, self._flush_blocked)

    def flush_now(self) -> None:
        """Flush everything marked, synchronously (shutdown and tests)."""
        if self._handle is not None:
            self._handle.cancel()
        self.flush()

    def close(self) -> None:
        for handle in (self._handle, self._recheck):
            if handle is not None:
                handle.cancel()
        self._handle = self._recheck = None
        self._marked.clear()
        self._blocked.clear()
