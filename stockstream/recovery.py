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
"""
from __future__ import annotations

import asyncio
import collections
import logging
import secrets
from typing import TYPE_CHECKING, Any, Callable, Iterable

import orjson

from .broker import BackendUnavailable, Broker, Replay
from .updates import Update

if TYPE_CHECKING:
    from .session import Session

log = logging.getLogger("stockstream.recovery")

# Offsets a connection remembers: a client more than this many updates behind
# its socket when the connection dropped gets a fresh session instead.
SENT_LOG_SIZE = 256
# How long a recovery may wait for the backend before it gives up (fresh session).
RECOVERY_TIMEOUT = 5.0

Position = tuple[int | None, int]  # (seq, timestamp) of the last update a client has


def new_pid() -> str:
    return secrets.token_urlsafe(12)


class SentLog:
    """The updates handed to one connection's socket, newest last, bounded;
    `base` keeps each symbol's position as of the oldest entry forgotten."""

    __slots__ = ("entries", "base")

    def __init__(self) -> None:
        self.entries: collections.deque[tuple[str, int | None, int]] = collections.deque()
        self.base: dict[str, Position] = {}

    def record(self, update: Update) -> None:
        entries = self.entries
        if len(entries) >= SENT_LOG_SIZE:
            symbol, seq, ts = entries.popleft()
            self.base[symbol] = (seq, ts)
        entries.append((update.symbol, update.seq, update.timestamp))

    @classmethod
    def continuing(cls, state: dict[str, Any]) -> "SentLog":
        """The log of a recovered session, picking up where the saved one ended:
        if the connection drops again before the client received anything new,
        its old offset must still be found."""
        log = cls()
        log.base = {k: (v[0], v[1]) for k, v in state.get("base", {}).items()}
        for symbol, seq, ts in state.get("sent", [])[-SENT_LOG_SIZE:]:
            log.entries.append((symbol, seq, ts))
        return log

    def to_state(self, symbols: Iterable[str]) -> bytes:
        return orjson.dumps({"symbols": sorted(symbols),
                             "base": {k: list(v) for k, v in self.base.items()},
                             "sent": [list(e) for e in self.entries]})


def offset_of(symbol: str, seq: int | None, ts: int) -> str:
    return f"{symbol}:{seq}" if seq is not None else f"{symbol}@{ts}"


def positions(state: dict[str, Any], offset: Any) -> dict[str, Position] | None:
    """Each symbol's position as of the client's last offset; None when the
    offset is not one this session sent (or was forgotten): no recovery."""
    pos: dict[str, Position] = {k: (v[0], v[1]) for k, v in state.get("base", {}).items()}
    sent = state.get("sent", [])
    if offset is None:
        # Nothing received: recoverable only if nothing was ever sent.
        return pos if not sent and not pos else None
    if not isinstance(offset, str):
        return None
    for symbol, seq, ts in sent:
        pos[symbol] = (seq, ts)
        if offset_of(symbol, seq, ts) == offset:
            return pos
    return None


async def replay_after(broker: Broker, symbol: str, position: Position) -> Replay:
    """The updates after `position`, whether history reaches back to it, and
    the stream position the read stood at. The one place recovery reads the
    broker's replay."""
    seq, ts = position
    if seq is not None:
        return await broker.replay_at(symbol, None, seq)
    return await broker.replay_at(symbol, ts, None)


async def restore(session: "Session", state: dict[str, Any], offset: Any) -> Callable[[], None] | None:
    """Give `session` back the subscriptions in `state`, its gates closed, and
    find what each stream resumes with. Returns what opens the streams (to
    run once the client knows it is connected), or None: no recovery."""
    points = positions(state, offset)
    if points is None:
        return None
    identity = session.identity
    if "*" in state.get("symbols", []):
        return None  # a `*` subscription starts again with its snapshots
    symbols = [s for s in state.get("symbols", []) if isinstance(s, str)
               and (identity is None or identity.allows(s))][:session.settings.max_subscriptions]
    if len(symbols) != len(state.get("symbols", [])):
        return None  # entitlements changed: the client must subscribe again
    if session.settings.require_auth and identity is None and symbols:
        return None
    session.hold(symbols)
    try:
        found = await asyncio.wait_for(_first(session, symbols, points), RECOVERY_TIMEOUT)
    except (BackendUnavailable, asyncio.TimeoutError):
        found = None
    if found is None:
        await session.drop(symbols)
        return None
    session.connection.joined(symbols)
    first, read_at = found
    return lambda: session.open_streams(first, read_at)


async def _first(session: "Session", symbols: list[str], points: dict[str, Position]
                 ) -> tuple[dict[str, list[Update]], dict[str, int]] | None:
    """What each stream resumes with and the stream position it was read at
    (see Gate); None when history no longer reaches back."""
    broker = session.services.broker
    hub = session.services.hub
    known, joined_at = await hub.join(session, symbols)
    first: dict[str, list[Update]] = {}
    read_at = dict.fromkeys(symbols, joined_at)
    fresh = []
    for symbol in symbols:
        if symbol not in points:
            fresh.append(symbol)  # subscribed but nothing reached the client yet: its snapshot
            continue
        replay = await replay_after(broker, symbol, points[symbol])
        if not replay.complete:
            return None
        first[symbol] = replay.updates
        read_at[symbol] = replay.position
    unknown = [s for s in fresh if s not in known]
    if unknown:
        snapshots, positions = await broker.snapshots_at(unknown)
        hub.remember(snapshots, positions)
        read_at.update(positions)
    else:
        snapshots = {}
    for symbol in fresh:
        snapshot = known[symbol] if symbol in known else snapshots.get(symbol)
        first[symbol] = [snapshot] if snapshot is not None else []
    return first, read_at


def load_state(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        state = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return state if isinstance(state, dict) else None
