"""Commands and scripts over a key layout: publishing, snapshots, history, replays.

Keys per symbol (broker/keys.py): the snapshot, which is also the pub/sub
channel, the sequence counter and the history (a capped Stream whose entry
ids are `{timestamp}-{seq}`). One Redis keeps the original `SET` +
`PUBLISH stock:SYMBOL` names; a cluster hash-tags them and publishes with
`SPUBLISH` (`ClusterCommandStore`). Reads that must stand at a stream
position go through markers.py; every command's failure raises
BackendUnavailable (errors.py).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable
from typing import Any, Callable, Iterable, cast

from redis.exceptions import ResponseError

from ...config import Settings
from ...symbols import SYMBOL_PATTERN
from ...updates import MAX_TIMESTAMP, CheckedUpdate, InvalidUpdate, Update, parse_update, update_digest
from .. import Replay, Snapshots
from ..keys import KeyLayout
from ..malformed import MalformedLog
from .errors import REDIS_FAILURES, unavailable_on_failure
from .markers import Markers

log = logging.getLogger("stockstream.redis")

# Why Lua: the snapshot, the sequence number, the history entry and the publish
# must happen together, or a reader could see one without the others.
#
# ARGV[5] is a token drawn for each publish. redis-py sends a command again
# when its connection fails, even when the reply was all that was lost (a
# cluster failover, a dropped connection); the history entry keeps the token
# (field `p`), so the script run again finds its own entry the newest and
# returns its seq instead of publishing the update a second time.
PUBLISH_SCRIPT = """
local newest = nil
if tonumber(ARGV[3]) > 0 then
  newest = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)[1]
  if newest and newest[2][3] == 'p' and newest[2][4] == ARGV[5] then
    return tonumber(string.match(newest[1], '-(%d+)$'))
  end
end
if KEYS[4] then
  local last = tonumber(redis.call('GET', KEYS[4]) or '-1')
  if tonumber(ARGV[6]) <= last then return false end
  redis.call('SET', KEYS[4], ARGV[6])
end
local seq = redis.call('INCR', KEYS[2])
local msg = string.sub(ARGV[1], 1, -2) .. ',"seq":' .. seq .. '}'
redis.call('SET', KEYS[1], msg)
if tonumber(ARGV[3]) > 0 then
  -- Entry ids must grow: a publisher clock running behind, or an entry the
  -- recorder added in the same millisecond, moves this one to a later id
  -- (an XADD error here would leave the snapshot written but nothing published).
  local ms = tonumber(ARGV[2])
  if newest then
    local newest_ms, newest_n = string.match(newest[1], '^(%d+)-(%d+)$')
    newest_ms = tonumber(newest_ms)
    if newest_ms > ms then ms = newest_ms end
    if ms == newest_ms and tonumber(newest_n) >= seq then ms = ms + 1 end
  end
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], string.format('%d-%d', ms, seq), 'u', msg, 'p', ARGV[5])
  redis.call('XTRIM', KEYS[3], 'MINID', '~', ARGV[4])
