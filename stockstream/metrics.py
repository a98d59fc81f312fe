"""Prometheus metrics at `GET /metrics`, read from counters the core already keeps.

Nothing here runs on the delivery path: a custom collector reads the hub, the
flush scheduler's DeliveryStats and the broker when Prometheus scrapes, so
streaming costs the same with or without a scraper. Each application gets its
own CollectorRegistry (two instances in one process never share series), and
no metric carries a per-symbol or per-user label, so cardinality is fixed.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING, Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)

if TYPE_CHECKING:
    from .node import Node

# Publish-to-send delay: sub-millisecond on one host, seconds when a client
# or the backend falls behind.
DELAY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class DelayHistogram:
    """Cumulative histogram of the delay samples drained at each scrape."""

    def __init__(self, bounds: tuple[float, ...] = DELAY_BUCKETS) -> None:
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self._sum = 0.0

    def observe_all(self, samples: list[float]) -> None:
        bounds, counts = self._bounds, self._counts
        for sample in samples:
            # A publisher's clock slightly ahead of ours reads as a negative delay.
            sample = max(0.0, sample)
            counts[bisect.bisect_left(bounds, sample)] += 1
            self._sum += sample

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        buckets = []
        running = 0
        for bound, count in zip(self._bounds, self._counts):
            running += count
            buckets.append((repr(bound), running))
        buckets.append(("+Inf", running + self._counts[-1]))
        return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=self._sum)


class NodeCollector:
    """Reads one Node's counters at scrape time."""

    def __init__(self, node: "Node") -> None:
        self._node = node
        self._delays = DelayHistogram()

    def collect(self) -> Iterator[Metric]:
        node = self._node
        hub = node.hub
        stats = node.scheduler.stats
        broker = node.broker

        info = InfoMetricFamily("stockstream_broker", "The price backend this instance uses")
        info.add_metric([], {"backend": broker.kind})
        yield info
        yield GaugeMetricFamily(
            "stockstream_broker_listener_up",
            "1 while the backend is reachable and the listener subscribed, else 0",
            value=1 if broker.ready else 0,
        )
        yield GaugeMetricFamily(
            "stockstream_server_draining", "1 once a graceful shutdown has begun", value=1 if node.draining else 0
        )

        connections = GaugeMetricFamily(
            "stockstream_connections_active", "Open client connections", labels=["transport"]
        )
        sessions = node.services.sessions
        for transport in ("socketio", "websocket"):
            connections.add_metric([transport], sessions.count(transport))
        yield connections
        yield GaugeMetricFamily(
            "stockstream_subscriptions_active",
            "Subscriptions held, one per connection and symbol (and one per live candle stream)",
            value=hub.subscription_count,
        )
        yield GaugeMetricFamily(
            "stockstream_symbols_active",
            "Distinct symbols with at least one subscriber on this instance",
            value=len(hub.rooms),
        )
        yield GaugeMetricFamily(
            "stockstream_candle_streams_active",
            "Live candles built on this instance, one per symbol and interval followed",
            value=len(node.services.candles),
        )
        yield CounterMetricFamily(
            "stockstream_candle_events",
            "Live candle events handed to clients (one per event and client)",
            value=node.services.candles.counts.events,
        )
        yield GaugeMetricFamily(
            "stockstream_auth_users_active",
            "Distinct authenticated users with an open connection",
            value=len(hub.users),
        )

        yield CounterMetricFamily(
            "stockstream_broker_updates_received",
            "Price updates the listener received from the backend",
            value=hub.updates_received,
        )
        if broker.counts_reconnects:
            yield CounterMetricFamily(
                "stockstream_broker_reconnects",
                "Times the listener reconnected to Redis (each followed by a snapshot resync)",
                value=broker.reconnects,
            )
        malformed = broker.malformed
        if malformed is not None:
            yield CounterMetricFamily(
                "stockstream_broker_malformed_messages",
                "Messages on stock:* channels dropped as not valid updates",
                value=malformed.count,
            )

        delivery_counters = (
            (
                "stockstream_delivery_updates",
                "Price updates handed to local subscribers (one per update and client)",
                hub.deliveries,
            ),
            (
                "stockstream_delivery_dropped",
                "Queued messages discarded unsent (connection closed or dropped as too slow)",
                stats.dropped,
            ),
            (
                "stockstream_delivery_writes",
                "Socket writes; one carries every message pending for a connection",
                stats.writes,
            ),
            (
                "stockstream_delivery_conflated",
                "Queued updates replaced by a newer price of the same symbol for a client behind",
                stats.conflated,
            ),
            (
                "stockstream_delivery_slow_disconnects",
                "Clients disconnected with slow_client after staying behind too long",
                stats.slow_disconnects,
            ),
        )
        for name, documentation, value in delivery_counters:
            yield CounterMetricFamily(name, documentation, value=value)

        recovery = node.socketio.recovery_stats
        yield CounterMetricFamily(
            "stockstream_recovery_saved",
            "Socket.IO sessions kept for recovery when their connection dropped",
            value=recovery.saved,
        )
        yield CounterMetricFamily(
            "stockstream_recovery_recovered",
            "Socket.IO reconnects that recovered their session (connection state recovery)",
            value=recovery.recovered,
        )
        yield CounterMetricFamily(
            "stockstream_recovery_not_recovered",
            "Socket.IO reconnects naming a session that could not be recovered (fresh session)",
            value=recovery.not_recovered,
        )

        # The scheduler appends a sample every few writes; taking the list
        # here keeps the delivery path to one append.
        samples, stats.delays = stats.delays, []
        self._delays.observe_all(samples)
        yield self._delays.family(
            "stockstream_delivery_delay_seconds",
            "Seconds from an update's timestamp to its write to a client (sampled)",
        )


def build_registry(node: "Node") -> CollectorRegistry:
    """A registry of this node's metrics plus the process's own (CPU, memory, GC)."""
    registry = CollectorRegistry()
    registry.register(NodeCollector(node))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class MetricsRoute:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def attach(self, app: web.Application) -> None:
        app.router.add_get("/metrics", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(self._registry), headers={"Content-Type": content_type})
