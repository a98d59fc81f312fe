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

from .clients import Target
from .progress import Progress
from .publisher import Publisher
from .scenarios import RunContext, RunOptions, Scenario, run_scenario
from .servers import BenchSetupError, ManagedProcess, ProcessMeter, start_redis, start_reference, start_stockstream
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


def run_one(config: BenchConfig, kind: str, scenario: Scenario, round_no: int, progress: Progress) -> dict[str, Any]:
    run_id = secrets.token_hex(4)
    record: dict[str, Any] = {"server": kind, "scenario": scenario.name, "round": round_no, "run_id": run_id,
                              "transport": config.transport, "settings": dataclasses.asdict(scenario)}
    log_dir = Path(tempfile.mkdtemp(prefix="stockstream-bench-"))
    keep_logs = False
    try:
        with contextlib.ExitStack() as stack:
            redis_url, redis_pid = config.redis_url, None
            if redis_url is None:
                redis_proc, redis_url = start_redis(log_dir, config.client_cpus)
                stack.callback(redis_proc.stop)
                redis_pid = redis_proc.pid
            server: Optional[ManagedProcess] = None
            if kind == "external":
                assert config.target is not None
                target, server_pid = config.target, config.server_pid
            else:
                if kind == "stockstream":
                    server, port = start_stockstream(log_dir, redis_url, config.server_cpus, config.server_env)
                else:
                    server, port = start_reference(log_dir, redis_url, config.server_cpus, log=progress.log)
                stack.callback(server.stop)
                server_pid = server.pid
                target = Target("127.0.0.1", port, config.transport, token=config.token)
            record["target"] = {"host": target.host, "port": target.port, "pid": server_pid}
            worker_cpus = [{c} for c in config.client_cpus] if config.client_cpus else []
            pool = WorkerPool(config.workers, worker_cpus, run_id)
            stack.callback(pool.stop)
            client_pids = [os.getpid()] + pool.pids + ([redis_pid] if redis_pid else [])
            ctx = RunContext(
                target=target, pool=pool, publisher=Publisher(redis_url, run_id),
                server=ProcessMeter([server_pid]) if server_pid else None,
                client=ProcessMeter(client_pids, children=False),
                client_cores=len(config.client_cpus) if config.client_cpus else max(1, len(os.sched_getaffinity(0))),
                options=config.options, progress=progress,
                server_cores=config.server_cpus if kind != "external" else None,
            )
            try:
                record.update(_run_async(_drive(ctx, scenario)))
            except Exception as exc:  # a worker, Redis or the server failed: report it, go on with the next run
                record["error"] = f"{exc.__class__.__name__}: {exc}"
            if server is not None and not server.alive():
                record["error"] = f"the server exited during the run:\n{server.log_tail()}"
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
