"""`python -m stockstream bench`: arguments, the run plan, and the report."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import resource
import shutil
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn, Optional
from urllib.parse import urlsplit

from .clients import TRANSPORTS, Target, loopback_sources
from .progress import Progress
from .reconnect import PUBLISHERS, format_reconnect, run_reconnect_scenario
from .report import environment, format_run, format_summary, summarize, write_json
from .runner import BenchConfig, run_one
from .scenarios import FULL, NAMES, QUICK, RunOptions, Scenario, describe
from .servers import parse_cpu_list, usable_cpus
from .wsproto import HEADER_SETS

# File descriptors this process needs besides one per client connection.
FD_HEADROOM = 1024

EPILOG = (
    "scenarios:\n"
    + "".join(f"  {s.name:<8} {s.description}\n" for s in FULL.values())
    + """
--quick shrinks every scenario to a few seconds; --clients, --rate, --duration ... override single figures.

examples:
  python -m stockstream bench --scenario latency --quick
  python -m stockstream bench --scenario reconnect --publisher raw
  python -m stockstream bench --compare --rounds 3 --json bench.json
  python -m stockstream bench --scenario fanout --instances 3 --server-cpus 0-2 --client-cpus 3-7
  python -m stockstream bench --url http://prod-host:5000 --redis-url redis://prod-redis:6379/0 --scenario spread
