"""Turning run records into the readable tables and the JSON report."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any, Callable, Optional

# The figures the comparison is about: (scenario, label, how to read it from a run's result, better).
HEADLINES: list[tuple[str, str, Callable[[dict[str, Any]], Optional[float]], str]] = [
    ("fanout", "fanout: highest sustained deliveries/s", lambda r: r.get("max_deliveries_per_s"), "higher"),
    # What one server core would carry at that step's cost: comparable even
    # when the load generator, not the server, set the highest rate.
    ("fanout", "fanout: deliveries per server CPU-second", lambda r: _per_cpu_second(r), "higher"),
    ("spread", "spread: server CPU µs per delivery", lambda r: r.get("server_cpu_us_per_delivery"), "lower"),
    ("latency", "latency: p99 ms", lambda r: (r.get("latency_ms") or {}).get("p99"), "lower"),
    ("idle", "idle: server RSS bytes per connection", lambda r: r.get("server_rss_per_connection_bytes"), "lower"),
    ("connect", "connect: connections/s", lambda r: r.get("connects_per_s"), "higher"),
    ("connect", "connect: subscribes/s", lambda r: r.get("subscribes_per_s"), "higher"),
    ("candles", "candles: server CPU µs per tick", lambda r: r.get("server_cpu_us_per_tick_candles"), "lower"),
    (
        "throttle",
        "throttle: server CPU throttled / unthrottled",
        lambda r: r.get("server_cpu_throttled_over_unthrottled"),
        "lower",
    ),
]


def _per_cpu_second(result: dict[str, Any]) -> Optional[float]:
    per_delivery = result.get("server_cpu_us_per_delivery")
    return 1e6 / per_delivery if per_delivery else None


# Other processes using this much of the server's core(s) make a run's figures suspect.
NOISY_PERCENT = 10.0


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:,.{digits}f}" if abs(value) >= 1 else f"{value:.3g}"
    return str(value)


def _bytes(value: Optional[int]) -> str:
    if value is None:
        return "-"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(value) >= size:
            return f"{value / size:,.1f} {unit}"
    return f"{value:,} B"


def table(rows: list[list[str]], header: Optional[list[str]] = None) -> str:
    data = ([header] if header else []) + rows
    widths = [max(len(row[i]) for row in data) for i in range(len(data[0]))]
    lines = []
    for n, row in enumerate(data):
        lines.append(
            "  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row))
        )
        if header and n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join("  " + line for line in lines)


def _latency(lat: Optional[dict[str, Any]]) -> str:
    if not lat:
        return "-"
    return " / ".join(_fmt(lat.get(k), 2) for k in ("p50", "p90", "p99", "p999", "max"))


def _client(result: dict[str, Any]) -> str:
    client = result.get("client") or {}
    if not client:
        return "-"
    text = f"{_fmt(client.get('cpu_percent_total'))}% of {client.get('cores')} core(s)"
    return text + ("  CLIENT SATURATED" if client.get("saturated") else "")


def format_run(record: dict[str, Any]) -> str:
    instances = record.get("instances", 1)
    on = f"{instances} x {record['server']}" if instances > 1 else record["server"]
    headers = f", {record['headers']} headers" if record.get("headers", "few") != "few" else ""
    head = f"== {record['scenario']} on {on} (round {record['round']}{headers}) =="
    if record.get("error"):
        return head + "\n  error: " + record["error"]
    result = record.get("result") or {}
    conn = record.get("connection") or {}
    rows = [
        [
            "connections",
            f"{_fmt(conn.get('connected'))} of {_fmt(conn.get('requested'))}"
            + (f" in {_fmt(conn.get('elapsed_s'), 2)}s ({_fmt(conn.get('per_s'))}/s)" if conn.get("per_s") else "")
            + (f", {_fmt(conn.get('failed'))} failed" if conn.get("failed") else ""),
        ]
    ]
    by_port = conn.get("by_port") or {}
    if len(by_port) > 1:
        rows.append(["connections per instance", " / ".join(_fmt(n) for _, n in sorted(by_port.items()))])
    shards = record.get("cluster_messages") or {}
    if shards:
        total = sum(shards.values()) or 1
        rows.append(
            [
                "pub/sub messages per master",
                " / ".join(f"{node} {n} ({100 * n / total:.1f}%)" for node, n in sorted(shards.items())),
            ]
        )
    scenario = record["scenario"]
    if scenario in ("fanout", "spread", "latency"):
        if scenario == "fanout":
            rows.append(["highest sustained deliveries/s", _fmt(result.get("max_deliveries_per_s"))])
            rows.append(["at tick rate", f"{_fmt(result.get('max_rate'))} /s"])
            rows.append(["limited by", str(result.get("limited_by"))])
        rows += [
            ["deliveries", _fmt(result.get("deliveries"))],
            ["deliveries/s", _fmt(result.get("deliveries_per_s"))],
            [
                "loss / duplicates / out of order",
                " / ".join(_fmt(result.get(k)) for k in ("loss", "duplicates", "out_of_order")),
            ],
            ["latency ms p50/p90/p99/p99.9/max", _latency(result.get("latency_ms"))],
            ["server CPU", f"{_fmt(result.get('server_cpu_percent'))}%"],
            ["server CPU µs per delivery", _fmt(result.get("server_cpu_us_per_delivery"), 2)],
            ["server RSS", _bytes(result.get("server_rss_bytes"))],
            ["server RSS per connection", _bytes(result.get("server_rss_per_connection_bytes"))],
            ["load generator CPU", _client(result)],
        ]
        other = result.get("other_cpu_on_server_cores_percent")
        if other is not None and other >= NOISY_PERCENT:
            rows.append(["other processes on the server's core", f"{_fmt(other)}%  NOISY: figures may be off"])
        if result.get("disconnects"):
            rows.append(["disconnects", _fmt(result["disconnects"])])
        if result.get("server_errors"):
            rows.append(["server errors", ", ".join(f"{k} x{v}" for k, v in result["server_errors"].items())])
    elif scenario == "candles":
        candles, updates = result.get("candles") or {}, result.get("stock_updates") or {}
        rows += [
            ["candle events/s", _fmt(result.get("candle_events_per_s"))],
            [
                "server CPU µs per tick: candles / stockUpdate",
                f"{_fmt(result.get('server_cpu_us_per_tick_candles'), 2)} / "
                f"{_fmt(result.get('server_cpu_us_per_tick_updates'), 2)}"
                + (f"  (x{result['cpu_per_tick_ratio']:.2f})" if result.get("cpu_per_tick_ratio") else ""),
            ],
            [
                "server CPU: candles / stockUpdate",
                f"{_fmt(candles.get('server_cpu_percent'))}% / {_fmt(updates.get('server_cpu_percent'))}%",
            ],
            [
                "stockUpdate deliveries/s (loss)",
                f"{_fmt(updates.get('deliveries_per_s'))} ({_fmt(updates.get('loss'))})",
            ],
            ["load generator CPU: candles", _client(candles)],
        ]
        if result.get("disconnects"):
            rows.append(["disconnects", _fmt(result["disconnects"])])
        if result.get("server_errors"):
            rows.append(["server errors", ", ".join(f"{k} x{v}" for k, v in result["server_errors"].items())])
    elif scenario == "idle":
        rows += [
            ["still open after idling", _fmt(result.get("still_open"))],
            ["server RSS", _bytes(result.get("server_rss_bytes"))],
            ["server RSS per connection", _bytes(result.get("server_rss_per_connection_bytes"))],
            ["server CPU while idle", f"{_fmt(result.get('server_idle_cpu_percent'))}%"],
        ]
    elif scenario == "throttle":
        for phase in ("throttled", "unthrottled"):
            figures = result.get(phase) or {}
            rows += [
                [f"{phase}: ticks / deliveries", f"{_fmt(figures.get('ticks'))} / {_fmt(figures.get('deliveries'))}"],
                [
                    f"{phase}: server CPU",
                    f"{_fmt(figures.get('server_cpu_s'), 2)} s ({_fmt(figures.get('server_cpu_percent'))}%)",
                ],
                [
                    f"{phase}: server CPU µs per delivery / per tick",
                    f"{_fmt(figures.get('server_cpu_us_per_delivery'), 2)} / {_fmt(figures.get('server_cpu_us_per_tick'), 2)}",
                ],
                [
                    f"{phase}: duplicates / out of order",
                    f"{_fmt(figures.get('duplicates'))} / {_fmt(figures.get('out_of_order'))}",
                ],
            ]
        rows.append(
            ["server CPU throttled / unthrottled", _fmt(result.get("server_cpu_throttled_over_unthrottled"), 3)]
        )
    elif scenario == "connect":
        rows += [
            ["connections/s", _fmt(result.get("connects_per_s"))],
            ["connect ms p50/p90/p99/p99.9/max", _latency(result.get("connect_ms"))],
            ["subscribes/s", _fmt(result.get("subscribes_per_s"))],
            ["subscribe ms p50/p90/p99/p99.9/max", _latency(result.get("subscribe_ms"))],
            ["load generator CPU", _client(result)],
        ]
    if conn.get("errors"):
        rows.append(["connect errors", ", ".join(f"{k} x{v}" for k, v in conn["errors"].items())])
    text = head + "\n" + table(rows)
    steps = [w for w in record.get("windows", []) if "passed" in w]
    if steps:
        step_rows = [
            [
                f"{_fmt(w['rate_target'])}",
                _fmt(w["deliveries_per_s"]),
                _fmt(w["latency_ms"]["p50"], 2),
                _fmt(w["latency_ms"]["p99"], 2),
                _fmt(w["loss"]),
                _fmt(w["server_cpu_percent"]),
                _fmt(w["client"]["cpu_percent_total"]),
                _fmt(w.get("other_cpu_on_server_cores_percent")),
                "ok" if w["passed"] else "FAIL",
            ]
            for w in steps
        ]
        text += "\n" + table(
            step_rows, ["ticks/s", "deliveries/s", "p50 ms", "p99 ms", "loss", "server %", "client %", "others %", ""]
        )
    return text


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of each headline figure per server across rounds, and stockstream/node ratios."""
    servers = sorted({r["server"] for r in records}, key=lambda s: (s != "stockstream", s))
    summary: dict[str, Any] = {"servers": {}, "ratios": {}}
    for server in servers:
        figures: dict[str, Any] = {}
        for scenario, label, read, better in HEADLINES:
            values = [
                v
                for r in records
                if r["server"] == server and r["scenario"] == scenario and not r.get("error")
                for v in [read(r.get("result") or {})]
                if v is not None
            ]
            if values:
                figures[label] = {"median": statistics.median(values), "runs": values, "better": better}
        summary["servers"][server] = figures
    summary["noisy_runs"] = [f"{r['scenario']} on {r['server']} (round {r['round']})" for r in records if _noisy(r)]
    ours, theirs = summary["servers"].get("stockstream", {}), summary["servers"].get("node", {})
    for label, figure in ours.items():
        other = theirs.get(label)
        if other and other["median"]:
            summary["ratios"][label] = round(figure["median"] / other["median"], 3)
    return summary


