"""The backend that stores and distributes price updates.

A Broker does four things: publish an update atomically (snapshot, sequence
number, history entry and fan-out message in one step), read snapshots and
history, and feed the updates of the symbols this instance wants to an
UpdateSink. `MemoryBroker` is the embedded single-process backend;
`RedisBroker` (the redis/ package) shares one Redis, or a Redis Cluster,
between any number of instances. Each backend
also keeps recoverable Socket.IO sessions (`Broker.sessions`, a SessionStore).
"""

from __future__ import annotations

import abc
from typing import Iterable, NamedTuple, Protocol

from ..config import Settings
from ..updates import CheckedUpdate, Update
from .malformed import MalformedLog


class BackendUnavailable(Exception):
    """The backend cannot be reached right now."""


class UpdateSink(Protocol):
    """Where a broker's listener hands what it reads."""

    def on_update(self, update: Update) -> None:
        """A live update for a symbol this instance subscribed to."""

    def on_resync(self, snapshots: dict[str, Update | None]) -> None:
        """The feed was interrupted and is back: the latest state of every
        subscribed symbol, read after the subscription was restored."""

    def on_resume(self, updates: dict[str, list[Update]]) -> None:
        """The feed of these symbols was interrupted and is back: per symbol,
        what was published meanwhile that was not handed over before, oldest
        first (its last is the symbol's latest state), at the stream position
        of this call. A symbol missing from `updates` missed nothing."""

    def mark(self) -> int:
        """The stream position now: every update handed over so far is at or
        before it. The broker asks when its listener reaches a read's marker."""


class Snapshots(NamedTuple):
    """Snapshots read at stream positions, one per symbol: live updates of a
    symbol at or before its position are covered by its snapshot, later ones
    are newer. Per symbol because on a Redis Cluster each shard's stream
    reaches the listener on its own connection: a position only orders the
    updates of the symbols read with the same marker."""

    snapshots: dict[str, Update | None]
    positions: dict[str, int]


class Replay(NamedTuple):
    """Stored updates after a resume point, oldest first, read at a stream
    position (see Snapshots). `complete`: history reaches back to the point;
    when it does not, `updates` is empty and the caller reads the snapshot."""

    updates: list[Update]
    complete: bool
    position: int


class SessionStore(abc.ABC):
    """Recoverable Socket.IO sessions (connection state recovery), kept where
    every instance sharing the backend finds them."""

    @abc.abstractmethod
    async def save(self, pid: str, data: bytes, ttl: float) -> None:
        """Keep a disconnected session's state for `ttl` seconds, for any instance."""

    @abc.abstractmethod
    async def take(self, pid: str) -> bytes | None:
        """The state saved under `pid`, removed so it is recovered at most once."""


class Broker(abc.ABC):
    """The interface every backend implements."""

    kind: str = "abstract"
    # True for a backend held in this process: its rooms are not shared with
    # other instances.
    embedded: bool = False
    # Figures read by /metrics. `reconnects` counts the listener's reconnections
    # (each followed by a resync); only a backend with a connection to lose
    # keeps it, and says so with `counts_reconnects`.
    counts_reconnects: bool = False
    reconnects: int = 0
    # The log of messages dropped as malformed; None for a backend that reads
    # nothing it did not write itself.
    malformed: MalformedLog | None = None
    # Where recoverable sessions are kept: with the backend's data.
    sessions: SessionStore

    @property
    @abc.abstractmethod
    def ready(self) -> bool:
        """Backend reachable and the listener subscribed."""

    @abc.abstractmethod
    async def start(self, sink: UpdateSink) -> None:
        """Connect and start feeding `sink`."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop the listener and close every connection."""

    @abc.abstractmethod
    async def subscribe(self, symbols: Iterable[str]) -> None:
        """Start feeding these symbols; returns once no later update can be missed."""

    @abc.abstractmethod
    async def unsubscribe(self, symbols: Iterable[str]) -> None:
        """Stop feeding these symbols."""

    # -- every symbol (a wildcard subscription) -----------------------------

    async def subscribe_all(self) -> None:
        """Also feed every symbol's updates, symbols that appear later
        included; returns once no later update can be missed (see the
        backend for how soon a symbol new to it is found)."""
        raise NotImplementedError

    async def unsubscribe_all(self) -> None:
        """Feed only the subscribed symbols again (no-op when not feeding all)."""
        raise NotImplementedError

    async def symbols_with_price(self, limit: int) -> list[str]:
        """Up to `limit` symbols that have a stored price, sorted."""
        raise NotImplementedError

    @abc.abstractmethod
    async def publish(self, update: CheckedUpdate, *, dedupe: tuple[str, int] | None = None) -> Update | None:
        """Store and distribute one update, adding its `seq`. The update was
        checked where it entered (`CheckedUpdate`): it is not checked again.

        With `dedupe=(stream, offset)`, an offset at or below the last one
        published for that stream is skipped (returns None): replays of an
        at-least-once source are then delivered once.
        """

    @abc.abstractmethod
    async def snapshots(self, symbols: list[str]) -> dict[str, Update | None]:
        """The latest update of each symbol (None where none is stored)."""

    @abc.abstractmethod
    async def history(
        self, symbol: str, start_ms: int | None = None, end_ms: int | None = None, limit: int = 1000
    ) -> list[Update]:
        """Stored updates with start_ms <= timestamp <= end_ms, oldest first, at most `limit`
        (the newest ones when more match)."""

    @abc.abstractmethod
    async def snapshots_at(self, symbols: list[str]) -> Snapshots:
        """The latest update of each symbol, with the stream position the read
        stands at in the order this instance's listener receives updates."""

    @abc.abstractmethod
    async def replay_at(
        self, symbol: str, since_ms: int | None = None, since_seq: int | None = None, limit: int = 10000
    ) -> Replay:
        """Stored updates after a point (a timestamp or a seq), oldest first,
        with the stream position the read stands at."""

    async def replay_after_update(self, symbol: str, timestamp: int, digest: str, limit: int = 10000) -> Replay:
        """Stored updates after the one published without a seq at `timestamp`
        whose bytes have `digest` (Update.digest), oldest first, with the
        stream position the read stands at; complete only when that update is
        found. A backend whose every update carries a seq has none such: the
        timestamp is the best it can do."""
        return await self.replay_at(symbol, timestamp, None, limit)


def broker_kinds() -> list[str]:
    """The `kind` of every backend create_broker can build (readiness and
    /metrics report it; the API documents list these)."""
    from .memory import MemoryBroker
    from .redis.broker import RedisBroker

    return [MemoryBroker.kind, *RedisBroker.kinds]


def create_broker(settings: Settings) -> Broker:
    """The Redis broker when Redis is configured (over a cluster with
    REDIS_CLUSTER), else the embedded one."""
    if settings.backend_url:
        from .redis.broker import RedisBroker

        return RedisBroker(settings.backend_url, settings)
    from .memory import MemoryBroker

    return MemoryBroker(settings)
