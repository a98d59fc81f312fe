"""The Redis backend, compatible with the original `SET` + `PUBLISH stock:{SYMBOL}`.

Keys per symbol: `stock:{SYM}` (latest update, and the pub/sub channel),
`stock:{SYM}:seq` (sequence counter) and `stock:{SYM}:history` (a capped
Stream whose entry ids are `{timestamp}-{seq}`). One pub/sub connection per
instance carries exactly the channels of symbols with local subscribers.
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any, Callable, Iterable, cast

from redis.exceptions import ResponseError

from ...config import Settings, redact_url
from ...symbols import SYMBOL_PATTERN
from ...updates import MAX_TIMESTAMP, CheckedUpdate, InvalidUpdate, Update, parse_update, update_digest
from .. import Broker, Replay, Snapshots, UpdateSink
from ...backoff import Backoff
from ..clients import command_client, listener_client
from ..malformed import MalformedLog
from ..keys import KeyLayout
from .errors import REDIS_FAILURES, unavailable_on_failure
from .markers import ListenerMarkers, Markers
from .sessions import RedisSessionStore
from .discovery import SymbolDiscovery
from .recorder import HistoryRecorder

log = logging.getLogger("stockstream.redis")

# Each instance's listener stays subscribed to its own channel
# (KeyLayout.listener_channel) even with no symbols, so readiness ("the
# listener is subscribed") means the same thing with or without clients; on
# one Redis reads publish their marker to it (see markers.py).

# Why Lua: the snapshot, the sequence number, the history entry and the publish
# must happen together, or a reader could see one without the others.
PUBLISH_SCRIPT = """
if KEYS[4] then
  local last = tonumber(redis.call('GET', KEYS[4]) or '-1')
  if tonumber(ARGV[5]) <= last then return false end
  redis.call('SET', KEYS[4], ARGV[5])
end
local seq = redis.call('INCR', KEYS[2])
local msg = string.sub(ARGV[1], 1, -2) .. ',"seq":' .. seq .. '}'
redis.call('SET', KEYS[1], msg)
if tonumber(ARGV[3]) > 0 then
  -- Entry ids must grow: a publisher clock running behind, or an entry the
  -- recorder added in the same millisecond, moves this one to a later id
  -- (an XADD error here would leave the snapshot written but nothing published).
  local ms = tonumber(ARGV[2])
  local newest = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)[1]
  if newest then
    local newest_ms, newest_n = string.match(newest[1], '^(%d+)-(%d+)$')
    newest_ms = tonumber(newest_ms)
    if newest_ms > ms then ms = newest_ms end
    if ms == newest_ms and tonumber(newest_n) >= seq then ms = ms + 1 end
  end
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], string.format('%d-%d', ms, seq), 'u', msg)
  redis.call('XTRIM', KEYS[3], 'MINID', '~', ARGV[4])
end
redis.call('PUBLISH', KEYS[1], msg)
return seq
"""

# How long a pub/sub connection may stay silent before it is probed, and
# how long after a probe without answer it counts as dead.
PROBE_AFTER = 5.0
DEAD_AFTER = 15.0
READ_BURST = 64

# Stream ids hold 64-bit milliseconds; query bounds beyond are clamped.
MAX_STREAM_MS = 2**64 - 1
# A resume by seq reads history backwards in chunks growing up to the maximum.
REPLAY_FIRST_CHUNK = 64
REPLAY_MAX_CHUNK = 4096
# A resume after an update published without a seq needs the history
# recorder to have appended everything up to the latest snapshot. It lags the
# live stream by a few milliseconds (more on a loaded machine, and a
# publisher's PUBLISH follows its SET by a round trip), so the replay waits
# for it, checking this often, at most this long; past that, history counts
# as not reaching back (a fresh session rather than a gap).
RECORDER_CHECK_EVERY = 0.01
RECORDER_CATCH_UP = 2.0


def _raised(reply: Any) -> Any:
    """A reply of a pipeline run with raise_on_error=False, raising its error."""
    if isinstance(reply, Exception):
        raise reply
    return reply


def _stream_info(reply: Any) -> dict[str, Any] | None:
    """XINFO STREAM's reply; None when the stream does not exist."""
    if isinstance(reply, ResponseError) and "no such key" in str(reply).lower():
        return None
    return cast("dict[str, Any]", _raised(reply))