"""
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Load generator: many WebSocket clients against a stockstream server (started here, "
        "or yours with --url), prices published through Redis, and a report of throughput, "
        "loss, latency, CPU and memory."
    )
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.set_defaults(bench_parser=parser)  # so main() can print the usage line with an error
    what = parser.add_argument_group("what to run")
    what.add_argument(
        "--scenario", default="all", metavar="NAMES", help=f"comma-separated: {', '.join(NAMES)}, or all (default)"
    )
    what.add_argument("--quick", action="store_true", help="small and short: a smoke test in seconds")
    what.add_argument(
        "--compare",
        action="store_true",
        help="also run the Node.js reference server, alternating with stockstream, and print ratios",
    )
    what.add_argument("--rounds", type=int, default=1, metavar="N", help="repeat everything N times (default 1)")
    what.add_argument(
        "--publisher",
        choices=PUBLISHERS,
        default="ours",
        help="reconnect: who publishes the prices: ours (stockstream's atomic publish, with seq; "
        "default) or raw (the original design's SET + PUBLISH, without seq)",
    )
    what.add_argument(
        "--headers",
        choices=HEADER_SETS,
        default="few",
        help="the clients' upgrade request: few headers (default), or a browser's dozen "
        "with a ~400-byte cookie (what a server may keep per connection grows with them)",
    )
    what.add_argument(
        "--transport", choices=TRANSPORTS, default="socketio", help="socketio (default) or websocket (/live-price)"
    )

    target = parser.add_argument_group("target (default: start a stockstream server and a private Redis here)")
    target.add_argument("--url", help="an existing server, e.g. http://host:5000 (https/wss for TLS)")
    target.add_argument(
        "--server-pid",
        type=int,
        metavar="PID",
        help="with --url on this machine: measure that process's CPU and memory",
    )
    target.add_argument(
        "--redis-url",
        help="the Redis the server reads (required with --url); default: a private redis-server on a free port",
    )
    target.add_argument(
        "--redis-cluster",
        action="store_true",
        dest="bench_redis_cluster",
        help="run on a private Redis Cluster of 3 masters (sharded pub/sub) instead of one Redis",
    )
    target.add_argument("--token", default="", help="JWT to authenticate the clients with")
    target.add_argument(
        "--instances",
        type=int,
        default=1,
        metavar="N",
        help="servers started here side by side on the one Redis, clients spread over them "
        "(each pinned to its own server core: give --server-cpus one core per instance)",
    )
    target.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the stockstream server started here (repeatable)",
    )

    scale = parser.add_argument_group("scale (override the scenario's figures)")
    scale.add_argument("--clients", type=int, metavar="N")
    scale.add_argument("--symbols", type=int, metavar="N", help="size of the symbol universe")
    scale.add_argument("--symbols-per-client", type=int, metavar="N")
    scale.add_argument("--rate", type=float, metavar="TICKS", help="ticks per second (fanout: the first step)")
    scale.add_argument("--duration", type=float, metavar="SECONDS", help="length of a measured window or step")
    scale.add_argument("--warmup", type=float, metavar="SECONDS", help="unmeasured window before measuring")
    scale.add_argument("--steps", type=int, metavar="N", help="fanout: rate steps at most")
    scale.add_argument(
        "--step-factor", type=float, default=1.5, metavar="F", help="fanout: rate multiplier per step (default 1.5)"
    )
    scale.add_argument(
        "--refine",
        type=int,
        default=2,
        metavar="N",
        help="fanout: bisection steps between the last passing and the first failing rate (default 2)",
    )
    scale.add_argument(
        "--max-p99-ms",
        type=float,
        default=100.0,
        metavar="MS",
        help="fanout: a step with a p99 above this fails (default 100)",
    )

    gen = parser.add_argument_group("load generator")
    gen.add_argument("--workers", type=int, metavar="N", help="client processes (default: one per load-generator core)")
    gen.add_argument("--server-cpus", metavar="LIST", help="cores for the server started here (default: the first)")
    gen.add_argument("--client-cpus", metavar="LIST", help="cores for the load generator (default: the others)")
    gen.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    gen.add_argument(
        "--connect-concurrency",
        type=int,
        default=100,
        metavar="N",
        help="connection attempts in flight per worker (default 100)",
    )
    gen.add_argument(
        "--connect-rate",
        type=float,
        default=0.0,
        metavar="N",
        help="new connections per second per worker, to ramp up gently (default: no limit)",
    )
    gen.add_argument(
        "--connect-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="limit for one connect-and-subscribe attempt (default 30)",
    )

    out = parser.add_argument_group("output")
    out.add_argument("--json", type=Path, metavar="FILE", help="write the full report as JSON")
    out.add_argument("--quiet", action="store_true", help="no progress line")


class UsageError(ValueError):
    pass


def _scenarios(args: argparse.Namespace) -> list[Scenario]:
    names = NAMES if args.scenario.strip() == "all" else [n.strip() for n in args.scenario.split(",") if n.strip()]
    unknown = [n for n in names if n not in FULL]
    if unknown or not names:
        raise UsageError(f"unknown scenario {', '.join(unknown) or '(none)'}; choose from {', '.join(NAMES)} or all")
    presets = QUICK if args.quick else FULL
    overrides = {
        name: getattr(args, name)
        for name in ("clients", "symbols", "symbols_per_client", "rate", "duration", "warmup", "steps")
        if getattr(args, name) is not None
    }
    for name, value in overrides.items():
        if value < 0 or (value == 0 and name not in ("warmup",)):
            raise UsageError(f"--{name.replace('_', '-')} must be above 0")
    return [dataclasses.replace(presets[n], **overrides) for n in dict.fromkeys(names)]


def _target(url: str, transport: str, token: str) -> Target:
    parts = urlsplit(url if "://" in url else "http://" + url)
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
        raise UsageError(f"--url must look like http://host:port, not {url!r}")
    tls = parts.scheme in ("https", "wss")
    return Target(
        parts.hostname,
        parts.port or (443 if tls else 80),
        transport,
        tls,
        token,
        local_hosts=loopback_sources(parts.hostname),
    )


def _pinning(
    args: argparse.Namespace, starts_servers: bool, instances: int = 1
) -> tuple[Optional[list[int]], Optional[list[int]]]:
    usable = usable_cpus()
    if args.no_pin:
        return None, None
    server = parse_cpu_list(args.server_cpus) if args.server_cpus else None
    client = parse_cpu_list(args.client_cpus) if args.client_cpus else None
    for cpus in (server, client):
        if cpus is not None and (not cpus or not set(cpus) <= set(usable)):
            raise UsageError(f"CPU list {cpus} is not within the usable cores {usable}")
    if not starts_servers:
        return None, client
    if server is None and client is None:
        if len(usable) < 2:
            return None, None  # one core: pinning would only make both sides wait for each other
        server_cores = max(1, min(instances, len(usable) - 1))
        server, client = usable[:server_cores], usable[server_cores:]
    elif server is None and client is not None:
        server = [c for c in usable if c not in client] or usable[:1]
    elif client is None and server is not None:
        client = [c for c in usable if c not in server] or usable
    return server, client


def build_config(args: argparse.Namespace) -> BenchConfig:
    scenarios = _scenarios(args)
    if args.rounds < 1:
        raise UsageError("--rounds must be 1 or more")
    target = None
    if args.url:
        if args.compare:
            raise UsageError("--compare starts both servers itself; it cannot be combined with --url")
        if not args.redis_url:
            raise UsageError("--url needs --redis-url: the benchmark publishes through the Redis your server reads")
        if args.instances != 1:
            raise UsageError("--instances starts servers here; it cannot be combined with --url")
        target = dataclasses.replace(_target(args.url, args.transport, args.token), headers=args.headers)
        servers = ["external"]
    else:
        if args.server_pid:
            raise UsageError("--server-pid only goes with --url")
        servers = ["stockstream", "node"] if args.compare else ["stockstream"]
    if args.compare and args.transport != "socketio":
        raise UsageError("the Node.js reference speaks Socket.IO only: --compare needs --transport socketio")
    server_env: dict[str, str] = {}
    for item in args.server_env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--server-env needs KEY=VALUE, not {item!r}")
        server_env[key] = value
    if args.instances < 1:
        raise UsageError("--instances must be 1 or more")
    server_cpus, client_cpus = _pinning(args, starts_servers=target is None, instances=args.instances)
    if args.refine < 0:
        raise UsageError("--refine must be 0 or more")
    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be 1 or more")
    workers = args.workers or (len(client_cpus) if client_cpus else max(1, len(usable_cpus()) - 1))
    for name in ("connect_concurrency", "connect_timeout", "step_factor", "max_p99_ms"):
        if getattr(args, name) <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be above 0")
    options = RunOptions(
        connect_timeout=args.connect_timeout,
        connect_concurrency=args.connect_concurrency,
        connect_rate=max(0.0, args.connect_rate),
        max_p99_ms=args.max_p99_ms,
        step_factor=args.step_factor,
        refine_steps=args.refine,
    )
    return BenchConfig(
        scenarios=scenarios,
        servers=servers,
        rounds=args.rounds,
        transport=args.transport,
        workers=workers,
        options=options,
        target=target,
        server_pid=args.server_pid,
        redis_url=args.redis_url,
        token=args.token,
        server_cpus=server_cpus,
        client_cpus=client_cpus,
        server_env=server_env,
        instances=args.instances,
        redis_cluster=args.bench_redis_cluster,
        headers=args.headers,
    )


def raise_fd_limit(needed: int) -> Optional[str]:
    """Let this process (and what it starts) hold `needed` descriptors; a warning if it cannot."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return None
    for limits in ((needed, max(hard, needed)), (min(hard, needed), hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, limits)
            break
        except (ValueError, OSError):
            continue
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        return (
            f"warning: the open-files limit is {soft}, below the {needed} this run needs; "
            "connections past it will fail (raise it with ulimit -n)"
        )
    return None


def _interrupt(signum: int, frame: Any) -> NoReturn:
    raise KeyboardInterrupt


def main(args: argparse.Namespace) -> int:
    try:
        config = build_config(args)
    except UsageError as exc:
        parser = getattr(args, "bench_parser", None)
        if parser is not None:
            parser.print_usage(sys.stderr)
        print(f"{parser.prog if parser else 'bench'}: error: {exc}", file=sys.stderr)
        return 2
    progress = Progress(enabled=not args.quiet)
    warning = raise_fd_limit(max(s.clients for s in config.scenarios) + FD_HEADROOM)
    if warning:
        progress.log(warning)
    if config.server_cpus is None and config.target is None and not args.no_pin:
        progress.log("note: fewer than 2 usable cores: server and load generator share them")
    if config.server_cpus is not None and len(config.server_cpus) < config.instances:
        progress.log(
            f"note: {config.instances} instances on {len(config.server_cpus)} server core(s): "
            "they share cores, so this does not measure scaling"
        )
    if "node" in config.servers and (shutil.which("node") is None or shutil.which("npm") is None):
        print("stockstream bench: error: --compare needs node and npm on PATH", file=sys.stderr)
        return 2
    report: dict[str, Any] = {
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(),
        "config": {
            "servers": config.servers,
            "instances": config.instances,
            "rounds": config.rounds,
            "transport": config.transport,
            "workers": config.workers,
            "server_cpus": config.server_cpus,
            "client_cpus": config.client_cpus,
            "quick": args.quick,
            "options": dataclasses.asdict(config.options),
        },
        "runs": [],
    }
    original_affinity = os.sched_getaffinity(0)
    previous_sigterm = signal.signal(signal.SIGTERM, _interrupt)
    status = 0
    try:
        if config.client_cpus:
            os.sched_setaffinity(0, config.client_cpus)  # the publisher stays off the server's core
        for round_no in range(1, config.rounds + 1):
            for scenario in config.scenarios:
                for kind in config.servers:
                    on = f"{config.instances} x {kind}" if config.instances > 1 else kind
                    progress.log(
                        f"-- {scenario.name} on {on}, round {round_no}/{config.rounds}: "
                        f"{describe(scenario)}, {config.headers} headers"
                    )
                    if scenario.name == "candles" and kind != "stockstream":
                        continue  # live candles are stockstream's own: the reference has none
                    if scenario.name == "reconnect":
                        if kind != "stockstream" or config.target is not None:
                            continue  # it starts its own two instances, with recovery on
                        record = run_reconnect_scenario(scenario, round_no, progress, args.publisher)
                        report["runs"].append(record)
                        print(format_reconnect(record), flush=True)
                        if record.get("error"):
                            status = 1
                        continue
                    if scenario.name == "throttle" and kind != "stockstream":
                        continue  # the reference server has no throttled subscriptions
                    record = run_one(config, kind, scenario, round_no, progress)
                    report["runs"].append(record)
                    print(format_run(record), flush=True)
                    if record.get("error"):
                        status = 1
                    if args.json:
                        write_json(args.json, report)  # partial results survive an interrupted run
    except KeyboardInterrupt:
        progress.log("interrupted: everything started has been stopped")
        report["interrupted"] = True
        status = 130
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
        os.sched_setaffinity(0, original_affinity)
    report["summary"] = summarize(report["runs"])
    text = format_summary(report["summary"])
    if text:
        print(text, flush=True)
    if args.json:
        write_json(args.json, report)
        progress.log(f"report written to {args.json}")
    return status
