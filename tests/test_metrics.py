"""GET /metrics: Prometheus text, fixed cardinality, read from the core's own counters."""

from __future__ import annotations

from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from stockstream.metrics import DELAY_BUCKETS, DelayHistogram
from tests.support.inprocess import inprocess_stack
from tests.support.waiting import eventually

# The only labels stockstream's own metrics carry: never a symbol or a user.
ALLOWED_LABELS = {"transport", "backend", "le"}
UPDATES = 40


async def scrape(url: str) -> tuple[str, dict[str, Any]]:
    """The content type and {sample name or name{label=value}: value} of one scrape."""
    async with aiohttp.ClientSession() as http:
        async with http.get(url + "/metrics") as resp:
            assert resp.status == 200
            content_type = resp.headers["Content-Type"]
            text = await resp.text()
    samples: dict[str, Any] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = sample.name + "".join(f"{{{k}={v}}}" for k, v in sorted(sample.labels.items()))
            samples[key] = sample.value
            if sample.name.startswith("stockstream_"):
                assert set(sample.labels) <= ALLOWED_LABELS, sample
    return content_type, samples


async def test_metrics_follow_connections_subscriptions_and_deliveries(stack, clients) -> None:
    content_type, idle = await scrape(stack.url)
    assert content_type.startswith("text/plain")
    assert idle["stockstream_connections_active{transport=socketio}"] == 0
    assert idle["stockstream_broker_info{backend=%s}" % stack.backend] == 1
    assert idle["stockstream_broker_listener_up"] == 1
    assert idle["stockstream_server_draining"] == 0
    assert "process_resident_memory_bytes" in idle

    sio = await clients.sio(stack.url)
    assert (await sio.subscribe(["AAPL", "MSFT"]))["ok"] is True
    ws = await clients.ws(stack.url)
    assert (await ws.subscribe("AAPL"))["ok"] is True
    # One at a time, so each is a write of its own: the delivery path samples
    # the delay of every few writes only.
    for n in range(UPDATES):
        await stack.publish("AAPL", 189.0 + n, n=n)
        await sio.expect_update(lambda u: u.get("n") == n)
        await ws.expect_update(lambda u: u.get("n") == n)

    _, busy = await scrape(stack.url)
    assert busy["stockstream_connections_active{transport=socketio}"] == 1
    assert busy["stockstream_connections_active{transport=websocket}"] == 1
    assert busy["stockstream_subscriptions_active"] == 3
    assert busy["stockstream_symbols_active"] == 2
    assert busy["stockstream_broker_updates_received_total"] >= UPDATES
    assert busy["stockstream_delivery_writes_total"] >= 2 * UPDATES
    assert busy["stockstream_delivery_slow_disconnects_total"] == 0
    delays = busy["stockstream_delivery_delay_seconds_count"]
    assert delays >= 1
    assert busy["stockstream_delivery_delay_seconds_bucket{le=+Inf}"] == delays
    # A scrape takes the samples; the histogram keeps counting across scrapes.
    _, again = await scrape(stack.url)
    assert again["stockstream_delivery_delay_seconds_count"] >= delays

    await ws.close()
    await eventually(
        lambda: _value(stack.url, "stockstream_connections_active{transport=websocket}", 0),
        what="the closed WebSocket to leave the gauge",
    )
    _, after = await scrape(stack.url)
    assert after["stockstream_subscriptions_active"] == 2


async def _value(url: str, key: str, expected: float) -> bool:
    return (await scrape(url))[1].get(key) == expected


async def test_redis_metrics_count_malformed_messages(redis_url, clients) -> None:
    async with inprocess_stack("redis", redis_url) as stack:
        ws = await clients.ws(stack.url)
        assert (await ws.subscribe("AAPL"))["ok"] is True
        _, before = await scrape(stack.url)
        assert before["stockstream_broker_reconnects_total"] == 0
        assert await stack.raw.publish_only("AAPL", b"not json") >= 1
        await eventually(
            lambda: _value(
                stack.url,
                "stockstream_broker_malformed_messages_total",
                before["stockstream_broker_malformed_messages_total"] + 1,
            ),
            what="the malformed message to be counted",
        )


async def test_the_memory_backend_reports_no_redis_figures() -> None:
    """An embedded backend has no connection to lose and reads nothing it did not write:
    /metrics carries no reconnect or malformed-message counter for it."""
    async with inprocess_stack("memory") as stack:
        _, samples = await scrape(stack.url)
    assert "stockstream_broker_updates_received_total" in samples
    assert "stockstream_broker_reconnects_total" not in samples
    assert "stockstream_broker_malformed_messages_total" not in samples


async def test_each_instance_has_its_own_registry() -> None:
    async with inprocess_stack("memory") as first, inprocess_stack("memory") as second:
        _, a = await scrape(first.url)
        _, b = await scrape(second.url)
        assert a.keys() == b.keys()
        assert a["stockstream_connections_active{transport=websocket}"] == 0


def test_delay_histogram_is_cumulative() -> None:
    histogram = DelayHistogram()
    histogram.observe_all([-0.5, 0.0004, 0.003, 0.003, 2.0, 99.0])
    histogram.observe_all([0.02])
    family = histogram.family("delay_seconds", "test")
    buckets = {s.labels["le"]: s.value for s in family.samples if s.name.endswith("_bucket")}
    assert len(buckets) == len(DELAY_BUCKETS) + 1
    assert buckets["0.0005"] == 2  # a negative delay (clock skew) counts as zero
    assert buckets["0.005"] == 4
    assert buckets["0.025"] == 5
    assert buckets["10.0"] == 6
    assert buckets["+Inf"] == 7
    total = {s.name: s.value for s in family.samples}
    assert total["delay_seconds_count"] == 7
    assert abs(total["delay_seconds_sum"] - (0.0004 + 0.006 + 2.0 + 99.0 + 0.02)) < 1e-9
