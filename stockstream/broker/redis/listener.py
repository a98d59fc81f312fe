"""The listener over one Redis: one pub/sub connection per instance.

It carries exactly the channels of symbols with local subscribers, the
instance's own listener channel (subscribed even with no symbols, so
readiness, "the listener is subscribed", means the same with or without
clients; on one Redis read markers travel on it, see markers.py), and the
`stock:*` pattern while some client wants every symbol. After an
interruption it reads every wanted symbol's snapshot with a marker and hands
them over (`UpdateSink.on_resync`) before the live updates that follow.
shards.py is its cluster variant: a reader per master.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable

from ...backoff import Backoff
from ...config import Settings, redact_url
from ...updates import InvalidUpdate, Update, parse_update
from .. import UpdateSink
from ..clients import listener_client
from ..keys import KeyLayout
from ..malformed import MalformedLog
from .discovery import SymbolDiscovery
from .errors import REDIS_FAILURES
from .markers import Markers

if TYPE_CHECKING:  # annotations only: keeps the import chain short
    from .commands import CommandStore

log = logging.getLogger("stockstream.redis")

# How long a pub/sub connection may stay silent before it is probed, and
# how long after a probe without answer it counts as dead.
PROBE_AFTER = 5.0
DEAD_AFTER = 15.0
READ_BURST = 64


class Listener:
    """Feeds an UpdateSink from one pub/sub connection, reconnecting and resynchronising."""

    task_name = "stockstream-redis-listener"

    def __init__(
        self,
        url: str,
        settings: Settings,
        keys: KeyLayout,
        markers: Markers,
        store: CommandStore,
        malformed: MalformedLog,
    ) -> None:
        self._url = url
        self._settings = settings
        self.keys = keys
        self.markers = markers
        self._store = store
        self._redis: Any = store.client
        self.malformed = malformed
        self._sink: UpdateSink | None = None
        self._task: asyncio.Task[None] | None = None
        self._pubsub: Any = None
        self._wanted: set[str] = set()
        # Every symbol wanted too (a wildcard subscription: PSUBSCRIBE), and
        # whether the pattern is live on the current connection. While it is,
        # each update arrives twice (as a message of its channel and as a
        # pmessage): the pmessage is the one used. Both switches happen where
        # the (un)subscribe confirmation sits in the stream, so no update is
        # lost or doubled around them.
        self._all = False
        self._pattern_live = False
        # A cluster has no patterns: its `*` is the symbols found by scanning
        # (see discovery.py), kept subscribed apart from the rooms' own.
        self._explicit: set[str] = set()
        self._discovery: SymbolDiscovery | None = None
        self._confirming: dict[str, asyncio.Future[None]] = {}
        self._ready = False
        self._last_heard = 0.0
        # The listener's reconnections (each followed by a resync or a resume).
        self.reconnects = 0

    @property
    def ready(self) -> bool:
        return self._ready

    def start(self, sink: UpdateSink) -> None:
        self._sink = sink
        self._task = asyncio.create_task(self._listen_forever(), name=self.task_name)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._discovery is not None:
            await self._discovery.stop()
            self._discovery = None
        await self._close_pubsub()

    def note_read(self, symbol: str, update: Update | None) -> None:
        """A read placed in the stream gave `symbol`'s subscribers `update`
        (the shard listener resumes from it; one connection needs nothing)."""

    async def heard_first_update(self, symbol: str) -> None:
        """This instance published `symbol`'s first update: a `*` discovery subscribes it at once."""
        if self._discovery is not None:
            await self._discovery.announce(symbol)

    async def subscribe(self, symbols: Iterable[str]) -> None:
        symbols = list(symbols)
        self._explicit.update(symbols)
        await self._subscribe_channels(symbols)

    async def _subscribe_channels(self, symbols: Iterable[str]) -> None:
        waiting = []
        new = []
        for symbol in symbols:
            channel = self.keys.channel(symbol)
            if symbol not in self._wanted:
                self._wanted.add(symbol)
                self._confirming[channel] = asyncio.get_running_loop().create_future()
                new.extend(self._channels_of(symbol))
            if channel in self._confirming:
                waiting.append(self._confirming[channel])
        if new and self._pubsub is not None:
            try:
                await self._pubsub.subscribe(*new)
            except REDIS_FAILURES:
                pass  # the listener reconnects and subscribes everything wanted
        if waiting:
            await asyncio.gather(*(asyncio.shield(f) for f in waiting))

    async def unsubscribe(self, symbols: Iterable[str]) -> None:
        symbols = list(symbols)
        self._explicit.difference_update(symbols)
        found = self._discovery.found if self._discovery is not None else ()
        await self._unsubscribe_channels([s for s in symbols if s not in found])

    async def _unsubscribe_channels(self, symbols: Iterable[str]) -> None:
        channels = []
        for symbol in symbols:
            if symbol in self._wanted:
                self._wanted.discard(symbol)
                channel = self.keys.channel(symbol)
                channels.extend(self._channels_of(symbol))
                future = self._confirming.pop(channel, None)
                if future is not None and not future.done():
                    future.cancel()
        if channels and self._pubsub is not None:
            try:
                await self._pubsub.unsubscribe(*channels)
            except REDIS_FAILURES:
                pass

    async def subscribe_all(self) -> None:
        if self.keys.cluster:
            self._all = True
            if self._discovery is None:
                self._discovery = SymbolDiscovery(
                    self._store.symbols_with_price,
                    self._subscribe_channels,
                    self._settings.wildcard_discovery_interval,
                    self._hear_new_symbols,
                )
            await self._discovery.start()
            return
        pattern = self.keys.every_channel()
        if not self._all:
            self._all = True
            self._confirming[pattern] = asyncio.get_running_loop().create_future()
            if self._pubsub is not None:
                try:
                    await self._pubsub.psubscribe(pattern)
                except REDIS_FAILURES:
                    pass  # the listener reconnects and subscribes the pattern
        waiting = self._confirming.get(pattern)
        if waiting is not None:
            await asyncio.shield(waiting)

    async def unsubscribe_all(self) -> None:
        if not self._all:
            return
        self._all = False
        if self._discovery is not None:
            discovery, self._discovery = self._discovery, None
            found = await discovery.stop()
            await self._unsubscribe_channels([s for s in found if s not in self._explicit])
            return
        future = self._confirming.pop(self.keys.every_channel(), None)
        if future is not None and not future.done():
            future.cancel()
        if self._pubsub is not None:
            try:
                await self._pubsub.punsubscribe(self.keys.every_channel())
            except REDIS_FAILURES:
                pass

    async def _hear_new_symbols(self) -> Any:
        """A pub/sub connection subscribed to the new-symbol announcements."""
        pubsub = listener_client(self._url).pubsub()
        await pubsub.subscribe(self.keys.new_symbols())
        return pubsub

    async def _listen_forever(self) -> None:
        backoff = Backoff(initial=0.1, cap=5.0)
        first = True
        while True:
            try:
                await self._listen(resync=not first)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the listener must outlive any failure
                if self._ready:
                    log.warning("redis listener lost its connection: %s", exc)
                elif first:
                    # Not a bad setting: Redis may just not be up yet. One line says
                    # where it is looked for; the retries of this outage go to debug.
                    log.warning(
                        "cannot reach Redis at REDIS_URL=%s (%s): serving, but not ready"
                        " until it answers; retrying in the background",
                        redact_url(self._url),
                        exc,
                    )
                else:
                    log.debug("redis listener cannot connect: %s", exc)
            first = False
            self._set_ready(False)
            self.markers.fail_all("redis listener disconnected")
            await self._close_pubsub()
            await asyncio.sleep(backoff.next())
            if self._ready:
                backoff.reset()

    async def _listen(self, resync: bool) -> None:
        client = listener_client(self._url)
        self._pubsub = pubsub = client.pubsub()
        wanted = {self.keys.channel(s) for s in self._wanted}
        for channel in wanted:
            if channel not in self._confirming or self._confirming[channel].done():
                self._confirming[channel] = asyncio.get_running_loop().create_future()
        self._last_heard = time.monotonic()
        self._pattern_live = False
        await pubsub.subscribe(*self.markers.listener_channels(), *wanted)
        # What arrives before every channel is confirmed (and, after an
        # interruption, before the resync read's marker) waits, in order.
        early: list[Update | bytes] = []
        pending = set(wanted) | set(self.markers.listener_channels())
        if self._all:
            pattern = self.keys.every_channel()
            if pattern not in self._confirming or self._confirming[pattern].done():
                self._confirming[pattern] = asyncio.get_running_loop().create_future()
            await pubsub.psubscribe(pattern)
            pending.add(pattern)
        while pending:
            message = await self._read(pubsub)
            if message is not None:
                self._route(message, early.append, pending)
        if resync and self._sink is not None:
            self.reconnects += 1
            symbols = sorted(self._wanted)
            if self._all:
                # `*` clients get a fresh snapshot of every priced symbol too.
                priced = await self._store.symbols_with_price(self._settings.wildcard_snapshot_max)
                symbols = sorted(self._wanted.union(priced))
            tokens: list[bytes] = []
            values = await self._store.read_snapshots(symbols, tokens)
            token = tokens[0]
            self.markers.forget(token)  # met here
            while token not in early:
                message = await self._read(pubsub)
                if message is not None:
                    self._route(message, early.append)
            covered = early.index(token)
            # Updates received before the read are covered by its snapshots;
            # other reads' markers among them keep their place.
            for item in early[:covered]:
                if type(item) is bytes:
                    self._deliver(item)
            del early[: covered + 1]
            snapshots = {s: self._store.snapshot(s, raw) for s, raw in zip(symbols, values)}
            self._sink.on_resync(snapshots)
            log.info("redis listener back: %d symbols resynchronised", len(snapshots))
        self._set_ready(True)
        for item in early:
            self._deliver(item)
        await self._read_forever(pubsub)

    async def _read_forever(self, pubsub: Any) -> None:
        burst = 0
        while True:
            message = await self._read(pubsub)
            if message is not None and self._route(message, self._deliver):
                burst += 1
                if burst >= READ_BURST:
                    # Let the writers flush what this burst queued.
                    burst = 0
                    await asyncio.sleep(0)

    def _route(
        self, message: dict[str, Any], on_update: Callable[[Update | bytes], None], awaiting: set[str] | None = None
    ) -> bool:
        """Handle one pub/sub message; True when it was a published message."""
        kind = message["type"]
        # s-kinds: sharded pub/sub in cluster mode.
        if kind in ("message", "smessage", "pmessage"):
            if self.markers.is_marker(message["channel"]):
                on_update(message["data"])  # a read's marker, in stream order
                return True
            if self._pattern_live and kind == "message":
                return True  # its pmessage follows
            update = self._parse(message)
            if update is not None:
                on_update(update)
            return True
        if kind in ("subscribe", "ssubscribe", "psubscribe"):
            channel = message["channel"].decode()
            if kind == "psubscribe":
                self._pattern_live = True
            self._confirm(channel)
            if awaiting is not None:
                awaiting.discard(channel)
        elif kind == "punsubscribe":
            self._pattern_live = False
        return False

    async def _read(self, pubsub: Any) -> dict[str, Any] | None:
        message: dict[str, Any] | None = await pubsub.get_message(timeout=PROBE_AFTER)
        now = time.monotonic()
        if message is not None:
            self._last_heard = now
            return message
        if now - self._last_heard > DEAD_AFTER:
            raise ConnectionError("redis pub/sub connection stopped answering")
        await pubsub.ping()
        return None

    def _confirm(self, channel: str) -> None:
        future = self._confirming.pop(channel, None)
        if future is not None and not future.done():
            future.set_result(None)

    def _parse(self, message: dict[str, Any]) -> Update | None:
        channel = message["channel"]
        try:
            return parse_update(message["data"], self.keys.symbol_of(channel))
        except (InvalidUpdate, UnicodeDecodeError) as exc:
            self.malformed.record(channel, exc)
            return None

    def _deliver(self, item: Update | bytes) -> None:
        if type(item) is bytes:
            self.markers.meet(item, self._position_now)
        # Not bytes, so an Update: `type() is` (the fast test) narrows only the first branch.
        elif self._sink is not None and (item.symbol in self._wanted or self._all):  # type: ignore[union-attr]  # see above
            self._sink.on_update(item)  # type: ignore[arg-type]  # see above

    def _position_now(self) -> int:
        return self._sink.mark() if self._sink is not None else 0

    def _channels_of(self, symbol: str) -> list[str]:
        """The channels the listener subscribes for a symbol."""
        return [*self.markers.channels_of(symbol), self.keys.channel(symbol)]

    def _set_ready(self, ready: bool) -> None:
        # Readiness is read (Broker.ready), not pushed: nothing acts on its changes.
        self._ready = ready

    async def _close_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            try:
                await pubsub.aclose()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail; nothing to do
                pass
