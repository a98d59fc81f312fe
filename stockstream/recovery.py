"""Socket.IO connection state recovery: what a session leaves behind when its
connection drops, and how a reconnecting client gets it back on any instance.

Every update a recoverable connection receives carries its offset
(`Update.offset`, one per update, so frames are still built once for all
recipients). The connection logs the offsets it handed to its socket, in
order (`SentLog`). On disconnect the subscription set and that log are saved
in the broker for RECOVERY_WINDOW seconds under the session's pid. The
client's reconnect names the pid and the last offset it *received*: what was
sent after it was lost in flight, so each symbol resumes from its last update
at or before that offset, and history replays the rest exactly once, in
order, before live updates (the session's gates order the two).

This module keeps the records only: a connection's RecoveryState (given to
it when it is built), its SentLog, each symbol's position, and the saved
sessions (kept, taken, loaded). A saved session holds what the connection
had asked for (SavedStreams): its subscriptions with their throttles, the
live candles it followed and its heartbeat, so a recovered client goes on
exactly as before the drop. The session restores itself, on the path every
subscription starts on (Session.restore, Session.start_streams).

An offset names one update exactly. With a seq (stockstream's publisher) it
is `SYMBOL:seq`. Without one (the original `SET` + `PUBLISH`) it is
`SYMBOL@timestamp#digest`, the digest a hash of the update's bytes: a
timestamp alone is not a position, since many updates share a millisecond,
and neither is a history entry id, which the recorder assigns after the
update went out live (the instance sending it never sees it). The timestamp
says where in history to start looking (the recorder files an update at its
timestamp or later), the digest which entry it is. Byte-identical updates of
one symbol (same price, timestamp and every other field) are one position:
a client cannot tell them apart either.

The reconnect may reach the other instance before the old one has noticed
the drop and saved the session: a long-polling connection is only noticed
at the next missed heartbeat, and even a cut WebSocket takes a moment. So
while a connection lives, its pid's entry in the broker names it
(`LIVE_PREFIX` + Socket.IO sid). A reconnect that finds that asks the
instance holding the connection to disconnect it (which saves the session at
once) and waits for the saved state, at most SAVE_WAIT seconds. A client
that disconnected itself leaves no entry: its reconnect starts fresh at once.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
import time
from typing import Any, Awaitable, Callable, NamedTuple

import orjson

from .broker import Broker
from .updates import ResumePoint, Update

log = logging.getLogger("stockstream.recovery")

# Offsets a connection remembers: a client more than this many updates behind
# its socket when the connection dropped gets a fresh session instead.
SENT_LOG_SIZE = 256

# What a saved pid holds while its connection lives: this prefix and the
# connection's Socket.IO sid. Kept this long (a connection living longer only
# loses the wait for its save: its reconnect may start fresh).
LIVE_PREFIX = b"live:"
LIVE_TTL = 86400.0
# How long a reconnect waits for the session of a connection still live
# when it arrives to be saved: the holding instance saves it within a round
# trip or two of being asked; the bound covers a loaded machine. An instance
# that died meanwhile never saves: then a fresh session starts after it.
SAVE_WAIT = 2.0
SAVE_CHECK_EVERY = 0.02

# The last update a client has, as ResumePoint(seq, timestamp, digest): the
# seq, or for an update without one its timestamp and digest (Update.digest).
Position = ResumePoint


class SavedStreams(NamedTuple):
    """What a session had asked for, kept with its positions when its
    connection drops: its subscriptions, the throttle period (ms) of each
    throttled one, the live candles it followed as (symbol, interval) pairs,
    and its heartbeat period in seconds (0: none)."""

    symbols: list[str]
    throttles: dict[str, int]
    candles: list[tuple[str, str]]
    heartbeat: int


def new_pid() -> str:
    return secrets.token_urlsafe(12)


class SentLog:
    """The updates handed to one connection's socket, newest last, bounded;
    `base` keeps each symbol's position as of the oldest entry forgotten."""

    __slots__ = ("entries", "base")

    def __init__(self) -> None:
        self.entries: collections.deque[tuple[str, int | None, int | None, str | None]] = collections.deque()
        self.base: dict[str, Position] = {}

    def record(self, update: Update) -> None:
        entries = self.entries
        if len(entries) >= SENT_LOG_SIZE:
            symbol, seq, ts, digest = entries.popleft()
            self.base[symbol] = ResumePoint(seq, ts, digest)
        entries.append((update.symbol, update.seq, update.timestamp, update.digest))

    @classmethod
    def continuing(cls, state: dict[str, Any]) -> "SentLog":
        """The log of a recovered session, picking up where the saved one ended:
        if the connection drops again before the client received anything new,
        its old offset must still be found."""
        log = cls()
        log.base = {k: _position(v) for k, v in state.get("base", {}).items()}
        for entry in state.get("sent", [])[-SENT_LOG_SIZE:]:
            log.entries.append((entry[0], *_position(entry[1:])))
        return log

    def to_state(self, streams: SavedStreams) -> bytes:
        return orjson.dumps(
            {
                "symbols": sorted(streams.symbols),
                "throttles": streams.throttles,
                "candles": [list(pair) for pair in streams.candles],
                "heartbeat": streams.heartbeat,
                "base": {k: list(v) for k, v in self.base.items()},
                "sent": [list(e) for e in self.entries],
            }
        )