end
redis.call('PUBLISH', KEYS[1], msg)
return seq
"""

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


class CommandStore:
    """One Redis's commands, over its command client and key layout."""

    def __init__(
        self, client: Any, keys: KeyLayout, markers: Markers, settings: Settings, malformed: MalformedLog
    ) -> None:
        self.client = client
        self.keys = keys
        self.markers = markers
        self.malformed = malformed
        self._settings = settings
        self._publish_script = client.register_script(self._publish_source())
        # Whether third-party updates are recorded into history (the broker's
        # history recorder runs): replays after such an update need it.
        self.records_third_party = False
        # A read placed in the stream gave `symbol`'s subscribers this update
        # (the shard listener resumes from it).
        self.on_read: Callable[[str, Update | None], None] = lambda symbol, update: None
        # A symbol got its first update here (the listener's `*` discovery hears it at once).
        self.on_first_update: Callable[[str], Awaitable[None]] | None = None

    def _publish_source(self) -> str:
        return PUBLISH_SCRIPT

    async def aclose(self) -> None:
        await self.client.aclose()  # and its connection pool

    async def publish(self, update: CheckedUpdate, *, dedupe: tuple[str, int] | None = None) -> Update | None:
        symbol, timestamp = update.symbol, update.timestamp
        body = update.encode()
        horizon = max(0, int(time.time() * 1000 - self._settings.history_max_age * 1000))
        keys = [self.keys.channel(symbol), self.keys.seq(symbol), self.keys.history(symbol)]
        args: list[Any] = [body, timestamp, self._settings.history_max_entries, horizon, secrets.token_hex(8)]
        if dedupe is not None:
            keys.append(self.keys.dedupe(symbol, dedupe[0]))
            args.append(dedupe[1])
        with unavailable_on_failure():
            seq = await self._publish_script(keys=keys, args=args)
        if seq is None:
            return None
        if seq == 1:
            await self._first_published(symbol)
        return Update(symbol, update.price, timestamp, int(seq), update.encode(int(seq)))

    async def snapshots(self, symbols: list[str]) -> dict[str, Update | None]:
        if not symbols:
            return {}
        with unavailable_on_failure():
            values = await self._mget(symbols)
        return {symbol: self.snapshot(symbol, raw) for symbol, raw in zip(symbols, values)}

    async def _mget(self, symbols: list[str]) -> list[bytes | None]:
        """The snapshot of each symbol, as stored."""
        values: list[bytes | None] = await self.client.mget([self.keys.channel(s) for s in symbols])
        return values

    async def read_snapshots(self, symbols: list[str], tokens: list[bytes]) -> list[bytes | None]:
        """The stored snapshots of these symbols, read in one transaction with
        a marker (its token appended to `tokens`)."""

        def queue(pipe: Any) -> None:
            pipe.mget([self.keys.channel(s) for s in symbols] or [self.keys.nothing()])

        values: list[bytes | None] = (await self.markers.read(self.client, "", queue, tokens))[0]
        return values

    def _read_groups(self, symbols: list[str]) -> list[list[str]]:
        """The symbols read together, with one marker: all of them on one Redis."""
        return [symbols]

    async def snapshots_at(self, symbols: list[str]) -> Snapshots:
        reads = await asyncio.gather(*(self._snapshots_at(group) for group in self._read_groups(symbols)))
        snapshots: dict[str, Update | None] = {}
        positions: dict[str, int] = {}
        for group, (values, position) in zip(self._read_groups(symbols), reads):
            for symbol, raw in zip(group, values):
                snapshots[symbol] = self.snapshot(symbol, raw)
                positions[symbol] = position
        return Snapshots(snapshots, positions)

    async def _snapshots_at(self, symbols: list[str]) -> tuple[list[bytes | None], int]:
        async with self.markers.reading() as tokens:
            values = await self.read_snapshots(symbols, tokens)
        position = await self.markers.position(tokens[0])
        for symbol, raw in zip(symbols, values):
            self.on_read(symbol, self.snapshot(symbol, raw))
        return values, position

    async def history(
        self, symbol: str, start_ms: int | None = None, end_ms: int | None = None, limit: int = 1000
    ) -> list[Update]:
        if limit <= 0 or (start_ms is not None and start_ms > MAX_STREAM_MS):
            return []
        low = "-" if start_ms is None else f"{start_ms}-0"
        high = "+" if end_ms is None else f"{min(end_ms, MAX_STREAM_MS)}-{MAX_STREAM_MS}"
        with unavailable_on_failure():
            entries = await self.client.xrevrange(self.keys.history(symbol), high, low, count=limit)
        return self.entries(symbol, reversed(entries))

    # -- replay -----------------------------------------------------------------
    #
    # A replay is complete when nothing stored after the resume point is gone:
    # an entry at or before the point is still in the stream (trimming only
    # removes the oldest entries), or the stream never lost an entry. The
    # latest snapshot must also be the stream's newest entry (or lie at or
    # before the point): a third-party update the recorder has not appended
    # (yet) makes the history incomplete, and the snapshot is sent instead.

    async def replay_at(
        self, symbol: str, since_ms: int | None = None, since_seq: int | None = None, limit: int = 10000
    ) -> Replay:
        # The marker goes with the read of the newest entries and the snapshot:
        # older entries, read later, do not change.
        async with self.markers.reading() as tokens:
            if since_seq is not None:
                updates, complete = await self.replay_after_seq(symbol, since_seq, limit, tokens)
            else:
                updates, complete = await self.replay_after_ms(symbol, min(since_ms or 0, MAX_TIMESTAMP), limit, tokens)
        replay = Replay(updates, complete, await self.markers.position(tokens[0]))
        self._note_replay(symbol, replay)
        return replay

    def _note_replay(self, symbol: str, replay: Replay) -> None:
        """A complete replay placed in the stream: its last update is where the symbol stands."""
        if replay.complete and replay.updates:
            self.on_read(symbol, replay.updates[-1])

    async def replay_after_ms(
        self, symbol: str, since_ms: int, limit: int, tokens: list[bytes]
    ) -> tuple[list[Update], bool]:
        key = self.keys.history(symbol)

        def queue(pipe: Any) -> None:
            pipe.xinfo_stream(key)
            pipe.get(self.keys.channel(symbol))
            pipe.xrange(key, f"{since_ms + 1}-0", "+", count=limit + 1)

        info, raw_snapshot, entries = await self.markers.read(self.client, symbol, queue, tokens, raise_on_error=False)
        info = _stream_info(info)
        snapshot = self.snapshot(symbol, _raised(raw_snapshot))
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
        return [u for u in self.entries(symbol, entries) if u.timestamp > since_ms], True

    async def replay_after_seq(
        self, symbol: str, since_seq: int, limit: int, tokens: list[bytes]
    ) -> tuple[list[Update], bool]:
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

                replies = await self.markers.read(self.client, symbol, queue, tokens, raise_on_error=False)
            else:
                async with self.client.pipeline(transaction=True) as pipe:
                    pipe.xinfo_stream(key)
                    pipe.xrevrange(key, high, "-", count=count)
                    replies = await pipe.execute(raise_on_error=False)
            info, batch = _stream_info(replies[0]), _raised(replies[1])
            if high == "+":
                snapshot = self.snapshot(symbol, _raised(replies[2]))
                current = int(_raised(replies[3]) or 0)
                at_point = snapshot is not None and snapshot.seq is not None and snapshot.seq <= since_seq
                if since_seq > current:
                    return [], False  # a point this history never had (e.g. another Redis)
                if info is None or at_point:
                    return [], snapshot is None or at_point
                if snapshot is not None and (not batch or batch[0][1].get(b"u") != snapshot.raw):
                    return [], False
            for update in self.entries(symbol, batch):
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

    async def replay_after_update(self, symbol: str, timestamp: int, digest: str, limit: int = 10000) -> Replay:
        if not self.records_third_party:
            # Nothing records third-party updates here (a publishing-only
            # broker, or a cluster): their history is not kept.
            return Replay([], False, 0)
        async with self.markers.reading() as tokens:
            updates, complete = await self._replay_after_digest(
                symbol, min(timestamp, MAX_TIMESTAMP), digest, limit, tokens
            )
        return Replay(updates, complete, await self.markers.position(tokens[0]))

    async def _replay_after_digest(
        self, symbol: str, timestamp: int, digest: str, limit: int, tokens: list[bytes]
    ) -> tuple[list[Update], bool]:
        key = self.keys.history(symbol)

        def queue(pipe: Any) -> None:
            pipe.get(self.keys.channel(symbol))
            pipe.xrange(key, f"{timestamp}-0", "+", count=limit + 2)

        raw_snapshot, entries = await self.markers.read(self.client, symbol, queue, tokens)
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
                    return self.entries(symbol, after), True
                if len(after) > limit:
                    return [], False
            if time.monotonic() >= deadline:
                log.info(
                    "replay of %s: history did not catch up with the latest update within %.1f s",
                    symbol,
                    RECORDER_CATCH_UP,
                )
                return [], False
            await asyncio.sleep(RECORDER_CHECK_EVERY)
            entries = await self.client.xrange(key, start, "+", count=limit + 2)

    def snapshot(self, symbol: str, raw: bytes | None) -> Update | None:
        if raw is None:
            return None
        try:
            return parse_update(raw, symbol)
        except InvalidUpdate as exc:
            self.malformed.record(self.keys.channel(symbol).encode(), exc)
            return None

    def entries(self, symbol: str, entries: Iterable[tuple[bytes, dict[bytes, bytes]]]) -> list[Update]:
        updates = []
        for _, fields in entries:
            try:
                updates.append(parse_update(fields[b"u"], symbol))
            except (InvalidUpdate, KeyError) as exc:
                self.malformed.record(self.keys.history(symbol).encode(), exc)
        return updates

    async def _first_published(self, symbol: str) -> None:
        """`symbol` just got its first update. Nothing to do on one Redis: a `*`
        subscription there is a pattern, which hears new channels by itself."""

    async def symbols_with_price(self, limit: int) -> list[str]:
        found = set()
        with unavailable_on_failure():
            async for key in self.client.scan_iter(match=self.keys.every_channel(), count=1000, _type="STRING"):
                try:
                    symbol = self.keys.symbol_of(key)
                except UnicodeDecodeError:
                    continue
                if SYMBOL_PATTERN.fullmatch(symbol):
                    found.add(symbol)
        return sorted(found)[:limit]


