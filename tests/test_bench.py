"""Smoke test of `python -m stockstream bench`: a short latency run against a server it starts itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_bench(
    tmp_path: Path, *args: str, timeout: float = 200, **env: str
) -> tuple[subprocess.CompletedProcess[str], dict]:
    """`python -m stockstream bench ARGS --quiet` from a scratch folder: its output and JSON report."""
    report_path = tmp_path / "report.json"
    environ = dict(
        os.environ, **env, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    )
    done = subprocess.run(
        [sys.executable, "-m", "stockstream", "bench", *args, "--quiet", "--json", str(report_path)],
        cwd=tmp_path,
        env=environ,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done, json.loads(report_path.read_text())


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_quick_latency_run_delivers_everything_once(tmp_path: Path) -> None:
    done, report = run_bench(tmp_path, "--scenario", "latency", "--quick", "--clients", "20", "--duration", "1")
    (run,) = report["runs"]
    assert run["server"] == "stockstream" and run["scenario"] == "latency"
    assert not run.get("error"), run.get("error")
    result = run["result"]
    assert result["deliveries"] > 0
    assert result["deliveries"] == result["expected"]
    assert result["loss"] == 0
    assert result["duplicates"] == 0
    assert result["out_of_order"] == 0
    assert result["latency_ms"]["p99"] is not None
    assert "latency on stockstream" in done.stdout  # the readable table is printed too


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_clients_spread_over_several_instances_get_everything_once(tmp_path: Path) -> None:
    done, report = run_bench(
        tmp_path,
        "--scenario",
        "latency",
        "--quick",
        "--instances",
        "2",
        "--no-pin",
        "--clients",
        "20",
        "--duration",
        "1",
    )
    (run,) = report["runs"]
    assert not run.get("error"), run.get("error")
    assert run["instances"] == 2 and len(set(run["target"]["pids"])) == 2
    assert sorted(run["connection"]["by_port"].values()) == [10, 10]
    result = run["result"]
    # Each instance delivers to its own clients only: every client got every update once.
    assert result["deliveries"] == result["expected"] > 0
    assert result["loss"] == result["duplicates"] == result["out_of_order"] == 0
    assert "latency on 2 x stockstream" in done.stdout


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_bench_on_a_redis_cluster_reports_messages_per_master(tmp_path: Path) -> None:
    """`bench --redis-cluster` runs on a private 3-master cluster: every update
    delivered once, in order, and each master's sharded pub/sub messages reported,
    none of them carrying everything."""
    done, report = run_bench(tmp_path, "--scenario", "spread", "--quick", "--redis-cluster", "--no-pin")
    (run,) = report["runs"]
    assert not run.get("error"), run.get("error")
    result = run["result"]
    assert result["deliveries"] == result["expected"] > 0
    assert result["loss"] == result["duplicates"] == result["out_of_order"] == 0
    shards = run["cluster_messages"]
    assert len(shards) == 3 and all(n > 0 for n in shards.values()), shards
    assert max(shards.values()) < 0.6 * sum(shards.values()), shards
    assert "pub/sub messages per master" in done.stdout


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_quick_comparison_with_the_node_reference(tmp_path: Path) -> None:
    """`--compare` installs the Node.js reference on first use (into a cache this
    test keeps private), runs both servers and prints the ratios."""
    done, report = run_bench(
        tmp_path,
        "--scenario",
        "latency",
        "--quick",
        "--compare",
        "--clients",
        "20",
        "--duration",
        "1",
        timeout=400,
        STOCKSTREAM_BENCH_CACHE=str(tmp_path / "reference"),
    )
    runs = {run["server"]: run for run in report["runs"]}
    assert set(runs) == {"stockstream", "node"}
    for run in runs.values():
        assert not run.get("error"), run.get("error")
        result = run["result"]
        assert result["deliveries"] == result["expected"] > 0
        assert result["loss"] == result["duplicates"] == result["out_of_order"] == 0
    assert "latency: p99 ms" in report["summary"]["ratios"]
    assert "stockstream/node" in done.stdout


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("publisher", ["ours", "raw"])
def test_quick_reconnect_run_recovers_every_client_without_loss(tmp_path: Path, publisher: str) -> None:
    """The reconnect scenario stops the clients' instance: every client recovers
    its session on the other one, with nothing lost, repeated or reordered,
    with stockstream's publisher and with the original SET + PUBLISH one."""
    done, report = run_bench(
        tmp_path, "--scenario", "reconnect", "--quick", "--clients", "30", "--publisher", publisher
    )
    (run,) = report["runs"]
    assert run["scenario"] == "reconnect" and not run.get("error"), run
    result = run["result"]
    assert result["publisher"] == publisher
    assert result["recovered"] == result["clients"] == 30
    assert result["all_live_again_s"] is not None and result["deliveries"] > 0
    assert (result["lost"], result["duplicates"], result["out_of_order"]) == (0, 0, 0)
    assert "all live again after" in done.stdout


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_idle_run_with_browser_headers(tmp_path: Path) -> None:
    """`--headers browser` connects every client with a browser's headers and
    cookie, the report says so, and memory per connection is measured."""
    done, report = run_bench(tmp_path, "--scenario", "idle", "--quick", "--clients", "50", "--headers", "browser")
    (run,) = report["runs"]
    assert not run.get("error"), run.get("error")
    assert run["headers"] == "browser"
    result = run["result"]
    assert result["connections"] == result["still_open"] == 50
    assert result["server_rss_per_connection_bytes"] is not None
    assert "browser headers" in done.stdout


