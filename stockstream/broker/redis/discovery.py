"""Finding every symbol on a Redis Cluster, for a `*` subscription.

Sharded pub/sub has no patterns (there is no SPSUBSCRIBE), so a listener
cannot ask a cluster for "every symbol's channel". While some local client
wants `*`, the symbols with a stored price are listed by SCANning every master
for `stock:{*}` keys, and each one not fed yet is SSUBSCRIBEd on its shard:
once when the subscription starts (so every priced symbol streams before the
snapshots are read), then every WILDCARD_DISCOVERY_INTERVAL seconds. A symbol
new to the cluster is therefore streamed to `*` clients at most about one
interval (plus the scan's time) after its first SET; its updates before that
are not delivered. stockstream's own publishers announce a symbol's first
update (`seq` 1) with a plain PUBLISH, which a cluster broadcasts to every
node: instances hearing it subscribe the symbol at once (milliseconds, so only
that first update may be missed).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ...backoff import Backoff
from ...symbols import SYMBOL_PATTERN

log = logging.getLogger("stockstream.redis.discovery")

# Most symbols one `*` subscription of a cluster streams (a scan finds no more).
MAX_DISCOVERED = 100_000


class SymbolDiscovery:
    """Lists the priced symbols now and then and subscribes the new ones."""

    def __init__(
        self,
        list_symbols: Callable[[int], Awaitable[list[str]]],
        subscribe: Callable[[list[str]], Awaitable[None]],
        interval: float,
        listen: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        self._list_symbols = list_symbols
        self._subscribe = subscribe
        self._interval = interval
        # Opens a pub/sub connection subscribed to the announcements.
        self._listen = listen
        self.found: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """One pass now (errors reach the caller), then one per interval in the
        background; once running, it only keeps running."""
        if self._tasks:
            return
        await self.scan()
        if not self._tasks:
            self._tasks.append(asyncio.create_task(self._scan_forever(), name="stockstream-symbol-discovery"))
            if self._listen is not None:
                self._tasks.append(asyncio.create_task(self._hear_forever(), name="stockstream-symbol-announcements"))

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

    async def _scan_forever(self) -> None:
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

    async def _hear_forever(self) -> None:
        assert self._listen is not None
        backoff = Backoff(initial=0.5, cap=30.0)
        while True:
            pubsub = None
            try:
                pubsub = await self._listen()
                backoff.reset()
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=self._interval)
                    if message is None:
                        await pubsub.ping()  # a dead connection shows here
                        continue
                    if message.get("type") == "message":
                        symbol = message["data"].decode(errors="replace")
                        if SYMBOL_PATTERN.fullmatch(symbol):
                            await self.announce(symbol)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - announcements only hasten discovery; scans go on
                log.debug("symbol announcements unavailable: %s", exc)
            finally:
                if pubsub is not None:
                    await _close_quietly(pubsub)
            await asyncio.sleep(backoff.next())

    async def stop(self) -> set[str]:
        """Stop scanning and listening; returns the symbols it subscribed."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        found, self.found = self.found, set()
        return found


async def _close_quietly(pubsub: Any) -> None:
    try:
        await pubsub.aclose()
    except Exception as exc:  # noqa: BLE001 - closing a broken connection may fail; nothing to do
        log.debug("closing the announcements connection: %s", exc)