CLUSTER_PUBLISH_SCRIPT = PUBLISH_SCRIPT.replace("redis.call('PUBLISH'", "redis.call('SPUBLISH'")
assert CLUSTER_PUBLISH_SCRIPT != PUBLISH_SCRIPT


class ClusterCommandStore(CommandStore):
    """A Redis Cluster's commands: the same script ending in SPUBLISH on the
    symbol's shard, reads split per slot (a transaction stays in one slot).

    The cluster client also raises RedisClusterException (no reachable node,
    slots not covered): errors.py translates it like any other failure."""

    def _publish_source(self) -> str:
        return CLUSTER_PUBLISH_SCRIPT

    async def _first_published(self, symbol: str) -> None:
        """Tell every instance that `symbol` just got its first update (a
        cluster's `*` subscriptions cannot see new channels otherwise)."""
        if self.on_first_update is not None:
            await self.on_first_update(symbol)
        try:
            await self.client.publish(self.keys.new_symbols(), symbol)
        except REDIS_FAILURES as exc:
            # The update is published; other instances find the symbol by scanning.
            log.debug("announcing new symbol %s failed: %s", symbol, exc)

    async def _mget(self, symbols: list[str]) -> list[bytes | None]:
        # MGET cannot span slots; redis-py splits it per slot.
        values: list[bytes | None] = await self.client.mget_nonatomic([self.keys.channel(s) for s in symbols])
        return values

    async def read_snapshots(self, symbols: list[str], tokens: list[bytes]) -> list[bytes | None]:
        # One symbol: its marker goes to the shard that carries its updates.
        (symbol,) = symbols

        def queue(pipe: Any) -> None:
            pipe.get(self.keys.channel(symbol))

        values: list[bytes | None] = await self.markers.read(self.client, symbol, queue, tokens)
        return values

    def _read_groups(self, symbols: list[str]) -> list[list[str]]:
        # One transaction per symbol, each with its own marker, so each symbol
        # gets the position that orders its own shard's updates.
        return [[symbol] for symbol in symbols]
