"""The benchmark scenarios and how one run of a scenario is measured.

Measurement is done in windows: the workers are told the first seq of every
symbol, the publisher sends a paced burst, then the run waits until every
expected delivery arrived (or stopped arriving). Publishing pauses between
windows, so each window's expected count is exact:
sum over symbols of ticks published x open subscribers at the window's start.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Optional

from .clients import Target
from .progress import Progress
from .publisher import Publisher
from .servers import CpuSample, ProcessMeter, cores_busy_seconds, utilisation
from .stats import WindowCounts, bucket_low, latency_summary_ms, merge_histograms
from .workers import WorkerPool

# A load-generator process above this share of a core can no longer be trusted to keep up.
SATURATED = 0.9
PROGRESS_INTERVAL_S = 1.0
DRAIN_POLL_S = 0.05
# Draining ends when nothing new arrived for this long (the rest is lost) ...
DRAIN_STALL_S = 2.0
# ... or after this long at most, however slowly updates still trickle in.
DRAIN_MAX_S = 15.0


@dataclass(frozen=True)
class Scenario:
    name: str
    clients: int
    symbols: int  # size of the symbol universe
    symbols_per_client: int
    rate: float  # ticks per second, all symbols together (fanout: the first step)
    duration: float  # seconds of one measured window (fanout: of each step; idle: of the idle watch)
    warmup: float  # seconds of an unmeasured window first
    steps: int = 1  # fanout: rate steps at most
    publishes: bool = True
    throttle_ms: int = 0  # throttle: the period the clients ask for
    description: str = ""


FULL: dict[str, Scenario] = {
    "fanout": Scenario(
        "fanout",
        1000,
        1,
        1,
        20.0,
        5.0,
        2.0,
        steps=12,
        description="1,000 clients on 1 symbol; the tick rate steps up until loss or p99 over --max-p99-ms",
    ),
    "spread": Scenario(
        "spread",
        1000,
        500,
        10,
        1000.0,
        10.0,
        2.0,
        description="1,000 clients x 10 of 500 symbols at 1,000 ticks/s: server CPU per delivery",
    ),
    "latency": Scenario(
        "latency",
        200,
        20,
        1,
        100.0,
        10.0,
        2.0,
        description="200 clients, 20 symbols, 100 ticks/s: publish-to-receive latency",
    ),
    "idle": Scenario(
        "idle",
        10000,
        100,
        1,
        0.0,
        5.0,
        0.0,
        publishes=False,
        description="10,000 idle subscribed connections: server memory per connection",
    ),
    "connect": Scenario(
        "connect",
        2000,
        100,
        1,
        0.0,
        0.0,
        0.0,
        publishes=False,
        description="2,000 connections as fast as accepted, then their subscribes: rates per second",
    ),
    "reconnect": Scenario(
        "reconnect",
        1000,
        100,
        1,
        1000.0,
        9.0,
        3.0,
        description="1,000 Socket.IO clients recovering their sessions on a second instance after "
        "theirs is stopped, at 1,000 updates/s: time until all are live, loss 0",
    ),
    "candles": Scenario(
        "candles",
        1000,
        100,
        10,
        1000.0,
        10.0,
        2.0,
        description="1,000 clients x 10 of 100 symbols at 1,000 ticks/s following live 1s candles, "
        "then the same clients on stockUpdate: server CPU per tick, candle events/s",
    ),
    "throttle": Scenario(
        "throttle",
        10000,
        100,
        1,
        2000.0,
        10.0,
        2.0,
        throttle_ms=1000,
        description="10,000 clients with throttle 1000 ms on 100 hot symbols at 2,000 ticks/s, "
        "then the same unthrottled: server CPU per delivery and per tick",
    ),
}

QUICK: dict[str, Scenario] = {
    "fanout": dataclasses.replace(FULL["fanout"], clients=200, duration=1.0, warmup=0.5, steps=3),
    "spread": dataclasses.replace(FULL["spread"], clients=200, symbols=100, rate=500.0, duration=2.0, warmup=0.5),
    "latency": dataclasses.replace(FULL["latency"], clients=50, symbols=10, duration=2.0, warmup=0.5),
    "idle": dataclasses.replace(FULL["idle"], clients=500, symbols=10, duration=1.0),
    "connect": dataclasses.replace(FULL["connect"], clients=300, symbols=10),
    "reconnect": dataclasses.replace(FULL["reconnect"], clients=100, symbols=10, rate=200.0, duration=3.0, warmup=1.0),
    "candles": dataclasses.replace(
        FULL["candles"], clients=100, symbols=20, symbols_per_client=5, rate=200.0, duration=2.0, warmup=0.5
    ),
    "throttle": dataclasses.replace(FULL["throttle"], clients=500, symbols=20, rate=400.0, duration=3.0, warmup=1.0),
}

# The interval the candles scenario follows: the shortest, so candles also close during a window.
CANDLES_INTERVAL = "1s"

NAMES = tuple(FULL)


def describe(sc: Scenario) -> str:
    """The scenario's actual figures, after --quick and overrides."""
    text = f"{sc.clients:,} clients"
    if sc.symbols_per_client > 1:
        text += f" x {sc.symbols_per_client} of {sc.symbols:,} symbols"
    else:
        text += f" on {sc.symbols:,} symbol{'s' if sc.symbols > 1 else ''}"
    if sc.name == "fanout":
        text += f", {sc.rate:g} ticks/s rising up to {sc.steps} steps of {sc.duration:g}s"
    elif sc.publishes:
        text += f", {sc.rate:g} ticks/s for {sc.duration:g}s"
        if sc.throttle_ms:
            text += f", throttle {sc.throttle_ms} ms then unthrottled"
    elif sc.name == "idle":
        text += f", watched idle for {sc.duration:g}s"
    return text


