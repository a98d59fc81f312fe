"""Live candles: one aggregator per symbol and interval on this instance.

A CandleStream is a member of its symbol's hub room, so it sees each update
of the stream clients get as `stockUpdate` exactly once, whatever number of
clients follow the candle. It starts from the stored updates of the current
period, read with the same bucketing as `/api/candles` (candles.py), so the
first candle a client gets equals that endpoint's; then each update moves
the candle, and its members are sent `candle` events: at most one per
`min_interval` while it changes (the latest state, trailing edge included),
and one with `closed: true` when the period ends. Each event is encoded once
for all members.

Candles follow the updates' timestamps, not the server clock: an update of a
later period closes the current candle and opens the next one. The server
clock only closes a candle nobody else closes, CLOSE_GRACE_MS after its end,
so that an update stamped just before the boundary and still in flight is
counted. An update of a period already closed is late: it is left out of the
live candles (the closed candle was final), while `/api/candles` has it.
When the hub's feed was interrupted (a resync), the current period is read
again from history, so updates this instance missed meanwhile count too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from .broker import BackendUnavailable, Broker
from .candles import (
    LIVE_INTERVALS_MS,
    MAX_SCANNED_UPDATES,
    Candle,
    Tick,
    bucket_start,
    volume_of,
)
from .gate import Gate, echo_of
from .shared_events import SharedEvent
from .updates import Update

if TYPE_CHECKING:
    # Only named: a stream is handed its hub, so the import tower stays as low as the hub's own.
    from .hub import Hub

log = logging.getLogger("stockstream.candles")

CLOSE_GRACE_MS = 100

StreamKey = tuple[str, str]  # (symbol, interval)


class CandleCounts:
    """Figures of every stream of an instance, past ones included (read by /metrics)."""

    __slots__ = ("events",)

    def __init__(self) -> None:
        self.events = 0  # candle events handed to clients, one per event and client


class CandleMember(Protocol):
    """What a candle stream sends to: anything that queues a shared event."""

    def deliver_event(self, event: SharedEvent) -> None: ...


def now_ms() -> int:
    return int(time.time() * 1000)


class CandleBuilder:
    """The current candle of one symbol at one interval, built update by update.

    Pure state: the caller decides when to tell anyone (see CandleStream).
    """

    __slots__ = ("_last_raw", "candle", "closed_until", "interval_ms")

    def __init__(self, interval_ms: int) -> None:
        self.interval_ms = interval_ms
        self.candle: Candle | None = None
        # Periods starting before this are over: their updates are late.
        self.closed_until = 0
        self._last_raw: bytes | None = None

    def add(self, update: Update) -> tuple[Candle | None, bool]:
        """Count one update: (the candle it closed, or None; whether the current candle changed)."""
        start = bucket_start(update.timestamp, self.interval_ms)
        if start < self.closed_until or update.raw == self._last_raw:
            # Late (its period is over), or the update counted last sent
            # again: after a feed interruption the hub re-sends each symbol's
            # latest update, usually that one. (Comparing seqs instead would
            # stop the candle when a restarted backend numbers from 1 again.)
            return None, False
        self._last_raw = update.raw
        tick = Tick(update.timestamp, update.price, volume_of(update))
        closed = None
        current = self.candle
        if current is not None and start > current.start:
            closed = self.close()
            current = None
        if current is None:
            self.candle = Candle(start, tick.price, tick.price, tick.price, tick.price, 1, tick.volume)
        else:
            current.add(tick)
        return closed, True

    def close(self) -> Candle | None:
        """End the current candle (its period is over); it is returned, final."""
        closed, self.candle = self.candle, None
        if closed is not None:
            self.closed_until = closed.start + self.interval_ms
        return closed

    def close_due(self, at_ms: int) -> Candle | None:
        """End the current candle if its period, and the grace after it, are over at `at_ms`."""
        candle = self.candle
        if candle is not None and at_ms >= candle.start + self.interval_ms + CLOSE_GRACE_MS:
            return self.close()
        return None


def candle_body(symbol: str, interval: str, candle: Candle, closed: bool) -> dict[str, Any]:
    """The `candle` event's object; `volume` is null when no update carried one."""
    return {
        "symbol": symbol,
        "interval": interval,
        "start": candle.start,
        "open": candle.open,
        "high": candle.high,
        "low": candle.low,
        "close": candle.close,
        "volume": candle.volume,
        "count": candle.count,
        "closed": closed,
    }


