"""A rolling restart behind nginx loses, repeats and reorders nothing.

Three instances share one real Redis behind nginx (configured as the README
documents). stockstream's publisher (`python -m stockstream simulate`, so every
update carries its per-symbol `seq`) publishes a few hundred updates per second
over a few symbols while each instance in turn is stopped with SIGTERM and
started again. Every client kind reconnects by itself and, on every
(re)connect, subscribes again with `sinceSeq` set to the last update it saw,
except socket.io-client with connection state recovery, which subscribes once
and gets its session back from whichever instance it reaches. Each must end
with exactly the published sequence of its symbols from its first subscribe on.

A client kind is one entry of CLIENT_KINDS: a function that connects a client
through the load balancer and returns it as a `Resuming`.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

import aiohttp
import pytest
import redis.asyncio as aioredis

from tests.support.clients import ClientPool, http_to_ws
from tests.support.processes import stop_process
from tests.support.servers import ServerFactory, ServerProcess, connections_on, server_environment
from tests.support.waiting import Inbox, eventually

pytestmark = [pytest.mark.slow, pytest.mark.node]

SYMBOLS = ["RRA", "RRB", "RRC"]
RATE = 100  # updates per second per symbol
INSTANCES = 3
# Recovery on: socket.io-client recovers; the others resubscribe and take the
# offset after each update as an extra argument.
SERVER_ENV = {"SHUTDOWN_TIMEOUT": "4", "RECOVERY_WINDOW": "60"}
# How long a client may take to be back and streaming after its instance went
# away: python-socketio waits up to 5 s between attempts by default.
BACK_WITHIN = 20.0
LIVE_PRICE_RETRY = 0.2


@dataclass
class Resuming:
    """One client that resubscribes with sinceSeq on every (re)connect, as a test sees it.

    updates      -- every price update, in arrival order
    connects     -- how many connections it has made so far
    resubscribes -- (sinceSeq sent or None, the answer) of every subscribe, in order;
                    empty for a client that gets its updates back some other way
    """

    name: str
    updates: Inbox[dict[str, Any]]
    connects: Callable[[], int]
    resubscribes: Callable[[], list[tuple[Any, Any]]]
    close: Callable[[], Awaitable[None]]

    def seqs(self, symbol: str) -> list[int]:
        return [u["seq"] for u in self.updates.items if u.get("symbol") == symbol]


# -- client kinds ---------------------------------------------------------------------------


async def python_socketio(url: str, symbols: list[str], clients: ClientPool) -> Resuming:
    """python-socketio's AsyncClient with its defaults (polling, then websocket; reconnects);
    its connect handler subscribes to each symbol with {"symbols": [s], "sinceSeq": last}."""
    client = await clients.sio(url, reconnection=True, connect=False)
    answers: list[tuple[Any, Any]] = []

    async def resubscribe() -> None:
        for symbol in symbols:
            seen = client.updates_for(symbol)
            request: dict[str, Any] = {"symbols": [symbol]}
            if seen:
                request["sinceSeq"] = seen[-1]["seq"]
            try:
                answer = await client.call("subscribe", request, timeout=10)
            except Exception as exc:  # the connection went away meanwhile: the next connect redoes it
                answer = {"error": repr(exc)}
            answers.append((request.get("sinceSeq"), answer))

    def on_connect() -> None:
        client.timeline.put(("connect",))
        # In the background: the connect handler returns at once, the acks come later.
        client.sio.start_background_task(resubscribe)

    client.sio.on("connect", on_connect)
    await client.connect()
    return Resuming(
        client.name,
        client.updates,
        lambda: client.timeline.items.count(("connect",)),
        lambda: list(answers),
        client.close,
    )


async def node_socketio(url: str, symbols: list[str], clients: ClientPool) -> Resuming:
    """socket.io-client with its defaults plus reconnection; on every connect it
    subscribes to each symbol with {"symbol": s, "sinceSeq": last} (tests/js/sio_client.js)."""
    client = await clients.sio(url, kind="node", options={"reconnection": True, "resumeSymbols": symbols})
    lines = client.node.lines  # type: ignore[attr-defined]  # kind="node": a NodeSioClient

    def answers() -> list[tuple[Any, Any]]:
        return [
            (line["sinceSeq"], line["ack"] if line.get("err") is None else {"error": line["err"]})
            for line in lines.items
            if line.get("kind") == "resubscribed"
        ]

    return Resuming(
        client.name, client.updates, lambda: client.timeline.items.count(("connect",)), answers, client.close
    )


async def node_socketio_recovering(url: str, symbols: list[str], clients: ClientPool) -> Resuming:
    """socket.io-client with its defaults plus reconnection and no application code
    for reconnects: it subscribes once; connection state recovery does the rest."""
    client = await clients.sio(url, kind="node", options={"reconnection": True})
    ack = await client.subscribe(symbols)
    assert ack.get("ok") is True, ack
    lines = client.node.lines  # type: ignore[attr-defined]  # kind="node": a NodeSioClient

    def not_recovered() -> list[tuple[Any, Any]]:
        # Every reconnect must recover; one that did not shows up as a failed resubscribe.
        connects = [line for line in lines.items if line.get("kind") == "connect"][1:]
        return [(None, {"recovered": False, "connect": line}) for line in connects if not line.get("recovered")]

    return Resuming(
        client.name + " (recovery)",
        client.updates,
        lambda: client.timeline.items.count(("connect",)),
        not_recovered,
        client.close,
    )


async def live_price(url: str, symbols: list[str], clients: ClientPool) -> Resuming:
    """A /live-price client that connects again whenever its socket closes and sends
    {"action": "subscribe", "symbol": s, "sinceSeq": last} for each symbol."""
    updates: Inbox[dict[str, Any]] = Inbox("live-price updates")
    answers: list[tuple[Any, Any]] = []
    connects = 0
    stopping = asyncio.Event()

    async def run() -> None:
        nonlocal connects
        async with aiohttp.ClientSession() as http:
            while not stopping.is_set():
                try:
                    async with http.ws_connect(http_to_ws(url), max_msg_size=0) as ws:
                        connects += 1
                        asked = []
                        for symbol in symbols:
                            seen = [u for u in updates.items if u.get("symbol") == symbol]
                            request: dict[str, Any] = {"action": "subscribe", "symbol": symbol}
                            if seen:
                                request["sinceSeq"] = seen[-1]["seq"]
                            asked.append(request.get("sinceSeq"))
                            await ws.send_str(json.dumps(request))
                        async for message in ws:
                            if message.type != aiohttp.WSMsgType.TEXT:
                                continue
                            data = json.loads(message.data)
                            if "type" not in data:
                                updates.put(data)
                            elif data["type"] in ("subscribed", "error") and asked:
                                answers.append((asked.pop(0), data))
                except (aiohttp.ClientError, OSError, asyncio.TimeoutError):
                    pass
                try:
                    await asyncio.wait_for(stopping.wait(), LIVE_PRICE_RETRY)
                except asyncio.TimeoutError:
                    pass

    task = asyncio.create_task(run())

    async def close() -> None:
        stopping.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    await eventually(lambda: connects >= 1 or task.done(), 10.0, "the /live-price client to connect")
    if task.done():
        task.result()
    return Resuming("live-price", updates, lambda: connects, lambda: list(answers), close)


CLIENT_KINDS: dict[str, Callable[[str, list[str], ClientPool], Awaitable[Resuming]]] = {
    "python-socketio": python_socketio,
    "socket.io-client": node_socketio,
    "socket.io-client-recovery": node_socketio_recovering,
    "live-price": live_price,
}


# -- the publisher ------------------------------------------------------------------------------


def start_publisher(redis_url: str, workdir: Path) -> subprocess.Popen:
    """`python -m stockstream simulate`: RATE updates/s per symbol, each with its seq."""
    log = open(workdir / "publisher.log", "wb")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "stockstream", "simulate", "--symbols", ",".join(SYMBOLS), "--rate", str(RATE)],
            env=server_environment({}, redis_url),
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    finally:
        log.close()


async def published_seqs(redis_url: str) -> dict[str, int]:
    """The last seq published per symbol, as Redis holds it."""
    redis = aioredis.from_url(redis_url)
    try:
        return {s: int(await redis.get(f"stock:{s}:seq") or 0) for s in SYMBOLS}
    finally:
        await redis.aclose()


# -- checking -----------------------------------------------------------------------------------


def sequence_problems(client: Resuming, symbol: str, last: int) -> str | None:
    """None if the client got exactly first..last for the symbol; else what is wrong."""
    seqs = client.seqs(symbol)
    if not seqs:
        return f"{client.name} {symbol}: received nothing"
    expected = list(range(seqs[0], last + 1))
    if seqs == expected:
        return None
    seen: set[int] = set()
    repeated = sorted({s for s in seqs if s in seen or seen.add(s)})  # type: ignore[func-returns-value]  # add() is None: records, keeps the test
    missing = sorted(set(expected) - set(seqs))
    backwards = [(a, b) for a, b in zip(seqs, seqs[1:]) if b <= a]
    return (
        f"{client.name} {symbol}: got {len(seqs)} updates {seqs[0]}..{seqs[-1]}, expected "
        f"{seqs[0]}..{last}; missing {missing[:20]}{'...' if len(missing) > 20 else ''}, "
        f"repeated {repeated[:20]}, out of order at {backwards[:10]}; "
        f"{client.connects()} connections, subscribes (sinceSeq, answer): {client.resubscribes()}"
    )


async def streaming_again(client: Resuming, counts: dict[str, int]) -> None:
    """Wait until the client has more updates of every symbol than `counts`."""

    def progressed() -> bool:
        return all(len(client.seqs(s)) > counts[s] + 5 for s in SYMBOLS)

    try:
        await eventually(progressed, BACK_WITHIN, f"{client.name} to stream again", interval=0.1)
    except AssertionError:
        raise AssertionError(
            f"{client.name} not streaming {BACK_WITHIN}s after its instance restarted; "
            f"{client.connects()} connections, subscribes: {client.resubscribes()}"
        ) from None


async def restart(servers: ServerFactory, server: ServerProcess, redis_url: str) -> ServerProcess:
    """SIGTERM, wait for a clean exit, start an instance on the same port."""
    server.signal(signal.SIGTERM)
    code = await asyncio.to_thread(server.proc.wait, 20)
    assert code == 0, f"instance on port {server.port} exited with {code}: {server.output_tail()}"
    again = servers.launch(SERVER_ENV, redis_url=redis_url, port=server.port)
    await again.wait_ready(30)
    return again


# -- the test -------------------------------------------------------------------------------------


async def test_rolling_restart_loses_repeats_and_reorders_nothing(
    servers, redis_url, clients, node_harness, nginx_factory, tmp_path
) -> None:
    """Every instance stopped with SIGTERM and started again, in turn, under a
    steady stream: each client, resubscribing with sinceSeq whenever it
    reconnects, ends with exactly the published updates of its symbols from its
    first subscribe on, each once and in order, and it went through at least
    two reconnections."""
    instances = await servers.start_many(INSTANCES, SERVER_ENV, redis_url=redis_url)
    nginx = await nginx_factory([f"127.0.0.1:{s.port}" for s in instances])
    publisher = start_publisher(redis_url, tmp_path)
    resuming: list[Resuming] = []
    try:
        try:
            await eventually(lambda: _all_published(redis_url), 15.0, "the publisher to publish every symbol")
            for connect in CLIENT_KINDS.values():
                resuming.append(await connect(nginx.url, SYMBOLS, clients))
            for client in resuming:
                await streaming_again(client, {s: 0 for s in SYMBOLS})

            restarted: set[int] = set()
            for _ in range(INSTANCES):
                # The instance holding clients first, so that every stop moves them.
                counts = [await connections_on(s) for s in instances]
                index = max((i for i in range(INSTANCES) if i not in restarted), key=lambda i: counts[i])
                instances[index] = await restart(servers, instances[index], redis_url)
                restarted.add(index)
                for client in resuming:
                    await streaming_again(client, {s: len(client.seqs(s)) for s in SYMBOLS})
        finally:
            await asyncio.to_thread(stop_process, publisher)

        last = await published_seqs(redis_url)
        assert all(n > 1000 // len(SYMBOLS) for n in last.values()), f"too little published: {last}"
        for client in resuming:
            await eventually(
                lambda: all(client.seqs(s) and client.seqs(s)[-1] >= last[s] for s in SYMBOLS),
                10.0,
                f"{client.name} to receive the last update of every symbol",
                interval=0.1,
            )
        problems = [p for client in resuming for s in SYMBOLS if (p := sequence_problems(client, s, last[s]))]
        assert not problems, "\n".join(problems)
        for client in resuming:
            assert client.connects() >= 3, (
                f"{client.name} reconnected {client.connects() - 1} times: the restarts did not move it as they should"
            )
            if client.resubscribes():
                resumed = [answer for since, answer in client.resubscribes() if since is not None]
                assert resumed and all(a.get("recovered") is True for a in resumed), (
                    f"{client.name}: a resubscribe with sinceSeq did not resume from history: {client.resubscribes()}"
                )
        assert nginx.proc.poll() is None, nginx.log()
    finally:
        # While nginx still runs, so that the clients' goodbyes reach the server.
        await asyncio.gather(*(client.close() for client in resuming), return_exceptions=True)


async def _all_published(redis_url: str) -> bool:
    return all(n > 0 for n in (await published_seqs(redis_url)).values())
