"""Worker processes that hold the benchmark's connections.

Python handles one core per process, so the clients are spread over several
processes (one per core given to the load generator). The main process drives
them over a socket pair with small commands; each command answers once:

  connect   open (and subscribe) a list of clients -> counts and latencies
  subscribe subscribe the open clients that are not yet -> counts and latencies
  window    start counting from given sequence numbers -> subscribers per symbol
  progress  counters so far (for the progress line and draining)
  collect   counters of the window, which it closes
  close     close every connection politely

Messages are length-prefixed pickles on asyncio streams: the event loop makes
the sockets non-blocking, which multiprocessing's own pipes do not survive.
A worker whose socket reaches end-of-file (the main process closed it, or
died) closes its connections and exits.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import os
import pickle
import signal
import socket
import time
from collections import Counter
from typing import Any, Optional

from .clients import BaseClient, Receiver, Target, open_client, subscribe_client
from .stats import bucket_of, new_histogram

# Connections a closing worker gives the server to see a clean close before aborting.
CLOSE_GRACE_S = 5.0
REPLY_TIMEOUT_S = 30.0
LENGTH_BYTES = 4


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed: the load generator's cost per message matters."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class WorkerDied(RuntimeError):
    pass


def _send(writer: asyncio.StreamWriter, message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    writer.write(len(data).to_bytes(LENGTH_BYTES, "big") + data)


async def _receive(reader: asyncio.StreamReader) -> Any:
    """The next message; asyncio.IncompleteReadError at end-of-file."""
    length = int.from_bytes(await reader.readexactly(LENGTH_BYTES), "big")
    return pickle.loads(await reader.readexactly(length))


# ---------------------------------------------------------------- worker side
class _Worker:
    def __init__(self, run_id: str) -> None:
        self.receiver = Receiver(run_id)
        self.connecting = {"done": 0, "failed": 0}
        self.tasks: set[asyncio.Task[None]] = set()

    async def run(self, sock: socket.socket) -> None:
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        try:
            while True:
                try:
                    request_id, command, arg = await _receive(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return  # the main process is done with us
                task = asyncio.ensure_future(self._handle(writer, request_id, command, arg))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
        finally:
            for task in list(self.tasks):
                task.cancel()
            await self.close_all()
            writer.close()

    async def _handle(self, writer: asyncio.StreamWriter, request_id: int, command: str, arg: Any) -> None:
        try:
            result = await getattr(self, "cmd_" + command)(arg)
            reply = (request_id, True, result)
        except Exception as exc:  # the main process reports it; the worker lives on
            reply = (request_id, False, f"{exc.__class__.__name__}: {exc}")
        if not writer.is_closing():
            _send(writer, reply)

    async def cmd_connect(self, arg: dict[str, Any]) -> dict[str, Any]:
        target: Target = arg["target"]
        clients: list[list[str]] = arg["clients"]
        timeout: float = arg["timeout"]
        attempts: int = arg["attempts"]
        rate: float = arg["rate"]  # new connections per second at most (0: no limit)
        subscribe: bool = arg["subscribe"]
        semaphore = asyncio.Semaphore(arg["concurrency"])
        connect_hist, subscribe_hist = new_histogram(), new_histogram()
        errors: Counter[str] = Counter()
        by_port: Counter[str] = Counter()
        started = time.perf_counter()
        finished_at = [started]
        failed = [0]

        async def one(index: int, symbols: list[str]) -> None:
            client_target = target.for_client(index)
            if rate > 0:  # ramp up instead of a thundering herd
                await asyncio.sleep(max(0.0, started + index / rate - time.perf_counter()))
            for attempt in range(attempts):
                async with semaphore:
                    result = await open_client(self.receiver, client_target, symbols, timeout, subscribe)
                if result.client is not None:
                    self.receiver.clients.append(result.client)
                    by_port[str(client_target.port)] += 1
                    connect_hist[bucket_of(result.connect_us)] += 1
                    if subscribe:
                        subscribe_hist[bucket_of(result.subscribe_us)] += 1
                    self.connecting["done"] += 1
                    finished_at[0] = time.perf_counter()
                    return
                errors[result.error] += 1
                if attempt + 1 < attempts:
                    await asyncio.sleep(min(2.0, 0.2 * 2**attempt))
            self.connecting["failed"] += 1
            failed[0] += 1

        await asyncio.gather(*(one(i, symbols) for i, symbols in enumerate(clients)))
        return {
            "connected": len(clients) - failed[0],
            "failed": failed[0],
            "errors": dict(errors.most_common(5)),
            "by_port": dict(by_port),
            "connect_hist": connect_hist,
            "subscribe_hist": subscribe_hist,
            "elapsed_s": finished_at[0] - started,
        }

    async def cmd_subscribe(self, arg: dict[str, Any]) -> dict[str, Any]:
        """Subscribe every open, not yet subscribed client to its symbols."""
        semaphore = asyncio.Semaphore(arg["concurrency"])
        hist = new_histogram()
        errors: Counter[str] = Counter()
        started = time.perf_counter()

        async def one(client: BaseClient) -> None:
            async with semaphore:
                took_us, error = await subscribe_client(client, arg["timeout"])
            if error:
                errors[error] += 1
            else:
                hist[bucket_of(took_us)] += 1

        await asyncio.gather(*(one(c) for c in self.receiver.clients if not c.closed and not c.subscribed))
        return {
            "subscribed": sum(hist),
            "failed": sum(errors.values()),
            "errors": dict(errors.most_common(5)),
            "subscribe_hist": hist,
            "elapsed_s": time.perf_counter() - started,
        }

    async def cmd_window(self, start_seq: dict[str, int]) -> dict[str, int]:
        self.receiver.reset()
        self.receiver.start_seq = dict(start_seq)
        return self.receiver.subscribers()

    async def cmd_progress(self, _: Any) -> dict[str, int]:
        r = self.receiver
        return {
            "delivered": r.delivered,
            "duplicates": r.duplicates,
            "disconnects": r.disconnects,
            "connected": self.connecting["done"],
            "failed": self.connecting["failed"],
            "open": sum(1 for c in r.clients if not c.closed),
        }

    async def cmd_collect(self, _: Any) -> dict[str, Any]:
        counts = self.receiver.window_counts()
        self.receiver.start_seq = {}
        self.receiver.reset()
        return counts

    async def cmd_close(self, _: Any) -> int:
        return await self.close_all()

    async def close_all(self) -> int:
        clients, self.receiver.clients = self.receiver.clients, []
        for client in clients:
            client.close()
        deadline = time.monotonic() + CLOSE_GRACE_S
        while any(not c.closed for c in clients) and time.monotonic() < deadline:  # noqa: ASYNC110 - many clients' flags, bounded by the deadline
            await asyncio.sleep(0.05)
        for client in clients:
            if not client.closed:
                client.abort()
        return len(clients)


def _worker_main(sock: socket.socket, inherited: list[socket.socket], cpus: Optional[set[int]], run_id: str) -> None:
    # Ctrl-C reaches the whole process group; the main process decides how to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for other in inherited:  # so that a dead main process shows as end-of-file
        other.close()
    if cpus:
        os.sched_setaffinity(0, cpus)
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(_Worker(run_id).run(sock))
    finally:
        loop.close()


# ------------------------------------------------------------------ main side
class WorkerPool:
    """Fork the workers (before the main process starts its event loop) and talk to them."""

    def __init__(self, count: int, cpus: list[Optional[set[int]]], run_id: str) -> None:
        context = multiprocessing.get_context("fork")
        self.processes: list[multiprocessing.process.BaseProcess] = []
        self.sockets: list[socket.socket] = []
        self._writers: list[asyncio.StreamWriter] = []
        self._readers: list[asyncio.Task[None]] = []
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[int, asyncio.Future[Any]]] = {}
        try:
            for i in range(count):
                ours, theirs = socket.socketpair()
                self.sockets.append(ours)
                process = context.Process(
                    target=_worker_main,
                    args=(theirs, list(self.sockets), cpus[i % len(cpus)] if cpus else None, run_id),
                    name=f"bench-worker-{i}",
                    daemon=True,
                )
                process.start()
                theirs.close()
                self.processes.append(process)
        except BaseException:
            self.stop()
            raise

    @property
    def size(self) -> int:
        return len(self.processes)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p.pid is not None]

    async def attach(self) -> None:
        """Open the streams to the workers; inside the main event loop."""
        for index, sock in enumerate(self.sockets):
            reader, writer = await asyncio.open_unix_connection(sock=sock)
            self._writers.append(writer)
            self._readers.append(asyncio.ensure_future(self._read_replies(index, reader)))

    async def detach(self) -> None:
        """Close the streams: the workers see end-of-file, close their connections and exit."""
        for task in self._readers:
            task.cancel()
        for writer in self._writers:
            writer.close()
        self._readers, self._writers = [], []

    async def _read_replies(self, index: int, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                request_id, ok, value = await _receive(reader)
                entry = self._pending.pop(request_id, None)
                if entry is not None and not entry[1].done():
                    if ok:
                        entry[1].set_result(value)
                    else:
                        entry[1].set_exception(RuntimeError(f"worker {index}: {value}"))
        except (asyncio.IncompleteReadError, ConnectionError):
            for request_id, (worker, future) in list(self._pending.items()):
                if worker == index and not future.done():
                    future.set_exception(WorkerDied(f"worker {index} exited unexpectedly"))
                    del self._pending[request_id]

    async def call(self, index: int, command: str, arg: Any = None, timeout: float = REPLY_TIMEOUT_S) -> Any:
        writer = self._writers[index]
        if writer.is_closing() or self._readers[index].done():
            raise WorkerDied(f"worker {index} is gone")
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (index, future)
        try:
            _send(writer, (request_id, command, arg))
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(request_id, None)

    async def call_all(
        self, command: str, args: Optional[list[Any]] = None, timeout: float = REPLY_TIMEOUT_S
    ) -> list[Any]:
        args = args if args is not None else [None] * self.size
        return list(await asyncio.gather(*(self.call(i, command, a, timeout) for i, a in enumerate(args))))

    def stop(self, timeout: float = CLOSE_GRACE_S + 2.0) -> None:
        """Close the sockets (the workers exit by themselves), then terminate and kill stragglers."""
        for sock in self.sockets:
            sock.close()
        deadline = time.monotonic() + timeout
        for process in self.processes:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in self.processes:
            if process.is_alive():
                process.terminate()
                process.join(2.0)
            if process.is_alive():
                process.kill()
                process.join(2.0)