def _noisy(record: dict[str, Any]) -> bool:
    """Did other processes take a real share of the server's core in any measured window?"""
    return any(
        (w.get("other_cpu_on_server_cores_percent") or 0.0) >= NOISY_PERCENT
        for w in record.get("windows", [])
        if not w.get("warmup")
    )


def format_summary(summary: dict[str, Any]) -> str:
    servers = list(summary["servers"])
    labels = [label for _, label, _, _ in HEADLINES if any(label in summary["servers"][s] for s in servers)]
    if not labels:
        return ""
    header = ["figure (median of rounds)"] + servers + (["stockstream/node"] if summary["ratios"] else [])
    rows = []
    for label in labels:
        row = [label] + [_fmt((summary["servers"][s].get(label) or {}).get("median"), 2) for s in servers]
        if summary["ratios"]:
            ratio = summary["ratios"].get(label)
            better = next(b for _, lab, _, b in HEADLINES if lab == label)
            row.append(f"{ratio:.2f} ({better} is better)" if ratio is not None else "-")
        rows.append(row)
    text = "== summary ==\n" + table(rows, header)
    if summary.get("noisy_runs"):
        text += (
            f"\n  note: other processes used {NOISY_PERCENT:g}% or more of the server's core during: "
            + "; ".join(summary["noisy_runs"])
            + ". Prefer a quiet machine, or more --rounds."
        )
    return text


def environment() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "usable_cpus": sorted(os.sched_getaffinity(0)),
    }


def write_json(path: Path, report: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    tmp.replace(path)  # a reader never sees half a report
