"""The `reconnect` scenario: the cost of Socket.IO connection state recovery.

Two instances share a private Redis, both with RECOVERY_WINDOW on. Every
client connects to the first, subscribes, and streams while prices are
published at a steady rate, by stockstream's own publisher (`ours`: seq and
history in one step) or the original design's way (`raw`: `SET` + `PUBLISH`
without seq; each update then carries a per-symbol `tick` for the count,
and history is kept by the instances' recorder). The first
instance is then stopped with SIGTERM: each client reconnects, as
socket.io-client does (after 0.5-1.5 s), to the second one with its pid and
last offset, and must come back with its session recovered. Reported: the
time until every client is live again, and per-symbol loss, duplicates and
out-of-order deliveries over the whole run, which must all be 0.

The clients speak Engine.IO v4 / Socket.IO v5 over a WebSocket themselves
(aiohttp), in this one process, so they can keep the pid and offset exactly
as socket.io-client does.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import tempfile
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import aiohttp
import orjson

from ..broker import create_broker
from ..broker.clients import command_client
from ..broker.keys import KeyLayout
from ..config import Settings
from ..publisher import Publisher, checked_price
from .servers import ManagedProcess, start_redis, start_stockstream


@dataclass
class ReconnectPlan:
    clients: int = 1000
    symbols: int = 100
    rate: float = 1000.0  # updates per second, all symbols together
    before: float = 3.0  # seconds of publishing before the stop
    after: float = 9.0  # seconds of publishing after it
    window: int = 60  # RECOVERY_WINDOW of both instances
    publisher: str = "ours"  # one of PUBLISHERS


# Who publishes: stockstream's atomic publish (with seq), or the original
# design's SET + PUBLISH without seq.
PUBLISHERS = ("ours", "raw")


@dataclass
class Client:
    symbol: str
    url: str
    seqs: list[int] = field(default_factory=list)
    pid: Optional[str] = None
    offset: Optional[str] = None
    connects: int = 0
    recovered: list[bool] = field(default_factory=list)
    dropped_at: Optional[float] = None
    back_at: Optional[float] = None  # first live update after the recovery
    reconnected_at: Optional[float] = None
    stop: bool = False


async def _session(http: aiohttp.ClientSession, client: Client, subscribed: asyncio.Event) -> None:
    ws_url = client.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    async with http.ws_connect(ws_url, max_msg_size=0, autoping=True) as ws:
        opened = await ws.receive_str()
        assert opened.startswith("0"), opened
        auth = {"pid": client.pid, "offset": client.offset} if client.pid else None
        await ws.send_str("40" + (orjson.dumps(auth).decode() if auth else ""))
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            text = message.data
            if text == "2":
                await ws.send_str("3")
            elif text.startswith("40"):
                reply = orjson.loads(text[2:])
                again = client.pid is not None
                recovered = again and reply.get("pid") == client.pid
                client.pid = reply.get("pid")
                client.connects += 1
                if again:
                    client.recovered.append(recovered)
                    client.reconnected_at = time.monotonic()
                else:
                    await ws.send_str('420["subscribe",' + orjson.dumps([client.symbol]).decode() + "]")
            elif text.startswith("430"):
                subscribed.set()
            elif text.startswith('42["stockUpdate"'):
                args = orjson.loads(text[2:])
                update = args[1]
                client.seqs.append(update["seq"] if "seq" in update else update["tick"])
                if len(args) > 2:
                    client.offset = args[2]
                if (
                    client.reconnected_at is not None
                    and client.back_at is None
                    and args[1]["timestamp"] / 1000 >= time.time() - (time.monotonic() - client.reconnected_at)
                ):
                    client.back_at = time.monotonic()


async def _run_client(http: aiohttp.ClientSession, client: Client, subscribed: asyncio.Event, fallback: str) -> None:
    while not client.stop:
        try:
            await _session(http, client, subscribed)
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError, AssertionError):
            pass
        if client.stop:
            return
        if client.dropped_at is None:
            client.dropped_at = time.monotonic()
        client.url = fallback
        # socket.io-client's default: reconnectionDelay 1 s, randomizationFactor 0.5.
        await asyncio.sleep(random.uniform(0.5, 1.5))


class RawPublisher:
    """The original design's publisher: `SET stock:SYM json` + `PUBLISH stock:SYM json`,
    no seq; a per-symbol `tick` (1, 2, 3, ...) lets the clients count."""

    def __init__(self, redis_url: str) -> None:
        self._redis = command_client(redis_url)
        self._ticks: dict[str, int] = {}

    async def publish(self, symbol: str, price: float) -> int:
        tick = self._ticks[symbol] = self._ticks.get(symbol, 0) + 1
        payload = orjson.dumps(
            {"symbol": symbol, "price": price, "timestamp": time.time_ns() // 1_000_000, "tick": tick}
        )
        key = KeyLayout().channel(symbol)
        await self._redis.set(key, payload)
        await self._redis.publish(key, payload)
        return tick

    async def close(self) -> None:
        await self._redis.aclose()


async def _publish(publish: Any, symbols: list[str], rate: float, seconds: float, published: dict[str, int]) -> None:
    """`publish(symbol, price)` returns the update's count (seq or tick)."""
    interval = 0.01
    per_tick = rate * interval
    loop = asyncio.get_running_loop()
    start = loop.time()
    owed = 0.0
    k = 0
    while loop.time() - start < seconds:
        owed += per_tick
        batch = []
        while owed >= 1:
            owed -= 1
            symbol = symbols[k % len(symbols)]
            k += 1
            batch.append(symbol)
        # One symbol's updates in order (a raw publisher's SET and PUBLISH
        # are two commands); different symbols concurrently.
        counts = await asyncio.gather(
            *(_publish_in_order(publish, [s for s in batch if s == symbol]) for symbol in dict.fromkeys(batch))
        )
        for symbol, count in zip(dict.fromkeys(batch), counts):
            published[symbol] = max(published.get(symbol, 0), count)
        await asyncio.sleep(max(0.0, start + (k / rate) - loop.time()))


