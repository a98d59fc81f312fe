"""A private redis-server for the test session (never the machine's shared one)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis

from .processes import stop_process
from .waiting import free_port


class RedisServer:
    """One redis-server process on a free port; can be killed and restarted on that port."""

    def __init__(self, workdir: Path, port: int | None = None, extra_args: tuple[str, ...] = ()) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.extra_args = extra_args
        self.proc: subprocess.Popen | None = None
        self.log_path = workdir / "redis.log"
        self.executable = shutil.which("redis-server")
        if self.executable is None:
            raise RuntimeError("redis-server is not on PATH")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def client(self, **kwargs) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, **kwargs)

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                self.executable,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--protected-mode",
                "no",
                "--loglevel",
                "warning",
                *self.extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"redis-server on port {self.port} exited with {self.proc.returncode}: {self.log_tail()}"
                )
            try:
                if self.client().ping():
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"redis-server on port {self.port} not answering after {timeout}s: {self.log_tail()}"
                )
            time.sleep(0.02)

    def kill(self) -> None:
        """Stop at once (SIGKILL), as a crash would; the port stays reserved for restart()."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        """Stop politely (SIGTERM), falling back to SIGKILL."""
        if self.proc is None:
            return
        stop_process(self.proc)
        self.proc = None

    def restart(self, timeout: float = 10.0) -> None:
        """Kill and start again on the same port (all data is lost: no persistence)."""
        self.kill()
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.start(timeout=max(0.5, deadline - time.monotonic()))
                return
            except RuntimeError:
                # The port may linger for a moment after the kill.
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def ensure_running(self) -> None:
        if not self.running:
            self.restart()

    def flushall(self) -> None:
        client = self.client()
        try:
            client.flushall()
        finally:
            client.close()

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def __repr__(self) -> str:
        return f"RedisServer({self.url}, pid={self.proc.pid if self.proc else None})"
