"""The benchmark's price publisher: paced ticks through Redis, the original way.

Each tick is `SET stock:SYM json` + `PUBLISH stock:SYM json` (pipelined), which
every server speaking the original design understands. The update carries what
the clients need to measure: `seq` (per symbol, from 1) for loss, duplicates
and order; `sentNs` (time.time_ns() just before sending) for latency; `run`
so that snapshots left in Redis by an earlier run are not mistaken for ours.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import orjson
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from ..broker.keys import layout_for

# Ticks sent in one pipeline at most, so a publisher that fell behind catches
# up in bounded bursts instead of one giant write.
MAX_BATCH = 500
# Below this many seconds until the next tick, sending now beats sleeping.
MIN_SLEEP_S = 0.0005


@dataclass
class PublishResult:
    published: dict[str, int] = field(default_factory=dict)  # ticks per symbol
    elapsed_s: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.published.values())


class Publisher:
    def __init__(self, redis_url: str, run_id: str, cluster: bool = False) -> None:
        # On a cluster: `SET stock:{SYM}` + `SPUBLISH stock:{SYM}`, as a third-party publisher does.
        self.cluster = cluster
        self.keys = layout_for(cluster)
        self.redis: Any = (
            RedisCluster.from_url(redis_url, socket_timeout=10, socket_connect_timeout=10)
            if cluster
            else aioredis.from_url(redis_url, socket_timeout=10, socket_connect_timeout=10)
        )
        self.run_id = run_id
        self.seq: dict[str, int] = {}
        self._next_symbol = 0

    async def check(self) -> None:
        await self.redis.ping()

    async def close(self) -> None:
        await self.redis.aclose()

    def next_seqs(self, symbols: list[str]) -> dict[str, int]:
        """The seq each symbol's next tick will carry: where a window starts."""
        return {s: self.seq.get(s, 0) + 1 for s in symbols}

    def _update(self, symbol: str) -> bytes:
        seq = self.seq.get(symbol, 0) + 1
        self.seq[symbol] = seq
        now_ns = time.time_ns()
        return orjson.dumps(
            {
                "symbol": symbol,
                "price": round(100.0 + (seq % 2000) / 100.0, 2),
                "timestamp": now_ns // 1_000_000,
                "seq": seq,
                "sentNs": now_ns,
                "run": self.run_id,
            }
        )

    async def publish(
        self, symbols: list[str], rate: float, duration: float, on_tick: Optional[Callable[[int], None]] = None
    ) -> PublishResult:
        """Send round(rate*duration) ticks, round-robin over `symbols`, evenly paced."""
        total = max(1, round(rate * duration))
        result = PublishResult({s: 0 for s in symbols})
        started = time.monotonic()
        sent = 0
        while sent < total:
            due = min(total, int((time.monotonic() - started) * rate) + 1)
            if due <= sent:
                wait = started + sent / rate - time.monotonic()
                if wait > MIN_SLEEP_S:
                    await asyncio.sleep(wait)
                    continue
                due = sent + 1  # a fraction of a millisecond early beats spinning
            batch = min(due - sent, MAX_BATCH)
            pipe = self.redis.pipeline(transaction=False)
            for _ in range(batch):
                symbol = symbols[self._next_symbol % len(symbols)]
                self._next_symbol += 1
                payload = self._update(symbol)
                if self.cluster:
                    key = self.keys.channel(symbol)
                    pipe.set(key, payload)
                    pipe.execute_command("SPUBLISH", key, payload)
                else:
                    key = self.keys.channel(symbol)
                    pipe.set(key, payload)
                    pipe.publish(key, payload)
                result.published[symbol] += 1
            await pipe.execute()
            sent += batch
            if on_tick is not None:
                on_tick(sent)
        result.elapsed_s = time.monotonic() - started
        return result