@dataclass(frozen=True)
class RunOptions:
    connect_timeout: float = 30.0
    connect_attempts: int = 2
    connect_concurrency: int = 100  # per worker
    connect_rate: float = 0.0  # new connections per second per worker; 0 = as fast as allowed
    max_p99_ms: float = 100.0
    step_factor: float = 1.5
    refine_steps: int = 2  # fanout: bisection steps after the first failing rate


@dataclass
class RunContext:
    target: Target
    pool: WorkerPool
    publisher: Publisher
    server: Optional[ProcessMeter]
    client: ProcessMeter  # the load generator: this process, workers, our own Redis
    client_cores: int
    options: RunOptions
    progress: Progress
    baseline_rss: Optional[int] = None  # the server's memory before this run's clients connect
    server_cores: Optional[list[int]] = None  # when the server is pinned: to see who else used its cores


def symbol_names(count: int) -> list[str]:
    return [f"BX{i:04d}" for i in range(count)]


def assign_symbols(clients: int, symbols: list[str], per_client: int) -> list[list[str]]:
    """Contiguous, wrapping slices: every symbol ends up with the same number of subscribers."""
    per_client = max(1, min(per_client, len(symbols)))
    return [[symbols[(i * per_client + j) % len(symbols)] for j in range(per_client)] for i in range(clients)]


def _split(items: list[Any], parts: int) -> list[list[Any]]:
    return [items[i::parts] for i in range(parts)]