async def _publish_in_order(publish: Any, symbols: list[str]) -> int:
    count = 0
    for i, symbol in enumerate(symbols):
        count = await publish(symbol, 100.0 + (i % 100) / 10)
    return count


def _problems(client: Client, last: int) -> tuple[int, int, int]:
    """(lost, duplicates, out of order) from the client's first update to `last`."""
    seqs = client.seqs
    if not seqs:
        return last, 0, 0
    expected = set(range(seqs[0], last + 1))
    seen: set[int] = set()
    duplicates = 0
    for s in seqs:
        if s in seen:
            duplicates += 1
        seen.add(s)
    out_of_order = sum(1 for a, b in zip(seqs, seqs[1:]) if b < a)
    return len(expected - seen), duplicates, out_of_order


async def run_reconnect(plan: ReconnectPlan, log_dir: Path, log: Any = print) -> dict[str, Any]:
    redis_proc, redis_url = start_redis(log_dir, None)
    env = {"RECOVERY_WINDOW": str(plan.window), "SHUTDOWN_TIMEOUT": "5"}
    procs: list[ManagedProcess] = [redis_proc]
    try:
        first, first_port = start_stockstream(log_dir, redis_url, None, env, name="stockstream-a")
        procs.append(first)
        second, second_port = start_stockstream(log_dir, redis_url, None, env, name="stockstream-b")
        procs.append(second)
        return await _measure(
            plan, redis_url, f"http://127.0.0.1:{first_port}", f"http://127.0.0.1:{second_port}", first, log
        )
    finally:
        for proc in reversed(procs):
            proc.stop()


