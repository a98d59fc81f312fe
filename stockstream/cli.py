"""`python -m stockstream COMMAND`: serve, publish, simulate, kafka-bridge, token, bench."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any, Callable

from . import __version__
from .broker import BackendUnavailable
from .commands.arguments import add_flag, add_redis_argument
from .commands.arguments import setting_type as _setting_type
from .commands.extras import MissingExtra, require
from .config import Settings, SettingsError

COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {}


def command(
    name: str,
) -> Callable[[Callable[[argparse.Namespace, Settings], int]], Callable[[argparse.Namespace, Settings], int]]:
    def register(fn: Callable[[argparse.Namespace, Settings], int]) -> Callable[[argparse.Namespace, Settings], int]:
        COMMANDS[name] = fn
        return fn

    return register


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", type=_setting_type("host"), help="interface to listen on (HOST, default 0.0.0.0)")
    parser.add_argument("--port", type=_setting_type("port"), help="port (PORT, default 5000)")
    add_redis_argument(parser)
    add_flag(parser, "--simulate", "also run the built-in price simulator (SIMULATE)")
    parser.add_argument(
        "--simulate-rate",
        type=_setting_type("simulate_rate"),
        help="simulated updates per second per symbol (SIMULATE_RATE)",
    )
    add_flag(parser, "--require-auth", "refuse subscribes before authentication (REQUIRE_AUTH)")
    parser.add_argument("--log-level", type=_setting_type("log_level"), help="debug, info, warning, error (LOG_LEVEL)")


def _prog() -> str:
    """How the user ran us: the installed `stockstream` command or `python -m stockstream`."""
    return "stockstream" if sys.argv and os.path.basename(sys.argv[0]) == "stockstream" else "python -m stockstream"


def build_parser(*, bench: bool = False) -> argparse.ArgumentParser:
    """The whole command line. The benchmark's options are declared only with
    `bench=True` (which loads the benchmark); without it `bench` is listed but
    takes its arguments unparsed, so `--help` and the server never load it."""
    parser = argparse.ArgumentParser(
        prog=_prog(), description="stockstream: real-time stock price streaming over Socket.IO and WebSocket."
    )
    parser.add_argument("--version", action="version", version=f"stockstream {__version__}")
    parser.add_argument("--env-file", default=".env", help="read settings from this file first (default .env)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    add_server_arguments(sub.add_parser("serve", help="run the server (what run.py does)"))

    p = sub.add_parser("publish", help="publish one price (atomically: snapshot, seq, history, publish)")
    p.add_argument("symbol")
    p.add_argument("price", type=float)
    p.add_argument("--timestamp", type=int, help="ms since the epoch (default: now)")
    p.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra field passed through to clients (repeatable; numbers stay numbers)",
    )
    add_redis_argument(p)
    add_kafka_producer_argument(p)

    p = sub.add_parser("simulate", help="publish random-walk prices")
    p.add_argument("--symbols", type=_setting_type("simulate_symbols"), help="comma-separated symbols")
    p.add_argument("--rate", type=_setting_type("simulate_rate"), help="updates per second per symbol")
    p.add_argument("--duration", type=float, help="stop after this many seconds (default: run until Ctrl-C)")
    p.add_argument("--seed", type=int, help="random seed, for repeatable runs")
    add_redis_argument(p)
    add_kafka_producer_argument(p)

    from .commands import kafka_bridge

    kafka_bridge.add_arguments(sub.add_parser("kafka-bridge", help="consume price updates from Kafka into Redis"))

    from .commands.token import add_token_arguments

    add_token_arguments(sub.add_parser("token", help="mint a development JWT with the configured key"))

    from .commands import bench as bench_command

    bench_parser = sub.add_parser("bench", help=bench_command.HELP, add_help=bench)
    if bench:
        bench_command.bench_arguments(bench_parser)
    return parser


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    """The parsed command line; the benchmark is loaded only when `bench` is the command."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if args.command == "bench":
        return build_parser(bench=True).parse_args(argv)
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def add_kafka_producer_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kafka", action="store_true", help="produce to the Kafka topic instead of Redis")
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (KAFKA_BOOTSTRAP)")
    parser.add_argument("--topic", help="Kafka topic (KAFKA_TOPIC)")


def settings_from(args: argparse.Namespace) -> Settings:
    """The environment (and .env), overridden by the command line's flags."""
    from dotenv import load_dotenv

    load_dotenv(args.env_file, override=False)
    overrides = {}
    for name in (
        "host",
        "port",
        "redis_url",
        "redis_cluster",
        "simulate",
        "simulate_rate",
        "require_auth",
        "log_level",
    ):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    if getattr(args, "command", None) == "simulate":
        if args.symbols is not None:
            overrides["simulate_symbols"] = args.symbols
        if args.rate is not None:
            overrides["simulate_rate"] = args.rate
    if getattr(args, "bootstrap", None):
        overrides["kafka_bootstrap"] = args.bootstrap
    if getattr(args, "topic", None):
        overrides["kafka_topic"] = args.topic
    return Settings.from_env(**overrides)


@command("serve")
def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from .server import run

    run(settings)
    return 0


def _extra_fields(pairs: list[str]) -> dict[str, Any]:
    import orjson

    extra: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"stockstream publish: --extra expects KEY=VALUE, got {pair!r}")
        try:
            extra[key] = orjson.loads(value)
        except orjson.JSONDecodeError:
            extra[key] = value
    return extra


@command("publish")
def _publish(args: argparse.Namespace, settings: Settings) -> int:
    import orjson
    from .publisher import checked_price

    update = checked_price(args.symbol, args.price, args.timestamp, **_extra_fields(args.extra))
    if args.kafka:
        require("aiokafka", "kafka", "publish --kafka")
        from .kafka_bridge import produce

        asyncio.run(produce(settings, [update.to_dict()]))
        print(orjson.dumps(update.to_dict()).decode())
        return 0
    from .publisher import publish_checked

    result = asyncio.run(publish_checked(update, settings=settings))
    print(orjson.dumps(result).decode())
    return 0


@command("simulate")
def _simulate(args: argparse.Namespace, settings: Settings) -> int:
    if args.kafka:
        require("aiokafka", "kafka", "simulate --kafka")
    from .simulator import simulate

    return asyncio.run(simulate(settings, kafka=args.kafka, duration=args.duration, seed=args.seed))


@command("kafka-bridge")
def _kafka_bridge(args: argparse.Namespace, settings: Settings) -> int:
    # Caught before the bridge's (slower) imports, so a stop at any moment ends it cleanly.
    from .stop_signals import StopSignals

    signals = StopSignals()
    from .commands import kafka_bridge

    return kafka_bridge.main(args, settings, signals)


@command("token")
def _token(args: argparse.Namespace, settings: Settings) -> int:
    from .commands.token import token_command

    return token_command(args, settings)


@command("bench")
def _bench(args: argparse.Namespace, settings: Settings) -> int:
    from .commands import bench

    return bench.run(args)


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_arguments(argv)
    except MissingExtra as exc:
        print(f"stockstream: {exc}", file=sys.stderr)
        return 1
    try:
        settings = settings_from(args)
    except SettingsError as exc:
        print(f"stockstream: bad setting: {exc}", file=sys.stderr)
        return 2
    from .logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    try:
        return COMMANDS[args.command](args, settings)
    except SettingsError as exc:
        print(f"stockstream: bad setting: {exc}", file=sys.stderr)
        return 2
    except (ValueError, RuntimeError, BackendUnavailable) as exc:
        print(f"stockstream {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
