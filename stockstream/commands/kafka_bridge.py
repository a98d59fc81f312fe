"""`python -m stockstream kafka-bridge`: consume price updates from Kafka into Redis."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses

from ..config import Settings
from ..stop_signals import StopSignals
from .arguments import add_redis_argument
from .extras import require


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers HOST:PORT[,HOST:PORT] (KAFKA_BOOTSTRAP)")
    parser.add_argument("--topic", help="topic of price updates (KAFKA_TOPIC, default stock-prices)")
    parser.add_argument(
        "--group",
        help="consumer group (KAFKA_GROUP, default stockstream); bridges in one group share the topic's partitions",
    )
    parser.add_argument(
        "--dead-letter-topic",
        help="topic that receives rejected records (KAFKA_DEAD_LETTER_TOPIC; default: only log them)",
    )
    add_redis_argument(parser)


def main(args: argparse.Namespace, settings: Settings, signals: StopSignals | None = None) -> int:
    """`python -m stockstream kafka-bridge`: runs until SIGTERM or SIGINT, then exits 0.

    `signals` catches the stop signals from as early in the process as the
    caller could; a stop that arrives before the bridge runs is kept for it."""
    signals = signals or StopSignals()
    overrides = {}
    if getattr(args, "group", None):
        overrides["kafka_group"] = args.group
    if getattr(args, "dead_letter_topic", None):
        overrides["kafka_dead_letter_topic"] = args.dead_letter_topic
    settings = dataclasses.replace(settings, **overrides)
    if not settings.kafka_bootstrap:
        raise RuntimeError("no Kafka to read from: give --bootstrap HOST:PORT or set KAFKA_BOOTSTRAP")
    if not settings.backend_url:
        raise RuntimeError("the bridge publishes into Redis: give --redis-url or set REDIS_URL or REDIS_HOST")
    require("aiokafka", "kafka", "the Kafka bridge")
    from ..kafka_bridge import run_bridge

    return asyncio.run(run_bridge(settings, signals))
