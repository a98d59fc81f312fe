"""Node.js clients (tests/js): stock socket.io-client v4 and the original README's client."""

from __future__ import annotations

import asyncio
import fcntl
import itertools
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from .sio import AckTimeout, SioClientBase
from .waiting import PROMPT, Inbox, JsParsed

JS_DIR = Path(__file__).resolve().parents[1] / "js"
REQUIRED_MODULES = ("socket.io-client", "ws", "playwright-core", "@asyncapi/specs")


def node_executable() -> str | None:
    return shutil.which("node")


def node_modules_present() -> bool:
    return all((JS_DIR / "node_modules" / m / "package.json").is_file() for m in REQUIRED_MODULES)


def ensure_node_modules(timeout: float = 300.0) -> None:
    """`npm install` in tests/js once (a file lock keeps concurrent runs from racing)."""
    if node_modules_present():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not on PATH; cannot install tests/js dependencies")
    with open(JS_DIR / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if node_modules_present():
                return
            command = [
                npm,
                "ci" if (JS_DIR / "package-lock.json").is_file() else "install",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
            ]
            result = subprocess.run(
                command, cwd=JS_DIR, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
            )
            if result.returncode != 0 or not node_modules_present():
                raise RuntimeError(
                    f"{' '.join(command)} failed in {JS_DIR} "
                    f"({result.returncode}):\n{result.stdout[-2000:]}\n"
                    f"{result.stderr[-4000:]}"
                )
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class NodeProcess:
    """A node script whose stdout is JSON lines, read into an Inbox as they come."""

    def __init__(self, script: str, *args: str, name: str) -> None:
        self.script = script
        self.args = args
        self.name = name
        self.lines: Inbox[Any] = Inbox(f"{name} output")
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task | None = None
        self._stderr: asyncio.Task | None = None
        self.stderr_text = ""
        self.exited = asyncio.Event()

    async def start(self, on_line=None) -> None:
        node = node_executable()
        if node is None:
            raise RuntimeError("node is not on PATH")
        self.proc = await asyncio.create_subprocess_exec(
            node,
            str(JS_DIR / self.script),
            *self.args,
            cwd=JS_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=16 * 1024 * 1024,
        )
        self._reader = asyncio.create_task(self._read(on_line))
        self._stderr = asyncio.create_task(self._read_stderr())

    async def _read(self, on_line) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            while True:
                raw = await self.proc.stdout.readline()
                if not raw:
                    break
                try:
                    line = json.loads(raw)
                except ValueError:
                    line = {"kind": "unparsed", "text": raw.decode(errors="replace")}
                if on_line is not None:
                    on_line(line)
                self.lines.put(line)
        finally:
            self.exited.set()

    async def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        while True:
            chunk = await self.proc.stderr.read(65536)
            if not chunk:
                return
            self.stderr_text = (self.stderr_text + chunk.decode(errors="replace"))[-8000:]

    async def send(self, obj: Any) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())
        await self.proc.stdin.drain()

    async def stop(self, timeout: float = 5.0) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None:
            try:
                if self.proc.stdin is not None:
                    self.proc.stdin.close()
            except Exception:
                pass
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        for task in (self._reader, self._stderr):
            if task is not None:
                try:
                    await asyncio.wait_for(task, 2)
                except (asyncio.TimeoutError, asyncio.CancelledError, Exception):
                    task.cancel()


