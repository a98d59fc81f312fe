"""Placing a read in the stream of updates: a read plus its marker in one MULTI/EXEC.

A read (snapshots, a replay, a resync or a resume) publishes a marker, a
token, in the same transaction as its commands. Redis delivers the messages
of one pub/sub connection in the order they were published, so when the
listener meets the marker, the live updates it handed over before were
published before the read and every later one after it: the stream position
the hub has reached then (`UpdateSink.mark`) is where the read stands.
Reads are placed by position, not by time.

On one Redis the marker is PUBLISHed on the instance's own listener channel
(`ListenerMarkers`). On a cluster it is SPUBLISHed on a channel in the read
symbol's slot (`ShardMarkers`), which the shard reader owning that slot
subscribes next to the symbol's channel: the marker then reaches the
listener on the connection that carries the symbol's updates, after exactly
those published before the read. Such a position orders that symbol's
updates only (other shards' arrive on other connections at their own pace).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

from .. import BackendUnavailable
from ..keys import ClusterKeyLayout, KeyLayout
from .errors import unavailable_on_failure


class Markers:
    """The reads whose marker the listener has not met yet."""

    def __init__(self) -> None:
        self._pending: dict[bytes, asyncio.Future[int]] = {}
        # The symbol of each pending marker, so a shard reader that restarts
        # fails exactly the reads of its own symbols.
        self._symbols: dict[bytes, str] = {}
        self._tokens = itertools.count(1)

    # -- what differs between one Redis and a cluster ----------------------------

    def _send(self, pipe: Any, symbol: str, token: bytes) -> None:
        raise NotImplementedError

    def is_marker(self, channel: bytes) -> bool:
        """Whether a message on `channel` is one of this instance's markers."""
        raise NotImplementedError

    def channels_of(self, symbol: str) -> list[str]:
        """The marker channels the listener subscribes for a symbol, before its own channel."""
        return []

    def listener_channels(self) -> list[str]:
        """The marker channels the listener subscribes whatever it feeds."""
        return []

    # -- reads -----------------------------------------------------------------

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[list[bytes]]:
        """One read, which may run several transactions: the tokens of the
        markers it sent, forgotten when it fails; Redis failures raise
        BackendUnavailable."""
        tokens: list[bytes] = []
        try:
            with unavailable_on_failure():
                yield tokens
        except BaseException:
            for token in tokens:
                self.forget(token)
            raise

    async def read(
        self, client: Any, symbol: str, queue: Callable[[Any], object], tokens: list[bytes], raise_on_error: bool = True
    ) -> list[Any]:
        """Run the commands `queue` adds to a MULTI/EXEC pipeline followed by
        the marker for reads of `symbol` (its token appended to `tokens`);
        their replies, the marker's left out."""
        async with client.pipeline(transaction=True) as pipe:
            queue(pipe)
            token = str(next(self._tokens)).encode()
            self._pending[token] = asyncio.get_running_loop().create_future()
            self._symbols[token] = symbol
            tokens.append(token)
            self._send(pipe, symbol, token)
            replies: list[Any] = await pipe.execute(raise_on_error=raise_on_error)
        return replies[:-1]

    async def position(self, token: bytes) -> int:
        """The stream position of the read that sent `token`, once the listener meets it."""
        future = self._pending.get(token)
        if future is None:
            raise BackendUnavailable("redis listener restarted during a read")
        try:
            return await asyncio.shield(future)
        finally:
            self.forget(token)

    # -- the listener's side ---------------------------------------------------------

    def meet(self, token: bytes, position: Callable[[], int]) -> None:
        """The listener reached `token` in the stream."""
        future = self._pending.get(token)  # removed by its reader (position)
        if future is not None and not future.done():
            future.set_result(position())

    def symbol_of(self, token: bytes) -> str | None:
        return self._symbols.get(token)

    def forget(self, token: bytes) -> None:
        """A marker nobody waits for (met elsewhere, or its read failed)."""
        self._pending.pop(token, None)
        self._symbols.pop(token, None)

    def fail(self, token: bytes, reason: str) -> None:
        """The read of `token` answers BackendUnavailable(reason)."""
        self._symbols.pop(token, None)
        future = self._pending.pop(token, None)
        if future is not None and not future.done():
            future.set_exception(BackendUnavailable(reason))
            future.exception()  # retrieved here: a waiter may have gone

    def fail_all(self, reason: str) -> None:
        """Every pending read fails: a marker sent while the listener is down is never met."""
        for token in list(self._pending):
            self.fail(token, reason)

    def fail_symbols(self, symbols: Iterable[str], reason: str) -> None:
        """Reads of these symbols whose marker may never be met fail."""
        symbols = set(symbols)
        for token, symbol in list(self._symbols.items()):
            if symbol in symbols:
                self.fail(token, reason)


class ListenerMarkers(Markers):
    """One Redis: every marker on the instance's listener channel, which the
    listener stays subscribed to even with no symbols."""

    def __init__(self, keys: KeyLayout, instance: str) -> None:
        super().__init__()
        self.channel = keys.listener_channel(instance)
        self._channel_bytes = self.channel.encode()

    def _send(self, pipe: Any, symbol: str, token: bytes) -> None:
        pipe.publish(self.channel, token)

    def listener_channels(self) -> list[str]:
        return [self.channel]

    def is_marker(self, channel: bytes) -> bool:
        return channel == self._channel_bytes


class ShardMarkers(Markers):
    """A cluster: each marker on a channel in the read symbol's slot."""

    def __init__(self, keys: ClusterKeyLayout, instance: str) -> None:
        super().__init__()
        self._keys = keys
        self._instance = instance
        self._suffix = keys.marker_suffix(instance)

    def _send(self, pipe: Any, symbol: str, token: bytes) -> None:
        pipe.spublish(self._keys.marker(symbol, self._instance), token)

    def is_marker(self, channel: bytes) -> bool:
        return channel.endswith(self._suffix)

    def channels_of(self, symbol: str) -> list[str]:
        # First: once the symbol's channel is confirmed, its marker channel
        # (sent before, on the same connection) is too.
        return [self._keys.marker(symbol, self._instance)]
