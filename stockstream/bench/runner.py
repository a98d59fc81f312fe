"""One run: start what the run needs, drive a scenario, stop everything again.

The order matters: servers first (subprocesses), then the worker processes are
forked (before this process starts an event loop, which must not be forked),
then the scenario runs in an event loop; an ExitStack stops it all in reverse,
on errors and Ctrl-C too.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .clients import Target, loopback_sources
from .progress import Progress
from .publisher import Publisher
from .scenarios import RunContext, RunOptions, Scenario, run_scenario
from .servers import (
    BenchSetupError,
    ManagedProcess,
    ProcessMeter,
    start_redis,
    start_redis_cluster,
    start_reference,
    start_stockstream,
)
from .workers import WorkerPool, new_event_loop

SERVER_KINDS = ("stockstream", "node", "external")


@dataclass(frozen=True)
class BenchConfig:
    scenarios: list[Scenario]
    servers: list[str]  # in the order each round runs them
    rounds: int
    transport: str
    workers: int
    options: RunOptions
    target: Optional[Target] = None  # the external server, with --url
    server_pid: Optional[int] = None
    redis_url: Optional[str] = None
    token: str = ""
    server_cpus: Optional[list[int]] = None  # None: no pinning
    client_cpus: Optional[list[int]] = None
    server_env: dict[str, str] = field(default_factory=dict)
    instances: int = 1  # servers started side by side on one Redis
    redis_cluster: bool = False  # a private 3-master Redis Cluster instead of one Redis
    headers: str = "few"  # the clients' upgrade request headers (wsproto.HEADER_SETS)

    def instance_cpus(self, index: int) -> Optional[list[int]]:
        """One instance takes all the server cores; several take one each, in turn."""
        if not self.server_cpus or self.instances == 1:
            return self.server_cpus
        return [self.server_cpus[index % len(self.server_cpus)]]


def run_one(config: BenchConfig, kind: str, scenario: Scenario, round_no: int, progress: Progress) -> dict[str, Any]:
    run_id = secrets.token_hex(4)
    record: dict[str, Any] = {
        "server": kind,
        "instances": config.instances if kind != "external" else 1,
        "scenario": scenario.name,
        "round": round_no,
        "run_id": run_id,
        "transport": config.transport,
        "headers": config.headers,
        "settings": dataclasses.asdict(scenario),
    }
    log_dir = Path(tempfile.mkdtemp(prefix="stockstream-bench-"))
    keep_logs = False
    try:
        with contextlib.ExitStack() as stack:
            redis_url, redis_pid = config.redis_url, None
            master_urls: list[str] = []
            if redis_url is None and config.redis_cluster:
                cluster_procs, redis_url, master_urls = start_redis_cluster(log_dir, config.client_cpus)
                for proc in cluster_procs:
                    stack.callback(proc.stop)
            elif redis_url is None:
                redis_proc, redis_url = start_redis(log_dir, config.client_cpus)
                stack.callback(redis_proc.stop)
                redis_pid = redis_proc.pid
            servers: list[ManagedProcess] = []
            if kind == "external":
                assert config.target is not None
                target = config.target
                server_pids = [config.server_pid] if config.server_pid else []
            else:
                ports = []
                for index in range(config.instances):
                    if kind == "stockstream":
                        server, port = start_stockstream(
                            log_dir,
                            redis_url,
                            config.instance_cpus(index),
                            config.server_env,
                            name=f"stockstream-{index + 1}",
                            cluster=config.redis_cluster,
                        )
                    else:
                        server, port = start_reference(
                            log_dir,
                            redis_url,
                            config.instance_cpus(index),
                            log=progress.log,
                            name=f"node-reference-{index + 1}",
                        )
                    stack.callback(server.stop)
                    servers.append(server)
                    ports.append(port)
                server_pids = [server.pid for server in servers]
                target = Target(
                    "127.0.0.1",
                    ports[0],
                    config.transport,
                    token=config.token,
                    more_ports=tuple(ports[1:]),
                    headers=config.headers,
                    local_hosts=loopback_sources("127.0.0.1"),
                )
            record["target"] = {"host": target.host, "ports": list(target.ports), "pids": server_pids}
            worker_cpus: list[Optional[set[int]]] = [{c} for c in config.client_cpus] if config.client_cpus else []
            pool = WorkerPool(config.workers, worker_cpus, run_id)
            stack.callback(pool.stop)
            client_pids = [os.getpid()] + pool.pids + ([redis_pid] if redis_pid else [])
            ctx = RunContext(
                target=target,
                pool=pool,
                publisher=Publisher(redis_url, run_id, cluster=config.redis_cluster),
                server=ProcessMeter(server_pids) if server_pids else None,
                client=ProcessMeter(client_pids, children=False),
                client_cores=len(config.client_cpus) if config.client_cpus else max(1, len(os.sched_getaffinity(0))),
                options=config.options,
                progress=progress,
                server_cores=config.server_cpus if kind != "external" else None,
            )
            try:
                record.update(_run_async(_drive(ctx, scenario)))
            except Exception as exc:  # a worker, Redis or the server failed: report it, go on with the next run
                record["error"] = f"{exc.__class__.__name__}: {exc}"
            if master_urls:
                record["cluster_messages"] = shard_messages(master_urls)
            for server in servers:
                if not server.alive():
                    record["error"] = f"{server.name} exited during the run:\n{server.log_tail()}"
            if record.get("error"):
                keep_logs = True
    except BenchSetupError as exc:
        record["error"] = str(exc)
        keep_logs = True
    finally:
        if keep_logs:
            record["logs"] = str(log_dir)
        else:
            shutil.rmtree(log_dir, ignore_errors=True)
    return record


async def _drive(ctx: RunContext, scenario: Scenario) -> dict[str, Any]:
    await ctx.pool.attach()
    try:
        return await run_scenario(ctx, scenario)
    finally:
        await ctx.pool.detach()
        await ctx.publisher.close()


def _run_async(coro: Any) -> Any:
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(coro)


def shard_messages(master_urls: list[str]) -> dict[str, int]:
    """Sharded pub/sub messages each master carried: its SPUBLISH calls."""
    import redis

    counts = {}
    for url in master_urls:
        client = redis.Redis.from_url(url, socket_timeout=5)
        try:
            stats = client.info("commandstats")
        finally:
            client.close()
        counts[url.split("//", 1)[1].rsplit("/", 1)[0]] = int(stats.get("cmdstat_spublish", {}).get("calls", 0))
    return counts