class CandleStream:
    """The live candle of one (symbol, interval) for every member on this instance."""

    def __init__(self, key: StreamKey, hub: Hub, broker: Broker, min_interval: float, counts: CandleCounts) -> None:
        self.key = key
        self.symbol, self.interval = key
        self._hub = hub
        self._broker = broker
        self._min_interval = min_interval
        self.builder = CandleBuilder(LIVE_INTERVALS_MS[self.interval])
        self.members: set[CandleMember] = set()
        # Sessions holding the stream: members, and those waiting for it to load.
        self.refs = 0
        self._counts = counts
        self._gate: Gate | None = Gate()  # holds live updates while history is read
        self._dirty = False
        self._last_emit = float("-inf")
        self._latest: SharedEvent | None = None  # the event of the current state, once sent
        self._flush: asyncio.TimerHandle | None = None
        self._boundary: asyncio.TimerHandle | None = None
        self._stopped = False
        self._rereading: asyncio.Future[None] | None = None
        self.loading: asyncio.Task[None] = asyncio.ensure_future(self._load())
        # Read by whoever waits for it; a load nobody waits for any more must not log as unread.
        self.loading.add_done_callback(lambda task: task.cancelled() or task.exception())

    @property
    def failed(self) -> bool:
        return self.loading.done() and (self.loading.cancelled() or self.loading.exception() is not None)

    # -- start: the current period's stored updates, then live ones -----------------------------

    async def _load(self) -> None:
        await self._hub.join(self, [self.symbol])
        start = bucket_start(now_ms(), self.builder.interval_ms)
        # The stream starts with the current period: an earlier one's updates
        # still on their way would make a candle of that period from only them.
        self.builder.closed_until = start
        replay = await self._broker.replay_at(self.symbol, since_ms=start - 1)
        gate = self._gate
        assert gate is not None
        if replay.complete:
            first = gate.release(replay.updates, replay.position, echo_of(replay.updates))
        else:
            first = await self._stored_then_held(start, gate)
        if gate.open:
            self._gate = None
        for update in first:
            self._count(update)

    def resync(self) -> None:
        """The feed was interrupted: updates may have been missed, so the
        current period is read again from history (live updates are held
        meanwhile, as when the stream started)."""
        if self._stopped or self._gate is not None or not self.loading.done() or self.failed:
            return  # starting (its own read follows the interruption), or reading already
        self._gate = Gate()
        self._rereading = asyncio.ensure_future(self._reread())

    async def _reread(self) -> None:
        gate = self._gate
        assert gate is not None
        current = self.builder.candle
        start = current.start if current is not None else bucket_start(now_ms(), self.builder.interval_ms)
        try:
            replay = await self._broker.replay_at(self.symbol, since_ms=start - 1)
            if replay.complete:
                first = gate.release(replay.updates, replay.position, echo_of(replay.updates))
            else:
                first = await self._stored_then_held(start, gate)
        except Exception:
            log.warning(
                "could not read %s's history again after a resync; its %s candle may lack updates",
                self.symbol,
                self.interval,
                exc_info=True,
            )
            first = gate.release([], -1)
        else:
            # The candle of the period is built again from all its updates.
            if self.builder.candle is current:
                self.builder = CandleBuilder(self.builder.interval_ms)
                self.builder.closed_until = start
        if gate.open and self._gate is gate:
            self._gate = None
        for update in first:
            self._count(update)

    async def _stored_then_held(self, start: int, gate: Gate) -> list[Update]:
        # History could not say where it stands against the live stream (it
        # holds more than one read, or a third-party update is not in it
        # yet): updates held meanwhile that the read also has count once.
        stored = await self._broker.history(self.symbol, start, None, MAX_SCANNED_UPDATES)
        seen = {u.seq if u.seq is not None else u.raw for u in stored}
        held = gate.held or []
        gate.held = None
        return stored + [u for u in held if (u.seq if u.seq is not None else u.raw) not in seen]

    # -- the hub's Subscriber --------------------------------------------------------------

    def deliver(self, update: Update) -> None:
        gate = self._gate
        if gate is not None:
            passed = gate.offer(update)
            if gate.open:
                self._gate = None
            if not passed:
                return
        self._count(update)

    def _count(self, update: Update) -> None:
        closed, changed = self.builder.add(update)
        if closed is not None:
            self._send_closed(closed)
        if changed:
            self._dirty = True
            self._latest = None
            if closed is not None or self._boundary is None:
                self._watch_boundary()
            self._changed()

    # -- telling the members ---------------------------------------------------------------

    def _changed(self) -> None:
        if self._flush is not None or not self.loading.done():
            return  # a trailing send is due, or members get the state once loaded
        loop = asyncio.get_running_loop()
        wait = self._last_emit + self._min_interval - loop.time()
        if wait <= 0:
            self._send_current()
        else:
            self._flush = loop.call_later(wait, self._send_current)

    def _send_current(self) -> None:
        self._flush = None
        candle = self.builder.candle
        if candle is None or not self._dirty or self._stopped:
            return
        self._dirty = False
        self._latest = self._emit(candle, closed=False)

    def _send_closed(self, candle: Candle) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        self._dirty = False
        self._latest = None
        if self.loading.done():
            self._emit(candle, closed=True)

    def _emit(self, candle: Candle, closed: bool) -> SharedEvent:
        event = SharedEvent("candle", orjson.dumps(candle_body(self.symbol, self.interval, candle, closed)))
        self._last_emit = asyncio.get_running_loop().time()
        for member in self.members:
            member.deliver_event(event)
        self._counts.events += len(self.members)
        return event

    def _watch_boundary(self) -> None:
        """Close the current candle at its end, should no later update do it."""
        if self._boundary is not None:
            self._boundary.cancel()
            self._boundary = None
        candle = self.builder.candle
        if candle is None or self._stopped:
            return
        due_ms = candle.start + self.builder.interval_ms + CLOSE_GRACE_MS
        self._boundary = asyncio.get_running_loop().call_later(max(0.0, (due_ms - now_ms()) / 1000), self._on_boundary)

    def _on_boundary(self) -> None:
        self._boundary = None
        closed = self.builder.close_due(now_ms())
        if closed is not None:
            self._send_closed(closed)
        elif self.builder.candle is not None:
            self._watch_boundary()  # woken early (the clock stepped): look again

    # -- members -----------------------------------------------------------------------------

    def add(self, member: CandleMember) -> None:
        """A member joins: it is sent the current candle (if its period had
        updates), then every change. Call once the stream loaded."""
        self.members.add(member)
        candle = self.builder.candle
        if candle is None:
            return
        if self._latest is None or self._dirty:
            snapshot = SharedEvent("candle", orjson.dumps(candle_body(self.symbol, self.interval, candle, False)))
        else:
            snapshot = self._latest
        member.deliver_event(snapshot)
        self._counts.events += 1

    def remove(self, member: CandleMember) -> None:
        self.members.discard(member)

    async def stop(self) -> None:
        self._stopped = True
        for handle in (self._flush, self._boundary):
            if handle is not None:
                handle.cancel()
        self._flush = self._boundary = None
        for task in (self.loading, self._rereading):
            if task is not None and not task.done():
                task.cancel()
        await self._hub.leave(self, [self.symbol])