class RecoveryState:
    """One recoverable connection's part in recovery, given to it when it is
    built: its pid, the offsets it sent, and (just after a recovery) what
    opens its streams once the client knows it is connected."""

    __slots__ = ("pid", "sent", "opener", "frozen")

    def __init__(self) -> None:
        self.pid = new_pid()
        self.sent = SentLog()
        self.opener: Callable[[], None] | None = None
        # Set once the session's state is taken for saving: from then on
        # nothing more may reach the client, or its offset would be unknown.
        self.frozen = False


def _position(saved: list[Any]) -> Position:
    """A position as saved; a session saved before offsets had digests has none."""
    return ResumePoint(saved[0], saved[1], saved[2] if len(saved) > 2 else None)


def offset_of(symbol: str, seq: int | None, ts: int | None, digest: str | None) -> str:
    """The offset of an update (Update.offset) from its position."""
    if seq is not None:
        return f"{symbol}:{seq}"
    return f"{symbol}@{ts}#{digest}" if digest is not None else f"{symbol}@{ts}"


def positions(state: dict[str, Any], offset: Any) -> dict[str, Position] | None:
    """Each symbol's position as of the client's last offset; None when the
    offset is not one this session sent (or was forgotten): no recovery."""
    pos: dict[str, Position] = {k: _position(v) for k, v in state.get("base", {}).items()}
    sent = state.get("sent", [])
    if offset is None:
        # Nothing received: recoverable only if nothing was ever sent.
        return pos if not sent and not pos else None
    if not isinstance(offset, str):
        return None
    for entry in sent:
        symbol, position = entry[0], _position(entry[1:])
        pos[symbol] = position
        if offset_of(symbol, *position) == offset:
            return pos
    return None


async def mark_live(broker: Broker, pid: str, sid: str) -> None:
    """Note that `pid` is now served by the connection `sid` (see LIVE_PREFIX)."""
    await broker.sessions.save(pid, LIVE_PREFIX + sid.encode(), LIVE_TTL)


async def take_saved(broker: Broker, pid: str, release: Callable[[str], Awaitable[None]]) -> bytes | None:
    """The state saved under `pid`, taken (at most once). When its connection
    is still live, `release` (given its sid) has it dropped and saved, and the
    state is waited for, at most SAVE_WAIT seconds. Raises BackendUnavailable."""
    raw = await broker.sessions.take(pid)
    if raw is None or not raw.startswith(LIVE_PREFIX):
        return raw
    await release(raw[len(LIVE_PREFIX) :].decode(errors="replace"))
    deadline = time.monotonic() + SAVE_WAIT
    while time.monotonic() < deadline:
        await asyncio.sleep(SAVE_CHECK_EVERY)
        raw = await broker.sessions.take(pid)
        if raw is not None and not raw.startswith(LIVE_PREFIX):
            return raw
    log.info("session %s: its connection was not saved within %.1f s", pid, SAVE_WAIT)
    return None


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def saved_streams(state: dict[str, Any]) -> SavedStreams | None:
    """What a saved session had asked for; None when the state is not one.
    A session saved by an earlier version holds its symbols only."""
    symbols = state.get("symbols", [])
    throttles = state.get("throttles", {})
    candles = state.get("candles", [])
    heartbeat = state.get("heartbeat", 0)
    if (
        not isinstance(symbols, list)
        or not all(isinstance(s, str) for s in symbols)
        or not isinstance(throttles, dict)
        or not all(_is_count(ms) for ms in throttles.values())
        or not isinstance(candles, list)
        or not all(isinstance(c, list) and len(c) == 2 and all(isinstance(x, str) for x in c) for c in candles)
        or not _is_count(heartbeat)
    ):
        return None
    return SavedStreams(symbols, throttles, [(c[0], c[1]) for c in candles], heartbeat)


def load_state(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        state = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return state if isinstance(state, dict) else None