def _id_ms(entry_id: bytes) -> int:
    return int(entry_id.split(b"-", 1)[0])


def _never_trimmed(info: dict[str, Any], symbol: str) -> bool:
    """Whether the stream still holds every entry ever added to it, and those
    began with the symbol's first update (history was not switched on later)."""
    if info["entries-added"] != info["length"]:
        return False
    first = info["first-entry"]
    if first is None:
        return True
    try:
        seq = parse_update(first[1][b"u"], symbol).seq
    except (InvalidUpdate, KeyError):
        return False
    return seq is None or seq == 1


class RedisBroker(Broker):
    kind = "redis"
    counts_reconnects = True

    def __init__(self, url: str, settings: Settings) -> None:
        self._url = url
        self._settings = settings
        self.keys = self._key_layout()
        self._redis: Any = self._command_client()
        self._publish_script = self._redis.register_script(self._publish_source())
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
        self._instance = uuid.uuid4().hex
        self.markers = self._markers_for(self._instance)
        self.sessions = RedisSessionStore(self._redis, self.keys)
        self.malformed: MalformedLog = MalformedLog(log)
        self.reconnects = 0
        # Serving instances also keep the history of third-party publishers.
        self.recorder: HistoryRecorder | None = None

    def _key_layout(self) -> KeyLayout:
        """Key names; the cluster broker overrides this."""
        return KeyLayout()

    def _command_client(self) -> Any:
        """The client for commands and scripts; the cluster broker overrides this."""
        return command_client(self._url)

    def _publish_source(self) -> str:
        """The publish script; the cluster broker overrides this."""
        return PUBLISH_SCRIPT

    def _markers_for(self, instance: str) -> Markers:
        """How reads are placed in the stream; the cluster broker overrides this."""
        return ListenerMarkers(self.keys, instance)

    @property
    def ready(self) -> bool:
        return self._ready

    async def start(self, sink: UpdateSink) -> None:
        self._sink = sink
        self._task = asyncio.create_task(self._listen_forever(), name="stockstream-redis-listener")
        if self._settings.history_max_entries:
            self.recorder = HistoryRecorder(self._url, self._settings, self.keys)
            self.recorder.start()

    async def close(self) -> None:
        if self.recorder is not None:
            await self.recorder.close()
            self.recorder = None
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._discovery is not None:
            await self._discovery.stop()
            self._discovery = None
        self.markers.fail_all("redis broker closed")
        await self._close_pubsub()
        await self._redis.aclose()  # and its connection pool

    # -- the listener ------------------------------------------------------

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
                self._discovery = SymbolDiscovery(self.symbols_with_price, self._subscribe_channels,
                                                  self._settings.wildcard_discovery_interval, self._hear_new_symbols)
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

    async def _announce(self, symbol: str) -> None:
        """Tell every instance that `symbol` just got its first update (a
        cluster's `*` subscriptions cannot see new channels otherwise)."""
        if self._discovery is not None:
            await self._discovery.announce(symbol)
        try:
            await self._redis.publish(self.keys.new_symbols(), symbol)
        except REDIS_FAILURES as exc:
            # The update is published; other instances find the symbol by scanning.
            log.debug("announcing new symbol %s failed: %s", symbol, exc)

    async def _hear_new_symbols(self) -> Any:
        """A pub/sub connection subscribed to the new-symbol announcements."""
        pubsub = listener_client(self._url).pubsub()
        await pubsub.subscribe(self.keys.new_symbols())
        return pubsub

    async def symbols_with_price(self, limit: int) -> list[str]:
        found = set()
        with unavailable_on_failure():
            async for key in self._redis.scan_iter(match=self.keys.every_channel(), count=1000, _type="STRING"):
                try:
                    symbol = self.keys.symbol_of(key)
                except UnicodeDecodeError:
                    continue
                if SYMBOL_PATTERN.fullmatch(symbol):
                    found.add(symbol)
        return sorted(found)[:limit]

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
                    log.warning("cannot reach Redis at REDIS_URL=%s (%s): serving, but not ready"
                                " until it answers; retrying in the background", redact_url(self._url), exc)
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
                priced = await self.symbols_with_price(self._settings.wildcard_snapshot_max)
                symbols = sorted(self._wanted.union(priced))
            tokens: list[bytes] = []
            values = (await self.markers.read(self._redis, "", self._read_snapshots(symbols), tokens))[0]
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
            del early[:covered + 1]
            snapshots = {s: self._snapshot(s, raw) for s, raw in zip(symbols, values)}
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

    def _route(self, message: dict[str, Any], on_update: Callable[[Update | bytes], None],
               awaiting: set[str] | None = None) -> bool:
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
        if ready != self._ready:
            self._ready = ready
            if self._sink is not None:
                self._sink.on_state(ready)

    async def _close_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            try:
                await pubsub.aclose()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail; nothing to do
                pass

    # -- commands -------------------------------------------------------------

    async def publish(self, update: CheckedUpdate, *, dedupe: tuple[str, int] | None = None) -> Update | None:
        symbol, timestamp = update.symbol, update.timestamp
        body = update.encode()
        horizon = max(0, int(time.time() * 1000 - self._settings.history_max_age * 1000))
        keys = [self.keys.channel(symbol), self.keys.seq(symbol), self.keys.history(symbol)]
        args: list[Any] = [body, timestamp, self._settings.history_max_entries, horizon]
        if dedupe is not None:
            keys.append(self.keys.dedupe(symbol, dedupe[0]))
            args.append(dedupe[1])
        with unavailable_on_failure():
            seq = await self._publish_script(keys=keys, args=args)
        if seq is None:
            return None
        if seq == 1 and self.keys.cluster:
            await self._announce(symbol)
        return Update(symbol, update.price, timestamp, int(seq), update.encode(int(seq)))

    async def snapshots(self, symbols: list[str]) -> dict[str, Update | None]:
        if not symbols:
            return {}
        with unavailable_on_failure():
            values = await self._mget(symbols)
        return {symbol: self._snapshot(symbol, raw) for symbol, raw in zip(symbols, values)}

    async def _mget(self, symbols: list[str]) -> list[bytes | None]:
        """The snapshot of each symbol, as stored; the cluster broker splits it per slot."""
        values: list[bytes | None] = await self._redis.mget([self.keys.channel(s) for s in symbols])
        return values

    def _read_snapshots(self, symbols: list[str]) -> Callable[[Any], object]:
        """Queues the read of every symbol's snapshot in one transaction (one Redis)."""
        return lambda pipe: pipe.mget([self.keys.channel(s) for s in symbols] or [self.keys.nothing()])

    async def snapshots_at(self, symbols: list[str]) -> Snapshots:
        async with self.markers.reading() as tokens:
            values = (await self.markers.read(self._redis, "", self._read_snapshots(symbols), tokens))[0]
        position = await self.markers.position(tokens[0])
        return Snapshots({symbol: self._snapshot(symbol, raw) for symbol, raw in zip(symbols, values)},
                         dict.fromkeys(symbols, position))

    async def history(self, symbol: str, start_ms: int | None = None, end_ms: int | None = None,
                      limit: int = 1000) -> list[Update]:
        if limit <= 0 or (start_ms is not None and start_ms > MAX_STREAM_MS):
            return []
        low = "-" if start_ms is None else f"{start_ms}-0"
        high = "+" if end_ms is None else f"{min(end_ms, MAX_STREAM_MS)}-{MAX_STREAM_MS}"
        with unavailable_on_failure():
            entries = await self._redis.xrevrange(self.keys.history(symbol), high, low, count=limit)
        return self._entries(symbol, reversed(entries))

    # -- replay -----------------------------------------------------------------
    #
    # A replay is complete when nothing stored after the resume point is gone:
    # an entry at or before the point is still in the stream (trimming only
    # removes the oldest entries), or the stream never lost an entry. The
    # latest snapshot must also be the stream's newest entry (or lie at or
    # before the point): a third-party update the recorder has not appended
    # (yet) makes the history incomplete, and the snapshot is sent instead.

    async def replay_at(self, symbol: str, since_ms: int | None = None, since_seq: int | None = None,
                        limit: int = 10000) -> Replay:
        # The marker goes with the read of the newest entries and the snapshot:
        # older entries, read later, do not change.
        async with self.markers.reading() as tokens:
            if since_seq is not None:
                updates, complete = await self._replay_after_seq(symbol, since_seq, limit, tokens)
            else:
                updates, complete = await self._replay_after_ms(symbol, min(since_ms or 0, MAX_TIMESTAMP),
                                                                limit, tokens)
        replay = Replay(updates, complete, await self.markers.position(tokens[0]))
        self._note_replay(symbol, replay)
        return replay

    def _note_replay(self, symbol: str, replay: Replay) -> None:
        """A replay placed in the stream; the cluster broker keeps resume points."""

    async def _replay_after_ms(self, symbol: str, since_ms: int, limit: int,
                               tokens: list[bytes]) -> tuple[list[Update], bool]:
        key = self.keys.history(symbol)

        def queue(pipe: Any) -> None:
            pipe.xinfo_stream(key)
            pipe.get(self.keys.channel(symbol))
            pipe.xrange(key, f"{since_ms + 1}-0", "+", count=limit + 1)
        info, raw_snapshot, entries = await self.markers.read(self._redis, symbol, queue, tokens,
                                                              raise_on_error=False)
        info = _stream_info(info)
        snapshot = self._snapshot(symbol, _raised(raw_snapshot))
        entries = _raised(entries)
        # Nothing was published after the point when the latest update is not.
        at_point = snapshot is None or snapshot.timestamp <= since_ms
        if info is None:
            return [], at_point
        if len(entries) > limit:
            return [], False
        first, last = info["first-entry"], info["last-entry"]
        reaches = at_point or (first is not None and _id_ms(first[0]) <= since_ms) or _never_trimmed(info, symbol)
        tail = at_point or (snapshot is not None and last is not None and last[1].get(b"u") == snapshot.raw)
        if not (reaches and tail):
            return [], False
        return [u for u in self._entries(symbol, entries) if u.timestamp > since_ms], True

    async def _replay_after_seq(self, symbol: str, since_seq: int, limit: int,
                                tokens: list[bytes]) -> tuple[list[Update], bool]:
        # Entry ids carry the time, not the seq: read back from the newest entry
        # in growing chunks until an entry at or before `since_seq`.
        key = self.keys.history(symbol)
        collected: list[Update] = []
        high, count = "+", REPLAY_FIRST_CHUNK
        while True:
            if high == "+":
                # The marker goes with the read of the newest entries and the
                # snapshot: older entries, read later, do not change.
                def queue(pipe: Any, count: int = count) -> None:
                    pipe.xinfo_stream(key)
                    pipe.xrevrange(key, "+", "-", count=count)
                    pipe.get(self.keys.channel(symbol))
                    pipe.get(self.keys.seq(symbol))
                replies = await self.markers.read(self._redis, symbol, queue, tokens, raise_on_error=False)
            else:
                async with self._redis.pipeline(transaction=True) as pipe:
                    pipe.xinfo_stream(key)
                    pipe.xrevrange(key, high, "-", count=count)
                    replies = await pipe.execute(raise_on_error=False)
            info, batch = _stream_info(replies[0]), _raised(replies[1])
            if high == "+":
                snapshot = self._snapshot(symbol, _raised(replies[2]))
                current = int(_raised(replies[3]) or 0)
                at_point = snapshot is not None and snapshot.seq is not None and snapshot.seq <= since_seq
                if since_seq > current:
                    return [], False  # a point this history never had (e.g. another Redis)
                if info is None or at_point:
                    return [], snapshot is None or at_point
                if snapshot is not None and (not batch or batch[0][1].get(b"u") != snapshot.raw):
                    return [], False
            for update in self._entries(symbol, batch):
                if update.seq is not None and update.seq <= since_seq:
                    collected.reverse()
                    return collected, True
                collected.append(update)
                if len(collected) > limit:
                    return [], False
            if len(batch) < count:
                break
            high, count = "(" + batch[-1][0].decode(), min(count * 4, REPLAY_MAX_CHUNK)
        # The start of the stream, and no entry at or before the point: complete
        # only if nothing was ever trimmed and the seqs continue from the point.
        sequenced = [u.seq for u in collected if u.seq is not None]
        continues = min(sequenced) <= since_seq + 1 if sequenced else current <= since_seq
        if info is None or not _never_trimmed(info, symbol) or not continues:
            return [], False
        collected.reverse()
        return collected, True

    # -- replay after an update published without a seq ------------------------
    #
    # Such an update is found in history by its bytes (Update.digest), scanning
    # from its timestamp: the recorder files it under max(timestamp, newest
    # id), never earlier. The replay is what follows it up to the snapshot
    # read with the marker; the snapshot's own PUBLISH may come after the
    # marker (SET, then PUBLISH), and the session's gate drops that echo. An
    # entry of another recording epoch than the client's update means the
    # recorder may have missed updates in between: not complete.

    async def replay_after_update(self, symbol: str, timestamp: int, digest: str,
                                  limit: int = 10000) -> Replay:
        if self.recorder is None:
            # Nothing records third-party updates here (a publishing-only
            # broker, or a cluster): their history is not kept.
            return Replay([], False, 0)
        async with self.markers.reading() as tokens:
            updates, complete = await self._replay_after_digest(symbol, min(timestamp, MAX_TIMESTAMP), digest,
                                                                limit, tokens)
        return Replay(updates, complete, await self.markers.position(tokens[0]))

    async def _replay_after_digest(self, symbol: str, timestamp: int, digest: str, limit: int,
                                   tokens: list[bytes]) -> tuple[list[Update], bool]:
        key = self.keys.history(symbol)

        def queue(pipe: Any) -> None:
            pipe.get(self.keys.channel(symbol))
            pipe.xrange(key, f"{timestamp}-0", "+", count=limit + 2)
        raw_snapshot, entries = await self.markers.read(self._redis, symbol, queue, tokens)
        if raw_snapshot is None:
            return [], False  # the client has an update this Redis never had
        if update_digest(raw_snapshot) == digest:
            return [], True  # nothing was published after the client's update
        found = False  # the client's update, once met
        epoch = None  # the recording epoch of the client's update (see recorder.py)
        after: list[tuple[bytes, dict[bytes, bytes]]] = []
        deadline = time.monotonic() + RECORDER_CATCH_UP
        start = f"{timestamp}-0"
        while True:
            if entries:
                start = "(" + entries[-1][0].decode()  # the next read continues after this one
            for entry in entries:
                raw = entry[1].get(b"u")
                if not found:
                    if raw == raw_snapshot:
                        return [], False  # the latest update is recorded, the client's is not (trimmed)
                    found = raw is not None and update_digest(raw) == digest
                    epoch = entry[1].get(b"e")
                    continue
                if b"e" in entry[1] and entry[1][b"e"] != epoch:
                    return [], False  # recorded by a tenure that began after a gap
                after.append(entry)
                if raw == raw_snapshot:
                    return self._entries(symbol, after), True
                if len(after) > limit:
                    return [], False
            if time.monotonic() >= deadline:
                log.info("replay of %s: history did not catch up with the latest update within %.1f s",
                         symbol, RECORDER_CATCH_UP)
                return [], False
            await asyncio.sleep(RECORDER_CHECK_EVERY)
            entries = await self._redis.xrange(key, start, "+", count=limit + 2)

    def _snapshot(self, symbol: str, raw: bytes | None) -> Update | None:
        if raw is None:
            return None
        try:
            return parse_update(raw, symbol)
        except InvalidUpdate as exc:
            self.malformed.record(self.keys.channel(symbol).encode(), exc)
            return None

    def _entries(self, symbol: str, entries: Iterable[tuple[bytes, dict[bytes, bytes]]]) -> list[Update]:
        updates = []
        for _, fields in entries:
            try:
                updates.append(parse_update(fields[b"u"], symbol))
            except (InvalidUpdate, KeyError) as exc:
                self.malformed.record(self.keys.history(symbol).encode(), exc)
        return updates
