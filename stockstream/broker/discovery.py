"""Finding every symbol on a Redis Cluster, for a `*` subscription.

Sharded pub/sub has no patterns (there is no SPSUBSCRIBE), so a listener
cannot ask a cluster for "every symbol's channel". While some local client
wants `*`, the symbols with a stored price are listed by SCANning every master
for `stock:{*}` keys, and each one not fed yet is SSUBSCRIBEd on its shard:
once when the subscription starts (so every priced symbol streams before the
snapshots are read), then every WILDCARD_DISCOVERY_INTERVAL seconds. A symbol
new to the cluster is therefore streamed to `*` clients at most about one
interval (plus the scan's time) after its first SET; its updates before that
are not delivered. stockstream's own publisher is not delayed on the instance
it publishes from: a symbol's first publish (`seq` 1) is subscribed at once.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from ..backoff import Backoff

log = logging.getLogger("stockstream.redis.discovery")

# Most symbols one `*` subscription of a cluster streams (a scan finds no more).
MAX_DISCOVERED = 100_000


class SymbolDiscovery:
    """Lists the priced symbols now and then and subscribes the new ones."""

    def __init__(self, list_symbols: Callable[[int], Awaitable[list[str]]],
                 subscribe: Callable[[list[str]], Awaitable[None]], interval: float) -> None:
        self._list_symbols = list_symbols
        self._subscribe = subscribe
        self._interval = interval
        self.found: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """One pass now (errors reach the caller), then one per interval in the
        background; once running, it only keeps running."""
        if self._task is not None:
            return
        await self.scan()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="stockstream-symbol-discovery")

    async def announce(self, symbol: str) -> None:
        """A symbol known to be new (its first publish from this instance)."""
        if symbol not in self.found:
            self.found.add(symbol)
            await self._subscribe([symbol])

    async def scan(self) -> None:
        symbols = await self._list_symbols(MAX_DISCOVERED)
        new = [s for s in symbols if s not in self.found]
        if new:
            self.found.update(new)
            await self._subscribe(new)

    async def _run(self) -> None:
        backoff = Backoff(initial=self._interval, cap=max(self._interval, 30.0))
        delay = self._interval
        while True:
            await asyncio.sleep(delay)
            try:
                await self.scan()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - discovery must outlive any failure
                log.warning("listing the cluster's symbols for `*` failed: %s", exc)
                delay = backoff.next()
            else:
                backoff.reset()
                delay = self._interval

    async def stop(self) -> set[str]:
        """Stop scanning; returns the symbols it subscribed."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        found, self.found = self.found, set()
        return found