class CandleStreams:
    """Every live candle stream of this instance, by (symbol, interval)."""

    def __init__(self, hub: Hub, broker: Broker, min_interval_ms: int) -> None:
        self._hub = hub
        self._broker = broker
        self._min_interval = min_interval_ms / 1000
        self._streams: dict[StreamKey, CandleStream] = {}
        self.counts = CandleCounts()
        hub.resync_listeners.append(self.resync)

    def acquire(self, symbol: str, interval: str) -> CandleStream:
        """The stream of (symbol, interval), started if new; the caller holds it until release()."""
        key = (symbol, interval)
        stream = self._streams.get(key)
        if stream is None or stream.failed:
            # A stream whose start failed goes away once its holders release it.
            stream = self._streams[key] = CandleStream(key, self._hub, self._broker, self._min_interval, self.counts)
        stream.refs += 1
        return stream

    async def release(self, stream: CandleStream) -> None:
        stream.refs -= 1
        if stream.refs > 0:
            return
        if self._streams.get(stream.key) is stream:
            del self._streams[stream.key]
        await stream.stop()

    def resync(self, symbols: Iterable[str]) -> None:
        """The hub's feed of these symbols was interrupted and is back."""
        wanted = set(symbols)
        for (symbol, _), stream in list(self._streams.items()):
            if symbol in wanted:
                stream.resync()

    def __len__(self) -> int:
        return len(self._streams)


class CandleFollows:
    """The live candle streams one connection follows, by (symbol, interval)."""

    __slots__ = ("_member", "_registry", "_streams")

    def __init__(self, registry: CandleStreams, member: CandleMember) -> None:
        self._registry = registry
        self._member = member
        self._streams: dict[StreamKey, CandleStream] = {}

    def __len__(self) -> int:
        return len(self._streams)

    def __contains__(self, key: object) -> bool:
        return key in self._streams

    def keys(self) -> list[StreamKey]:
        return list(self._streams)

    def symbols(self, interval: str) -> list[str]:
        """The symbols followed at `interval`, sorted."""
        return sorted(symbol for symbol, each in self._streams if each == interval)

    async def start(self, symbols: list[str], interval: str, timeout: float) -> Callable[[], None]:
        """Hold the streams of these symbols and wait until each has loaded;
        the function returned makes the member join them (each sends its
        current candle), to be called once the request is answered.
        BackendUnavailable (nothing held) when they do not load in time."""
        streams = []
        for symbol in symbols:
            stream = self._streams[(symbol, interval)] = self._registry.acquire(symbol, interval)
            streams.append(stream)
        try:
            await asyncio.wait_for(asyncio.gather(*(asyncio.shield(s.loading) for s in streams)), timeout)
        except BaseException as exc:
            await self.drop([(symbol, interval) for symbol in symbols])
            if isinstance(exc, (BackendUnavailable, asyncio.TimeoutError)):
                raise BackendUnavailable("candle stream did not start in time") from None
            raise

        def join() -> None:
            for stream in streams:
                stream.add(self._member)

        return join

    async def drop(self, keys: Iterable[StreamKey]) -> None:
        """Stop following these streams (the member hears nothing more of them)."""
        for key in list(keys):
            stream = self._streams.pop(key, None)
            if stream is not None:
                stream.remove(self._member)
                await self._registry.release(stream)
