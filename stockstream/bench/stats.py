"""Latency histograms and per-window delivery counts, cheap enough for the hot path.

Latencies are kept in a log-linear histogram (exact below 64 µs, then 32
sub-buckets per power of two, so about 3% resolution): fixed memory however
long a run lasts, and workers' histograms merge by adding lists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

SUB_BITS = 5
LINEAR_LIMIT = 2 << SUB_BITS  # values below are their own bucket
N_BUCKETS = LINEAR_LIMIT + (1 << SUB_BITS) * 46  # up to 2**52 µs: far beyond any run


def bucket_of(value: int) -> int:
    if value < LINEAR_LIMIT:
        return value if value > 0 else 0
    shift = value.bit_length() - (SUB_BITS + 1)
    return min((shift << SUB_BITS) + (value >> shift), N_BUCKETS - 1)


def bucket_low(index: int) -> int:
    """Smallest value that falls in bucket `index`."""
    if index < LINEAR_LIMIT:
        return index
    shift = (index >> SUB_BITS) - 1
    return (index - (shift << SUB_BITS)) << shift


def bucket_mid(index: int) -> float:
    if index < LINEAR_LIMIT:
        return float(index)
    shift = (index >> SUB_BITS) - 1
    return bucket_low(index) + ((1 << shift) - 1) / 2


def new_histogram() -> list[int]:
    return [0] * N_BUCKETS


def merge_histograms(histograms: Iterable[list[int]]) -> list[int]:
    total = new_histogram()
    for hist in histograms:
        for i, count in enumerate(hist):
            if count:
                total[i] += count
    return total


def percentiles(hist: list[int], points: Iterable[float], maximum: int) -> dict[float, float | None]:
    """Value at each percentile point (0-100); never above the exact maximum seen."""
    count = sum(hist)
    wanted = sorted(points)
    result: dict[float, float | None] = {p: None for p in wanted}
    if count == 0:
        return result
    seen = 0
    pending = list(wanted)
    for i, n in enumerate(hist):
        if not n:
            continue
        seen += n
        while pending and seen >= pending[0] / 100.0 * count:
            result[pending.pop(0)] = min(bucket_mid(i), float(maximum))
        if not pending:
            break
    for p in pending:
        result[p] = float(maximum)
    return result


LATENCY_POINTS = (50.0, 90.0, 99.0, 99.9)


def latency_summary_ms(hist: list[int], maximum_us: int) -> dict[str, float | None]:
    """p50/p90/p99/p99.9/max in milliseconds from a histogram of microseconds."""
    values = percentiles(hist, LATENCY_POINTS, maximum_us)
    names = {50.0: "p50", 90.0: "p90", 99.0: "p99", 99.9: "p999"}
    out: dict[str, float | None] = {}
    for point, name in names.items():
        v = values[point]
        out[name] = None if v is None else round(v / 1000.0, 3)
    out["max"] = round(maximum_us / 1000.0, 3) if sum(hist) else None
    return out


@dataclass
class WindowCounts:
    """What the workers saw during one measurement window, merged."""

    candles: int = 0  # live candle events received
    delivered: int = 0  # in-window updates received, duplicates included
    duplicates: int = 0
    out_of_order: int = 0
    stale: int = 0  # updates from before the window (snapshots, late ones)
    foreign: int = 0  # updates not published by this run
    disconnects: int = 0
    server_errors: dict[str, int] = field(default_factory=dict)
    latency_hist: list[int] = field(default_factory=new_histogram)
    latency_max_us: int = 0

    @property
    def distinct(self) -> int:
        return self.delivered - self.duplicates

    @classmethod
    def merge(cls, parts: Iterable[Mapping[str, Any]]) -> "WindowCounts":
        total = cls()
        hists = []
        for part in parts:
            for name in ("candles", "delivered", "duplicates", "out_of_order", "stale", "foreign", "disconnects"):
                setattr(total, name, getattr(total, name) + int(part[name]))
            for code, n in part["server_errors"].items():
                total.server_errors[code] = total.server_errors.get(code, 0) + n
            hists.append(part["latency_hist"])
            total.latency_max_us = max(total.latency_max_us, int(part["latency_max_us"]))
        total.latency_hist = merge_histograms(hists)
        return total