async def _measure(
    plan: ReconnectPlan, redis_url: str, first_url: str, second_url: str, first: ManagedProcess, log: Any
) -> dict[str, Any]:
    symbols = [f"RC{i:03d}" for i in range(plan.symbols)]
    broker = create_broker(Settings.from_env({}, redis_url=redis_url, log_level="warning"))
    raw = RawPublisher(redis_url) if plan.publisher == "raw" else None
    if raw is not None:
        publish: Any = raw.publish
    else:
        publisher = Publisher(broker)

        async def publish(symbol: str, price: float) -> int:
            update = await publisher.publish_checked(checked_price(symbol, price))
            return update.seq or 0

    published: dict[str, int] = {}
    clients = [Client(symbols[i % len(symbols)], first_url) for i in range(plan.clients)]
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        events = [asyncio.Event() for _ in clients]
        tasks = [asyncio.create_task(_run_client(http, c, e, second_url)) for c, e in zip(clients, events)]
        try:
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), 60)
            log(f"reconnect: {len(clients)} clients subscribed on the first instance")
            publishing = asyncio.create_task(_publish(publish, symbols, plan.rate, plan.before + plan.after, published))
            await asyncio.sleep(plan.before)
            stopped_at = time.monotonic()
            await asyncio.to_thread(first.stop)
            log(f"reconnect: first instance stopped with SIGTERM (exited {first.popen.returncode})")
            await publishing
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if all(c.seqs and c.seqs[-1] >= published.get(c.symbol, 0) for c in clients):
                    break
                await asyncio.sleep(0.1)
        finally:
            for c in clients:
                c.stop = True
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    await broker.close()
    if raw is not None:
        await raw.close()
    recovered = sum(1 for c in clients if c.recovered and all(c.recovered))
    back = [c.back_at - stopped_at for c in clients if c.back_at is not None]
    drop_to_back = [c.back_at - c.dropped_at for c in clients if c.back_at is not None and c.dropped_at is not None]
    lost = duplicates = out_of_order = 0
    for c in clients:
        a, b, d = _problems(c, published.get(c.symbol, 0))
        lost, duplicates, out_of_order = lost + a, duplicates + b, out_of_order + d
    return {
        "clients": len(clients),
        "symbols": len(symbols),
        "rate": plan.rate,
        "publisher": plan.publisher,
        "recovered": recovered,
        "not_recovered": len(clients) - recovered,
        "live_again": len(back),
        "all_live_again_s": round(max(back), 2) if len(back) == len(clients) else None,
        "drop_to_live_median_s": round(statistics.median(drop_to_back), 2) if drop_to_back else None,
        "drop_to_live_max_s": round(max(drop_to_back), 2) if drop_to_back else None,
        "deliveries": sum(len(c.seqs) for c in clients),
        "lost": lost,
        "duplicates": duplicates,
        "out_of_order": out_of_order,
    }


def run_reconnect_scenario(scenario: Any, round_no: int, progress: Any, publisher: str = "ours") -> dict[str, Any]:
    """One run of the `reconnect` Scenario, as a bench report record."""
    plan = ReconnectPlan(
        clients=scenario.clients,
        symbols=scenario.symbols,
        rate=scenario.rate,
        before=scenario.warmup,
        after=scenario.duration,
        publisher=publisher,
    )
    record: dict[str, Any] = {"scenario": "reconnect", "server": "stockstream", "round": round_no}
    log_dir = Path(tempfile.mkdtemp(prefix="stockstream-bench-reconnect-"))
    try:
        record["result"] = asyncio.run(run_reconnect(plan, log_dir, progress.log))
        shutil.rmtree(log_dir, ignore_errors=True)
    except Exception as exc:  # reported, with the logs kept
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["logs"] = str(log_dir)
    else:
        result = record["result"]
        if result["lost"] or result["duplicates"] or result["out_of_order"] or result["not_recovered"]:
            record["error"] = "not every client recovered every update once and in order"
    return record


def format_reconnect(record: dict[str, Any]) -> str:
    if "result" not in record:
        return f"== reconnect (round {record['round']}) ==\n  error: {record.get('error')}"
    text = _format_result(record["result"])
    return text + (f"\n  error: {record['error']}" if record.get("error") else "")


def _format_result(result: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"== reconnect: {result['clients']:,} clients on {result['symbols']} symbols, {result['rate']:g} updates/s"
            f" ({result.get('publisher', 'ours')} publisher) ==",
            f"  recovered            {result['recovered']:,} of {result['clients']:,}",
            f"  all live again after {result['all_live_again_s']} s from SIGTERM",
            f"  drop -> live         median {result['drop_to_live_median_s']} s, max {result['drop_to_live_max_s']} s",
            f"  deliveries           {result['deliveries']:,}",
            f"  lost / duplicates / out of order  {result['lost']} / {result['duplicates']} / {result['out_of_order']}",
        ]
    )
