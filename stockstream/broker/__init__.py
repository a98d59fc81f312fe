"""The backend that stores and distributes price updates.

A Broker does four things: publish an update atomically (snapshot, sequence
number, history entry and fan-out message in one step), read snapshots and
history, and feed the updates of the symbols this instance wants to an
UpdateSink. `MemoryBroker` is the embedded single-process backend;
`RedisBroker` shares one Redis between any number of instances.
"""
from __future__ import annotations

import abc
from typing import Any, Iterable, Protocol

from ..config import Settings
from ..updates import Update


class BackendUnavailable(Exception):
    """The backend cannot be reached right now."""


class UpdateSink(Protocol):
    """Where a broker's listener hands what it reads."""

    def on_update(self, update: Update) -> None:
        """A live update for a symbol this instance subscribed to."""

    def on_resync(self, snapshots: dict[str, Update | None]) -> None:
        """The feed was interrupted and is back: the latest state of every
        subscribed symbol, read after the subscription was restored."""

    def on_state(self, ready: bool) -> None:
        """The listener went up (subscribed) or down."""


class Broker(abc.ABC):
    """The interface both backends implement."""

    kind: str = "abstract"

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

    @abc.abstractmethod
    async def publish(self, update: dict[str, Any], *, dedupe: tuple[str, int] | None = None) -> Update | None:
        """Store and distribute one validated update, adding its `seq`.

        With `dedupe=(stream, offset)`, an offset at or below the last one
        published for that stream is skipped (returns None): replays of an
        at-least-once source are then delivered once.
        """

    @abc.abstractmethod
    async def snapshots(self, symbols: list[str]) -> dict[str, Update | None]:
        """The latest update of each symbol (None where none is stored)."""

    @abc.abstractmethod
    async def history(self, symbol: str, start_ms: int | None = None, end_ms: int | None = None,
                      limit: int = 1000) -> list[Update]:
        """Stored updates with start_ms <= timestamp <= end_ms, oldest first, at most `limit`
        (the newest ones when more match)."""

    @abc.abstractmethod
    async def replay(self, symbol: str, since_ms: int | None = None, since_seq: int | None = None,
                     limit: int = 10000) -> tuple[list[Update], bool]:
        """Stored updates after a point (a timestamp or a seq), oldest first.

        The flag says whether history reaches back to that point; when it does
        not, the list is empty and the caller falls back to the snapshot.
        """


def create_broker(settings: Settings) -> Broker:
    """The Redis broker when Redis is configured, else the embedded one."""
    if settings.backend_url and settings.redis_cluster:
        from .cluster import ClusterBroker
        return ClusterBroker(settings.backend_url, settings)
    if settings.backend_url:
        from .redis import RedisBroker
        return RedisBroker(settings.backend_url, settings)
    from .memory import MemoryBroker
    return MemoryBroker(settings)