class NodeSioClient(SioClientBase):
    """socket.io-client@4 in a Node.js process (tests/js/sio_client.js)."""

    kind = "node"
    _ids = itertools.count(1)

    def __init__(
        self,
        url: str,
        *,
        transports: list[str] | None = None,
        auth: Any = None,
        options: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(url, name or f"node-sio-{next(self._ids)}")
        opts = dict(options or {})
        if transports is not None:
            opts["transports"] = transports
        if auth is not None:
            opts["auth"] = auth
        self.node = NodeProcess("sio_client.js", url, json.dumps(opts), name=self.name)
        self._transport: str | None = None
        self.connect_error: Any = None
        self._acks: dict[int, asyncio.Future] = {}
        self._ack_ids = itertools.count(1)
        self.connected = False

    def _on_line(self, line: dict[str, Any]) -> None:
        kind = line.get("kind")
        if kind == "connect":
            self._transport = line.get("transport")
            self.connected = True
            self.timeline.put(("connect",))
        elif kind == "upgrade":
            self._transport = line.get("transport")
        elif kind == "connect_error":
            self.connect_error = line.get("data") or line.get("message")
            self.timeline.put(("connect_error", self.connect_error))
        elif kind == "event":
            args = [JsParsed(a) if isinstance(a, dict) else a for a in line.get("args") or []]
            self._on_event(line["event"], args)
        elif kind == "ack":
            future = self._acks.pop(line["id"], None)
            if line.get("err"):
                if future is not None and not future.done():
                    future.set_exception(AckTimeout(f"{self.name}: {line['err']}"))
                return
            value = self._on_ack(line["id"], line.get("args") or [])
            if future is not None and not future.done():
                future.set_result(value)
        elif kind == "disconnect":
            self.connected = False
            self._on_disconnect(line.get("reason"))

    async def connect(self, timeout: float = 10.0) -> None:
        await self.node.start(self._on_line)
        try:
            await self.node.lines.wait_for(
                lambda lines: any(l.get("kind") in ("connect", "connect_error") for l in lines), timeout, "connect"
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nnode stderr: {self.node.stderr_text}") from None
        if not self.connected:
            raise ConnectionError(f"{self.name}: connect_error {self.connect_error!r}")

    async def call(self, event: str, *args: Any, timeout: float = PROMPT) -> Any:
        ack_id = next(self._ack_ids)
        future = asyncio.get_running_loop().create_future()
        self._acks[ack_id] = future
        await self.node.send(
            {
                "op": "emit",
                "event": event,
                "args": list(args),
                "ack": True,
                "id": ack_id,
                "timeout": int(timeout * 1000),
            }
        )
        try:
            return await asyncio.wait_for(future, timeout + 1)
        except asyncio.TimeoutError:
            raise AckTimeout(
                f"{self.name}: no ack for {event}{args!r} within {timeout}s; stderr: {self.node.stderr_text[-500:]}"
            ) from None

    async def emit(self, event: str, *args: Any) -> None:
        await self.node.send({"op": "emit", "event": event, "args": list(args), "ack": False})

    @property
    def transport(self) -> str | None:
        return self._transport

    async def close(self) -> None:
        if self.node.proc is not None and self.node.proc.returncode is None:
            try:
                await self.node.send({"op": "close"})
            except (ConnectionError, RuntimeError):
                pass
        await self.node.stop()


class ReadmeClient:
    """The original README's browser WebSocket client, verbatim, under Node (readme_client.js).

    `logs` holds each console.log call as a list of its arguments.
    """

    def __init__(self, ws_url: str) -> None:
        self.node = NodeProcess("readme_client.js", ws_url, name="readme-client")

    @property
    def logs(self) -> Inbox[Any]:
        return self.node.lines

    async def start(self) -> "ReadmeClient":
        await self.node.start()
        return self

    def live_updates(self) -> list[Any]:
        """What the README's onmessage logged, price updates only (frames without "type")."""
        return [
            JsParsed(args[1])
            for args in self.logs.items
            if isinstance(args, list)
            and len(args) == 2
            and args[0] == "Live Price Update:"
            and isinstance(args[1], dict)
            and "type" not in args[1]
        ]

    def replies(self) -> list[Any]:
        return [
            args[1]
            for args in self.logs.items
            if isinstance(args, list)
            and len(args) == 2
            and args[0] == "Live Price Update:"
            and isinstance(args[1], dict)
            and "type" in args[1]
        ]

    async def wait_for_log(self, pred, timeout: float = PROMPT, what: str = "a log line") -> Any:
        try:
            return await self.logs.wait_for(lambda items: next((i for i in items if pred(i)), None), timeout, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nnode stderr: {self.node.stderr_text}") from None

    async def stop(self) -> None:
        await self.node.stop()


def node_available() -> bool:
    return node_executable() is not None and os.access(JS_DIR / "sio_client.js", os.R_OK)