def test_browser_upgrade_request_and_loopback_sources() -> None:
    """The browser header set carries a cookie of a browser's size; clients of
    a loopback server connect from several source addresses in turn."""
    from stockstream.bench.clients import Target, loopback_sources
    from stockstream.bench.wsproto import handshake_request, new_key

    request = handshake_request("127.0.0.1:5000", "/live-price", new_key(), "browser")
    cookie = next(line for line in request.split(b"\r\n") if line.startswith(b"Cookie: "))
    assert 350 <= len(cookie) <= 600
    assert len(request.split(b"\r\n")) >= 16
    assert b"Cookie" not in handshake_request("127.0.0.1:5000", "/live-price", new_key())
    target = Target("127.0.0.1", 5000, local_hosts=loopback_sources("127.0.0.1"))
    sources = {target.for_client(i).local_host for i in range(8)}
    assert len(sources) == len(loopback_sources("127.0.0.1")) > 1
    assert loopback_sources("example.com") == ()


def test_quick_candles_run_compares_candles_with_stock_updates(tmp_path: Path) -> None:
    """The candles scenario runs the same clients on live candles, then on
    stockUpdate: candle events arrive (conflated: far fewer than the updates
    the same clients get), every stockUpdate is delivered, and both CPU figures
    per tick are reported."""
    done, report = run_bench(tmp_path, "--scenario", "candles", "--quick", "--clients", "20", "--duration", "1")
    (run,) = report["runs"]
    assert run["scenario"] == "candles" and not run.get("error"), run.get("error")
    result = run["result"]
    candles, updates = result["candles"], result["stock_updates"]
    assert candles["candle_events"] > 0 and candles["deliveries"] == 0, candles
    assert 0 < candles["candle_events"] < updates["deliveries"], (candles["candle_events"], updates["deliveries"])
    assert updates["loss"] == 0 and updates["deliveries"] == updates["expected"] > 0, updates
    assert result["server_cpu_us_per_tick_candles"] > 0 and result["server_cpu_us_per_tick_updates"] > 0, result
    assert "candle events/s" in done.stdout


def test_quick_throttle_run_compares_throttled_and_unthrottled(tmp_path: Path) -> None:
    """The throttle scenario runs the same clients throttled, then unthrottled: the
    throttled ones get fewer deliveries than ticks x clients, nothing repeated or out of
    order, and both phases report server CPU per delivery and per tick."""
    done, report = run_bench(tmp_path, "--scenario", "throttle", "--quick", "--clients", "40", "--duration", "2")
    (run,) = report["runs"]
    assert run["scenario"] == "throttle" and not run.get("error"), run
    result = run["result"]
    throttled, plain = result["throttled"], result["unthrottled"]
    assert plain["deliveries"] == plain["ticks"] * 40 / 20  # 40 clients over 20 symbols: 2 per symbol
    assert 0 < throttled["deliveries"] < plain["deliveries"] / 2
    for phase in (throttled, plain):
        assert (phase["duplicates"], phase["out_of_order"]) == (0, 0)
        assert phase["server_cpu_us_per_tick"] is not None and phase["server_cpu_us_per_delivery"] is not None
    assert result["server_cpu_throttled_over_unthrottled"] is not None
    assert "server CPU throttled / unthrottled" in done.stdout
