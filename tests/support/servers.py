"""stockstream server processes (`python -m stockstream serve`) for tests."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Mapping, Sequence

import aiohttp
import pytest

from .waiting import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]

# Settings a developer's shell or the machine may carry; a test server must only
# see what its test gives it (in particular never a Redis the test does not own).
_FALLBACK_SETTING_NAMES = {
    "HOST",
    "PORT",
    "REDIS_URL",
    "REDIS_HOST",
    "REDIS_PORT",
    "REQUIRE_AUTH",
    "JWT_SECRET",
    "JWT_PUBLIC_KEY",
    "JWT_PUBLIC_KEY_FILE",
    "JWT_PRIVATE_KEY_FILE",
    "JWT_AUDIENCE",
    "JWT_ISSUER",
    "CORS_ORIGINS",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "SIMULATE",
    "KAFKA_BOOTSTRAP",
}


def setting_names() -> set[str]:
    try:
        from stockstream.config import Settings
    except Exception:
        return set(_FALLBACK_SETTING_NAMES)
    return {f.name.upper() for f in dataclasses.fields(Settings)} | _FALLBACK_SETTING_NAMES


def server_environment(env: Mapping[str, str] | None = None, redis_url: str | None = None) -> dict[str, str]:
    """The environment of a test server: the inherited one without any stockstream
    setting, then the test's own. Without redis_url the embedded backend is used."""
    names = setting_names()
    result = {k: v for k, v in os.environ.items() if k not in names}
    result["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
    )
    result["PYTHONUNBUFFERED"] = "1"
    # Set explicitly (even empty) so that a `.env` file cannot point the server elsewhere.
    result["REDIS_URL"] = redis_url or ""
    result["REDIS_HOST"] = ""
    result["LOG_LEVEL"] = "warning"
    result.update(env or {})
    return result


class ServerProcess:
    """One running `python -m stockstream serve`."""

    def __init__(self, proc: subprocess.Popen, port: int, log_path: Path, argv: list[str]) -> None:
        self.proc = proc
        self.port = port
        self.host = "127.0.0.1"
        self.log_path = log_path
        self.argv = argv

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """The plain WebSocket endpoint."""
        return f"ws://{self.host}:{self.port}/live-price"

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def output_tail(self, chars: int = 4000) -> str:
        return self.output()[-chars:]

    def signal(self, signum: int) -> None:
        if self.running:
            self.proc.send_signal(signum)

    def terminate(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout`. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def _failure(self, why: str) -> str:
        return (
            f"`python {' '.join(self.argv[1:])}` (pid {self.pid}) {why}\n"
            f"--- server output (tail) ---\n{self.output_tail()}"
        )

    def check_ready_once(self, timeout: float = 1.0) -> tuple[int | None, str]:
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=timeout) as resp:
                return resp.status, resp.read(500).decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(500).decode(errors="replace")
        except (OSError, urllib.error.URLError) as exc:
            return None, repr(exc)

    def wait_ready_sync(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        last: tuple[int | None, str] = (None, "")
        while True:
            if not self.running:
                pytest.fail(self._failure(f"exited with {self.proc.returncode} before ready"), pytrace=False)
            last = self.check_ready_once()
            if last[0] == 200:
                return
            if time.monotonic() > deadline:
                pytest.fail(self._failure(f"not ready after {timeout}s (last /readyz: {last})"), pytrace=False)
            time.sleep(0.05)

    async def wait_ready(self, timeout: float = 20.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last: object = None
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while True:
                if not self.running:
                    pytest.fail(self._failure(f"exited with {self.proc.returncode} before ready"), pytrace=False)
                try:
                    async with http.get(f"{self.url}/readyz") as resp:
                        last = (resp.status, (await resp.text())[:500])
                        if resp.status == 200:
                            return
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                    last = repr(exc)
                if loop.time() > deadline:
                    pytest.fail(self._failure(f"not ready after {timeout}s (last /readyz: {last})"), pytrace=False)
                await asyncio.sleep(0.05)

    def __repr__(self) -> str:
        return f"ServerProcess({self.url}, pid={self.pid})"


async def connections_on(server: ServerProcess) -> float:
    """Open client connections of one instance, from its /metrics."""
    async with aiohttp.ClientSession() as http, http.get(server.url + "/metrics") as resp:
        text = await resp.text()
    return sum(
        float(line.split()[1]) for line in text.splitlines() if line.startswith("stockstream_connections_active{")
    )


class ServerFactory:
    """Starts stockstream servers; terminates every one of them at teardown."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.processes: list[ServerProcess] = []

    def launch(
        self,
        env: Mapping[str, str] | None = None,
        *,
        redis_url: str | None = None,
        args: Sequence[str] = (),
        port: int | None = None,
    ) -> ServerProcess:
        """Start a server process without waiting for it to be ready."""
        port = port or free_port()
        index = len(self.processes)
        log_path = self.workdir / f"server-{index}-{port}.log"
        argv = [sys.executable, "-m", "stockstream", "serve", "--host", "127.0.0.1", "--port", str(port), *args]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                argv,
                env=server_environment(env, redis_url),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        server = ServerProcess(proc, port, log_path, argv)
        self.processes.append(server)
        return server

    async def start(
        self,
        env: Mapping[str, str] | None = None,
        *,
        redis_url: str | None = None,
        args: Sequence[str] = (),
        ready_timeout: float = 20.0,
    ) -> ServerProcess:
        """Start a server and wait until GET /readyz answers 200."""
        server = self.launch(env, redis_url=redis_url, args=args)
        await server.wait_ready(ready_timeout)
        return server

    async def start_many(
        self,
        count: int,
        env: Mapping[str, str] | None = None,
        *,
        redis_url: str | None = None,
        args: Sequence[str] = (),
        ready_timeout: float = 30.0,
    ) -> list[ServerProcess]:
        """Start `count` servers side by side (launched together, then awaited)."""
        servers = [self.launch(env, redis_url=redis_url, args=args) for _ in range(count)]
        await asyncio.gather(*(s.wait_ready(ready_timeout) for s in servers))
        return servers

    def start_sync(
        self,
        env: Mapping[str, str] | None = None,
        *,
        redis_url: str | None = None,
        args: Sequence[str] = (),
        ready_timeout: float = 20.0,
    ) -> ServerProcess:
        server = self.launch(env, redis_url=redis_url, args=args)
        server.wait_ready_sync(ready_timeout)
        return server

    def close_all(self, timeout: float = 10.0) -> None:
        for server in self.processes:
            server.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for server in self.processes:
            try:
                server.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                server.kill()