def _sum_dicts(parts: list[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for part in parts:
        for key, n in part.items():
            total[key] = total.get(key, 0) + n
    return total


def _pct(value: float) -> float:
    return round(100.0 * value, 1)


# ------------------------------------------------------------ load generator CPU
def client_usage(ctx: RunContext, before: CpuSample, after: CpuSample) -> dict[str, Any]:
    """CPU the load generator used, and whether it was too busy to trust the figures."""
    util = utilisation(before, after)
    workers = [util.get(pid, 0.0) for pid in ctx.pool.pids]
    total = sum(util.values())
    saturated = max(workers, default=0.0) >= SATURATED or total >= SATURATED * ctx.client_cores
    return {
        "cpu_percent_total": _pct(total),
        "cpu_percent_workers": [_pct(w) for w in workers],
        "cores": ctx.client_cores,
        "saturated": saturated,
    }


def interference(
    busy_before: Optional[float],
    busy_after: Optional[float],
    server_before: Optional[CpuSample],
    server_after: Optional[CpuSample],
) -> Optional[float]:
    """Percent of a core that other processes took on the server's cores: a noisy machine shows here."""
    if busy_before is None or busy_after is None or server_before is None or server_after is None:
        return None
    elapsed = max(server_after.at - server_before.at, 1e-9)
    other = (busy_after - busy_before) - (server_after.total - server_before.total)
    return max(0.0, _pct(other / elapsed))


def _cores_busy(ctx: RunContext) -> Optional[float]:
    return cores_busy_seconds(ctx.server_cores) if ctx.server_cores else None


def server_usage(
    ctx: RunContext, before: Optional[CpuSample], after: Optional[CpuSample], deliveries: int
) -> dict[str, Any]:
    if ctx.server is None or before is None or after is None:
        return {
            "server_cpu_s": None,
            "server_cpu_percent": None,
            "server_cpu_us_per_delivery": None,
            "server_rss_bytes": None,
        }
    cpu = after.total - before.total
    return {
        "server_cpu_s": round(cpu, 3),
        "server_cpu_percent": _pct(cpu / max(after.at - before.at, 1e-9)),
        "server_cpu_us_per_delivery": round(cpu * 1e6 / deliveries, 3) if deliveries else None,
        "server_rss_bytes": ctx.server.rss_bytes(),
    }


def _server_sample(ctx: RunContext) -> Optional[CpuSample]:
    return ctx.server.sample() if ctx.server is not None else None


# ------------------------------------------------------------------ connecting
async def _watch_progress(ctx: RunContext, label: str, total: int) -> None:
    """Progress line while connecting: how many connections are up."""
    while True:
        await asyncio.sleep(PROGRESS_INTERVAL_S)
        try:
            parts = await ctx.pool.call_all("progress", timeout=5.0)
        except Exception:
            continue  # a slow answer only costs one progress line
        done = sum(p["connected"] for p in parts)
        failed = sum(p["failed"] for p in parts)
        ctx.progress.update(f"{label}: {done:,}/{total:,} connected, {failed:,} failed")


async def _with_progress(ctx: RunContext, label: str, total: int, work: Any) -> Any:
    watcher = asyncio.ensure_future(_watch_progress(ctx, label, total))
    try:
        return await work
    finally:
        watcher.cancel()
        ctx.progress.clear()


async def connect_clients(ctx: RunContext, assignments: list[list[str]], subscribe: bool = True) -> dict[str, Any]:
    n = ctx.pool.size
    opts = ctx.options
    shares = _split(assignments, n)
    args = [
        {
            "target": ctx.target,
            "clients": share,
            "timeout": opts.connect_timeout,
            "attempts": opts.connect_attempts,
            "concurrency": opts.connect_concurrency,
            "rate": opts.connect_rate,
            "subscribe": subscribe,
        }
        for share in shares
    ]
    # Bounded: every attempt has its own timeout, plus the ramp-up time.
    ramp = max(len(s) for s in shares) / opts.connect_rate if opts.connect_rate else 0.0
    budget = (
        ramp
        + opts.connect_attempts
        * (opts.connect_timeout + 2.0)
        * (1 + max(len(s) for s in shares) // max(1, opts.connect_concurrency))
        + 30.0
    )
    started = time.monotonic()
    parts = await _with_progress(
        ctx, "connecting", len(assignments), ctx.pool.call_all("connect", args, timeout=budget)
    )
    elapsed = max(p["elapsed_s"] for p in parts) or (time.monotonic() - started)
    connected = sum(p["connected"] for p in parts)
    connect_hist = merge_histograms(p["connect_hist"] for p in parts)
    subscribe_hist = merge_histograms(p["subscribe_hist"] for p in parts)
    return {
        "requested": len(assignments),
        "connected": connected,
        "failed": sum(p["failed"] for p in parts),
        "errors": _sum_dicts([p["errors"] for p in parts]),
        "by_port": _sum_dicts([p["by_port"] for p in parts]),
        "elapsed_s": round(elapsed, 3),
        "per_s": round(connected / elapsed, 1) if elapsed > 0 else None,
        "connect_ms": latency_summary_ms(connect_hist, _hist_max(connect_hist)),
        "subscribe_ms": latency_summary_ms(subscribe_hist, _hist_max(subscribe_hist)) if subscribe else None,
    }


async def subscribe_clients(ctx: RunContext) -> dict[str, Any]:
    args = [{"timeout": ctx.options.connect_timeout, "concurrency": ctx.options.connect_concurrency}] * ctx.pool.size
    parts = await ctx.pool.call_all("subscribe", args, timeout=ctx.options.connect_timeout * 4 + 60.0)
    elapsed = max(p["elapsed_s"] for p in parts)
    subscribed = sum(p["subscribed"] for p in parts)
    hist = merge_histograms(p["subscribe_hist"] for p in parts)
    return {
        "subscribed": subscribed,
        "failed": sum(p["failed"] for p in parts),
        "errors": _sum_dicts([p["errors"] for p in parts]),
        "elapsed_s": round(elapsed, 3),
        "per_s": round(subscribed / elapsed, 1) if elapsed > 0 else None,
        "subscribe_ms": latency_summary_ms(hist, _hist_max(hist)),
    }


def _hist_max(hist: list[int]) -> int:
    for i in range(len(hist) - 1, -1, -1):
        if hist[i]:
            return bucket_low(i)
    return 0


# ------------------------------------------------------------------- windows
async def measure_window(
    ctx: RunContext, label: str, symbols: list[str], rate: float, duration: float
) -> dict[str, Any]:
    """Publish `rate` ticks/s for `duration` s, wait for the deliveries, and measure."""
    pool = ctx.pool
    start_seq = ctx.publisher.next_seqs(symbols)
    subscribers = _sum_dicts(await pool.call_all("window", [start_seq] * pool.size))
    busy_before = _cores_busy(ctx)
    server_before, client_before = _server_sample(ctx), ctx.client.sample()
    started = time.monotonic()

    async def report_progress() -> None:
        last_server, last_client, last_delivered, last_at = server_before, client_before, 0, started
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL_S)
            try:
                parts = await pool.call_all("progress", timeout=5.0)
            except Exception:
                continue
            now = time.monotonic()
            delivered = sum(p["delivered"] for p in parts)
            server_now, client_now = _server_sample(ctx), ctx.client.sample()
            line = (
                f"{label}: {now - started:5.1f}s {delivered:,} delivered "
                f"({(delivered - last_delivered) / (now - last_at):,.0f}/s)"
            )
            if server_now is not None and last_server is not None:
                line += f", server CPU {_pct((server_now.total - last_server.total) / (now - last_at)):.0f}%"
            line += f", client CPU {_pct((client_now.total - last_client.total) / (now - last_at)):.0f}%"
            ctx.progress.update(line)
            last_server, last_client, last_delivered, last_at = server_now, client_now, delivered, now

    reporter = asyncio.ensure_future(report_progress())
    try:
        published = await ctx.publisher.publish(symbols, rate, duration)
        expected = sum(n * subscribers.get(s, 0) for s, n in published.published.items())
        await _drain(pool, expected)
    finally:
        reporter.cancel()
        ctx.progress.clear()
    elapsed = time.monotonic() - started
    server_after, client_after = _server_sample(ctx), ctx.client.sample()
    busy_after = _cores_busy(ctx)
    counts = WindowCounts.merge(await pool.call_all("collect"))
    distinct = counts.distinct
    server = server_usage(ctx, server_before, server_after, distinct)
    return {
        "label": label,
        "rate_target": rate,
        "rate_published": round(published.total / published.elapsed_s, 1) if published.elapsed_s else None,
        "ticks": published.total,
        "subscriptions": sum(subscribers.values()),
        "elapsed_s": round(elapsed, 3),
        "expected": expected,
        "deliveries": distinct,
        # the last tick leaves at (ticks-1)/rate: never divide by less than the window asked for
        "deliveries_per_s": round(distinct / max(elapsed, duration), 1),
        "loss": max(0, expected - distinct),
        "unexpected": max(0, distinct - expected),
        "duplicates": counts.duplicates,
        "out_of_order": counts.out_of_order,
        "stale": counts.stale,
        "foreign": counts.foreign,
        "disconnects": counts.disconnects,
        "server_errors": counts.server_errors,
        "latency_ms": latency_summary_ms(counts.latency_hist, counts.latency_max_us),
        "candle_events": counts.candles,
        "candle_events_per_s": round(counts.candles / max(elapsed, duration), 1),
        **server,
        "server_cpu_us_per_tick": round(server["server_cpu_s"] * 1e6 / published.total, 2)
        if server["server_cpu_s"] is not None and published.total
        else None,
        "other_cpu_on_server_cores_percent": interference(busy_before, busy_after, server_before, server_after),
        "client": client_usage(ctx, client_before, client_after),
    }


async def _drain(pool: WorkerPool, expected: int) -> None:
    """Wait until every expected delivery arrived, or they stop coming."""
    deadline = time.monotonic() + DRAIN_MAX_S
    last_seen, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        parts = await pool.call_all("progress", timeout=10.0)
        distinct = sum(p["delivered"] - p["duplicates"] for p in parts)
        now = time.monotonic()
        if distinct >= expected:
            return
        if distinct != last_seen:
            last_seen, last_change = distinct, now
        elif now - last_change > DRAIN_STALL_S:
            return
        await asyncio.sleep(DRAIN_POLL_S)


# ----------------------------------------------------------------- scenarios
async def run_scenario(ctx: RunContext, scenario: Scenario) -> dict[str, Any]:
    runner = {
        "fanout": _fanout,
        "spread": _steady,
        "latency": _steady,
        "idle": _idle,
        "connect": _connect,
        "candles": _candles,
        "throttle": _throttle,
    }
    await ctx.publisher.check()
    ctx.baseline_rss = ctx.server.rss_bytes() if ctx.server else None
    try:
        return await runner[scenario.name](ctx, scenario)
    finally:
        try:
            await ctx.pool.call_all("close", timeout=30.0)
        except Exception:
            pass  # closing the pool's streams ends the workers (and their connections) anyway


def _failed_connect(connection: dict[str, Any]) -> Optional[str]:
    if connection["connected"] == 0:
        return "no client could connect: " + ", ".join(f"{e} (x{n})" for e, n in connection["errors"].items())
    return None


async def _connect_and_warm_up(
    ctx: RunContext, sc: Scenario
) -> tuple[list[str], dict[str, Any], Optional[int], list[dict[str, Any]]]:
    """Connect the scenario's clients, read the server's RSS, run the warm-up window."""
    symbols = symbol_names(sc.symbols)
    connection = await connect_clients(ctx, assign_symbols(sc.clients, symbols, sc.symbols_per_client))
    if _failed_connect(connection):
        return symbols, connection, None, []
    rss = ctx.server.rss_bytes() if ctx.server else None
    windows = []
    if sc.warmup > 0:
        windows.append({**await measure_window(ctx, "warmup", symbols, sc.rate, sc.warmup), "warmup": True})
    return symbols, connection, rss, windows


async def _steady(ctx: RunContext, sc: Scenario) -> dict[str, Any]:
    symbols, connection, rss, windows = await _connect_and_warm_up(ctx, sc)
    if error := _failed_connect(connection):
        return {"connection": connection, "windows": [], "result": {}, "error": error}
    measured = await measure_window(ctx, sc.name, symbols, sc.rate, sc.duration)
    windows.append(measured)
    result = {k: v for k, v in measured.items() if k != "label"}
    result["server_rss_per_connection_bytes"] = _per_connection(rss, ctx, connection)
    return {"connection": connection, "windows": windows, "result": result}


async def _candles(ctx: RunContext, sc: Scenario) -> dict[str, Any]:
    """The same clients twice: following live candles of their symbols, then
    their prices; the server's CPU per tick of each, side by side."""
    phases: dict[str, dict[str, Any]] = {}
    windows: list[dict[str, Any]] = []
    connection: dict[str, Any] = {}
    for mode, interval in (("candles", CANDLES_INTERVAL), ("stockUpdate", "")):
        phase = dataclasses.replace(ctx, target=dataclasses.replace(ctx.target, candle_interval=interval))
        symbols, connection, _, warmup = await _connect_and_warm_up(phase, sc)
        if error := _failed_connect(connection):
            return {"connection": connection, "windows": windows, "result": {}, "error": f"{mode}: {error}"}
        measured = await measure_window(phase, f"{sc.name} on {mode}", symbols, sc.rate, sc.duration)
        windows += [*warmup, measured]
        phases[mode] = {k: v for k, v in measured.items() if k != "label"}
        await ctx.pool.call_all("close", timeout=30.0)
    candles, updates = phases["candles"], phases["stockUpdate"]
    per_tick = candles["server_cpu_us_per_tick"], updates["server_cpu_us_per_tick"]
    result = {
        "candles": candles,
        "stock_updates": updates,
        "candle_events_per_s": candles["candle_events_per_s"],
        "server_cpu_us_per_tick_candles": per_tick[0],
        "server_cpu_us_per_tick_updates": per_tick[1],
        "cpu_per_tick_ratio": round(per_tick[0] / per_tick[1], 3) if per_tick[0] and per_tick[1] else None,
        "disconnects": candles["disconnects"] + updates["disconnects"],
        "server_errors": {**candles["server_errors"], **updates["server_errors"]},
    }
    return {"connection": connection, "windows": windows, "result": result}


def _per_connection(rss: Optional[int], ctx: RunContext, connection: dict[str, Any]) -> Optional[int]:
    baseline = ctx.baseline_rss
    if rss is None or baseline is None or not connection["connected"]:
        return None
    return round((rss - baseline) / connection["connected"])


def _step_failure(window: dict[str, Any], max_p99_ms: float) -> Optional[str]:
    if window["loss"] or window["disconnects"]:
        return "loss"
    p99 = window["latency_ms"]["p99"]
    if p99 is not None and p99 > max_p99_ms:
        return f"p99 over {max_p99_ms:g} ms"
    if window["duplicates"] or window["out_of_order"]:
        return "duplicates or out-of-order deliveries"
    return None


async def _fanout(ctx: RunContext, sc: Scenario) -> dict[str, Any]:
    symbols, connection, rss, windows = await _connect_and_warm_up(ctx, sc)
    if error := _failed_connect(connection):
        return {"connection": connection, "windows": [], "result": {}, "error": error}
    best: Optional[dict[str, Any]] = None
    limited_by = f"the last of {sc.steps} steps passed"

    async def step(number: int, rate: float) -> tuple[dict[str, Any], Optional[str]]:
        window = await measure_window(ctx, f"fanout step {number} @ {rate:g} ticks/s", symbols, rate, sc.duration)
        failure = _step_failure(window, ctx.options.max_p99_ms)
        window["passed"] = failure is None
        windows.append(window)
        ctx.progress.log(
            f"  step {number}: {rate:g} ticks/s -> {window['deliveries_per_s']:,.0f} deliveries/s, "
            f"p99 {window['latency_ms']['p99']} ms, loss {window['loss']:,}"
            + (f"  [{failure}]" if failure else "")
            + ("  [client saturated]" if window["client"]["saturated"] else "")
        )
        return window, failure

    # Ramp up geometrically until a step fails ...
    rate, failed_rate, number = sc.rate, None, 0
    for number in range(1, sc.steps + 1):
        window, failure = await step(number, rate)
        if failure is not None:
            failed_rate = rate
            limited_by = failure + (
                " with the load generator saturated (the server may go higher)" if window["client"]["saturated"] else ""
            )
            break
        best = window
        if window["client"]["saturated"]:
            limited_by = "client saturated (the server may go higher)"
            break
        rate = round(rate * ctx.options.step_factor, 2)
    # (When the very first rate was too much, come down instead.)
    if best is None and failed_rate is not None:
        for _ in range(sc.steps):
            number += 1
            rate = round(rate / ctx.options.step_factor, 2)
            window, failure = await step(number, rate)
            if failure is None:
                best = window
                break
            failed_rate = rate
    # ... then bisect between the last passing and the failing rate, for a sharper figure.
    for _ in range(ctx.options.refine_steps if best is not None and failed_rate is not None else 0):
        number += 1
        assert best is not None and failed_rate is not None  # the range above is empty otherwise
        rate = round((best["rate_target"] + failed_rate) / 2, 2)
        window, failure = await step(number, rate)
        if failure is None:
            best = window
        else:
            failed_rate = rate
        if window["client"]["saturated"]:
            break
    chosen = best if best is not None else windows[-1]
    result = {k: v for k, v in chosen.items() if k not in ("label", "passed")}
    result.update(
        {
            "max_deliveries_per_s": best["deliveries_per_s"] if best else 0.0,
            "max_rate": best["rate_target"] if best else 0.0,
            "limited_by": limited_by,
            # the run's own health: loss/duplicates of the passing steps (always 0) are not the news;
            # report the whole run's so a failing last step is visible
            "loss": sum(w["loss"] for w in windows),
            "duplicates": sum(w["duplicates"] for w in windows),
            "out_of_order": sum(w["out_of_order"] for w in windows),
            "deliveries": sum(w["deliveries"] for w in windows),
            "server_rss_per_connection_bytes": _per_connection(rss, ctx, connection),
        }
    )
    return {"connection": connection, "windows": windows, "result": result}


async def _idle(ctx: RunContext, sc: Scenario) -> dict[str, Any]:
    symbols = symbol_names(sc.symbols)
    baseline = ctx.baseline_rss
    connection = await connect_clients(ctx, assign_symbols(sc.clients, symbols, sc.symbols_per_client))
    if error := _failed_connect(connection):
        return {"connection": connection, "windows": [], "result": {}, "error": error}
    # Let the server finish its per-connection work before watching it idle.
    await asyncio.sleep(min(2.0, max(0.5, sc.duration / 2)))
    server_before, client_before = _server_sample(ctx), ctx.client.sample()
    await asyncio.sleep(sc.duration)
    server_after, client_after = _server_sample(ctx), ctx.client.sample()
    progress = await ctx.pool.call_all("progress")
    still_open = sum(p["open"] for p in progress)
    usage = server_usage(ctx, server_before, server_after, 0)
    rss = usage["server_rss_bytes"]
    result = {
        "connections": connection["connected"],
        "still_open": still_open,
        "server_rss_bytes": rss,
        "server_rss_baseline_bytes": baseline,
        "server_rss_per_connection_bytes": round((rss - baseline) / connection["connected"])
        if rss is not None and baseline is not None
        else None,
        "server_idle_cpu_percent": usage["server_cpu_percent"],
        "client": client_usage(ctx, client_before, client_after),
    }
    return {"connection": connection, "windows": [], "result": result}


async def _connect(ctx: RunContext, sc: Scenario) -> dict[str, Any]:
    symbols = symbol_names(sc.symbols)
    server_before, client_before = _server_sample(ctx), ctx.client.sample()
    connection = await connect_clients(ctx, assign_symbols(sc.clients, symbols, sc.symbols_per_client), subscribe=False)
    if error := _failed_connect(connection):
        return {"connection": connection, "windows": [], "result": {}, "error": error}
    subscription = await subscribe_clients(ctx)
    server_after, client_after = _server_sample(ctx), ctx.client.sample()
    usage = server_usage(ctx, server_before, server_after, 0)
    result = {
        "connections": connection["connected"],
        "connect_failures": connection["failed"],
        "connects_per_s": connection["per_s"],
        "connect_ms": connection["connect_ms"],
        "subscribes": subscription["subscribed"],
        "subscribe_failures": subscription["failed"],
        "subscribes_per_s": subscription["per_s"],
        "subscribe_ms": subscription["subscribe_ms"],
        "server_cpu_s": usage["server_cpu_s"],
        "server_rss_bytes": usage["server_rss_bytes"],
        "client": client_usage(ctx, client_before, client_after),
    }
    return {"connection": connection, "subscription": subscription, "windows": [], "result": result}


async def _throttle(ctx: RunContext, sc: Scenario) -> dict[str, Any]:
    """The same clients and ticks twice: throttled, then unthrottled. Throttled
    clients get fewer updates by design, so what is compared is the server's
    CPU per tick published and per update delivered, not loss."""
    phases: dict[str, dict[str, Any]] = {}
    windows: list[dict[str, Any]] = []
    connection: dict[str, Any] = {}
    plain_target = ctx.target
    for phase, throttle_ms in (("throttled", sc.throttle_ms), ("unthrottled", 0)):
        ctx.target = dataclasses.replace(plain_target, throttle_ms=throttle_ms)
        try:
            symbols, connection, _, warm = await _connect_and_warm_up(ctx, sc)
            if error := _failed_connect(connection):
                return {"connection": connection, "windows": windows, "result": {}, "error": error}
            window = await measure_window(ctx, f"{phase}", symbols, sc.rate, sc.duration)
        finally:
            ctx.target = plain_target
        windows += [*warm, window]
        cpu = window["server_cpu_s"]
        phases[phase] = {
            "ticks": window["ticks"],
            "deliveries": window["deliveries"],
            "deliveries_per_s": window["deliveries_per_s"],
            "out_of_order": window["out_of_order"],
            "duplicates": window["duplicates"],
            "server_cpu_s": cpu,
            "server_cpu_percent": window["server_cpu_percent"],
            "server_cpu_us_per_delivery": window["server_cpu_us_per_delivery"],
            "server_cpu_us_per_tick": round(cpu * 1e6 / window["ticks"], 2)
            if cpu is not None and window["ticks"]
            else None,
            "latency_ms": window["latency_ms"],
        }
        await ctx.pool.call_all("close", timeout=30.0)
    throttled, plain = phases["throttled"], phases["unthrottled"]
    ratio = (
        round(throttled["server_cpu_s"] / plain["server_cpu_s"], 3)
        if throttled["server_cpu_s"] is not None and plain["server_cpu_s"]
        else None
    )
    result = {
        "throttle_ms": sc.throttle_ms,
        **phases,
        "server_cpu_throttled_over_unthrottled": ratio,
        "server_cpu_us_per_delivery": throttled["server_cpu_us_per_delivery"],
    }
    return {"connection": connection, "windows": windows, "result": result}
