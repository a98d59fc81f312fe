"""Benchmark clients: asyncio Protocols speaking WebSocket over raw TCP.

Two kinds share the framing: `SocketIOClient` (Engine.IO v4 / Socket.IO v5 over
a websocket-only connection) and `LiveWsClient` (the plain `/live-price`
endpoint). Every update they receive goes to the worker's `Receiver`, which
checks order per connection and symbol and records publish->receive latency.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
import time
import dataclasses
from dataclasses import dataclass
from typing import Any, Optional, cast
from urllib.parse import quote

import orjson

from . import wsproto
from .stats import bucket_of, new_histogram

SIO_UPDATE_PREFIX = b'42["stockUpdate",'
SIO_UPDATE_PREFIX_LEN = len(SIO_UPDATE_PREFIX)
SIO_CANDLE_PREFIX = b'42["candle",'
WS_CANDLE_PREFIX = b'{"type":"candle"'
TRANSPORTS = ("socketio", "websocket")
# Loopback source addresses spread over for a loopback target (every 127.x.y.z
# is the loopback interface on Linux): about 110,000 ephemeral ports in all.
LOOPBACK_SOURCES = 4


def loopback_sources(host: str) -> tuple[str, ...]:
    """The source addresses clients of `host` connect from: several for a
    loopback IPv4 target on Linux (elsewhere 127.0.0.2 and up need configuring)."""
    if not host.startswith("127.") or not sys.platform.startswith("linux"):
        return ()
    return tuple(f"127.0.0.{n}" for n in range(1, LOOPBACK_SOURCES + 1))


class ClientError(Exception):
    """A connection could not be opened or a request was refused."""


@dataclass(frozen=True)
class Target:
    """Where and how clients connect (picklable: sent to worker processes)."""

    host: str
    port: int
    transport: str = "socketio"
    tls: bool = False
    token: str = ""
    more_ports: tuple[int, ...] = ()  # further instances on the same host: clients are spread over all
    headers: str = "few"  # the upgrade request's headers: wsproto.HEADER_SETS
    # Loopback source addresses clients connect from, in turn: one address
    # has about 28,000 ephemeral ports, too few for 50,000 connections.
    local_hosts: tuple[str, ...] = ()
    local_host: str = ""  # this client's source address ("" : the system's choice)
    # When set, clients follow the live candles of their symbols at this interval
    # (subscribeCandles) instead of their prices.
    candle_interval: str = ""
    throttle_ms: int = 0  # subscribe throttled at this period (0: unthrottled)

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.port, *self.more_ports)

    def for_client(self, index: int) -> "Target":
        """Where the `index`-th client connects: the instances in turn, from the source addresses in turn."""
        if not self.more_ports and not self.local_hosts:
            return self
        local_host = self.local_hosts[index % len(self.local_hosts)] if self.local_hosts else ""
        return dataclasses.replace(
            self, port=self.ports[index % len(self.ports)], more_ports=(), local_hosts=(), local_host=local_host
        )

    @property
    def host_header(self) -> str:
        default = 443 if self.tls else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"

    @property
    def path(self) -> str:
        if self.transport == "socketio":
            return "/socket.io/?EIO=4&transport=websocket"
        return "/live-price" + (f"?token={quote(self.token)}" if self.token else "")


class Receiver:
    """One per worker process: the counters of the current measurement window.

    A window is opened with the first sequence number of each symbol the
    publisher is about to send; anything older (snapshots, stragglers of an
    earlier window) counts as stale, not as a delivery.
    """

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.clients: list[BaseClient] = []
        self.start_seq: dict[str, int] = {}
        # The same update usually reaches many connections of this worker back
        # to back; parsing it once keeps the load generator cheap.
        self.cached_payload: bytes = b""
        self.cached_update: Any = None
        self.reset()

    def reset(self) -> None:
        self.candles = 0  # candle events received (counted, not checked: they are conflated)
        self.delivered = 0
        self.duplicates = 0
        self.out_of_order = 0
        self.stale = 0
        self.foreign = 0
        self.disconnects = 0
        self.server_errors: dict[str, int] = {}
        self.hist = new_histogram()
        self.lat_max = 0

    def on_update(self, last_seq: dict[str, int], update: Any, now_ns: int) -> None:
        if update.__class__ is not dict or update.get("run") != self.run_id:
            self.foreign += 1
            return
        symbol = update["symbol"]
        seq = update["seq"]
        last = last_seq.get(symbol, 0)
        if seq > last:
            last_seq[symbol] = seq
            order = 0
        elif seq == last:
            order = 1
        else:
            order = 2
        start = self.start_seq.get(symbol)
        if start is None or seq < start:
            self.stale += 1
            return
        self.delivered += 1
        if order == 1:
            self.duplicates += 1
        elif order == 2:
            self.out_of_order += 1
        latency = (now_ns - int(update["sentNs"])) // 1000
        if latency > self.lat_max:
            self.lat_max = latency
        self.hist[bucket_of(latency)] += 1

    def on_server_error(self, error: Any) -> None:
        code = error.get("code", "unknown") if isinstance(error, dict) else str(error)[:40]
        self.server_errors[code] = self.server_errors.get(code, 0) + 1

    def subscribers(self) -> dict[str, int]:
        """Open connections per symbol, from what each one was acknowledged."""
        counts: dict[str, int] = {}
        for client in self.clients:
            if client.subscribed and not client.closed and not client.target.candle_interval:
                for symbol in client.symbols:
                    counts[symbol] = counts.get(symbol, 0) + 1
        return counts

    def window_counts(self) -> dict[str, Any]:
        return {
            "candles": self.candles,
            "delivered": self.delivered,
            "duplicates": self.duplicates,
            "out_of_order": self.out_of_order,
            "stale": self.stale,
            "foreign": self.foreign,
            "disconnects": self.disconnects,
            "server_errors": dict(self.server_errors),
            "latency_hist": self.hist,
            "latency_max_us": self.lat_max,
        }


class BaseClient(asyncio.Protocol):
    """HTTP upgrade and frame parsing; subclasses interpret text messages."""

    def __init__(self, receiver: Receiver, target: Target, symbols: list[str]) -> None:
        self.receiver = receiver
        self.target = target
        self.symbols = symbols
        self.last_seq: dict[str, int] = {}
        self.transport: Optional[asyncio.Transport] = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.subscribed = False
        self.closed = False
        self.closing = False
        self._key = wsproto.new_key()
        self._upgraded = False
        self._buf = bytearray()
        self._fragments: Optional[bytearray] = None

    # -- asyncio.Protocol -------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio subclasses
        self.transport.write(
            wsproto.handshake_request(self.target.host_header, self.target.path, self._key, self.target.headers)
        )

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.closed = True
        self._fail(ClientError(f"connection closed{': ' + str(exc) if exc else ''}"))
        if self.subscribed and not self.closing:
            self.receiver.disconnects += 1

    def data_received(self, data: bytes) -> None:
        if not self._upgraded:
            data = self._finish_handshake(data)
            if not data:
                return
        buf = self._buf
        if buf:
            buf += data
            data = buf  # type: ignore[assignment]  # a bytearray is read here as bytes are
        now = time.time_ns()  # one clock read per read() is precise enough and much cheaper
        pos = 0
        end_of_data = len(data)
        while end_of_data - pos >= 2:
            b0 = data[pos]
            length = data[pos + 1]
            if length & 0x80:
                self._abort("server sent a masked frame")
                return
            header = 2
            if length == 126:
                if end_of_data - pos < 4:
                    break
                length = (data[pos + 2] << 8) | data[pos + 3]
                header = 4
            elif length == 127:
                if end_of_data - pos < 10:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                header = 10
                if length > wsproto.MAX_FRAME_BYTES:
                    self._abort("frame too large")
                    return
            end = pos + header + length
            if end > end_of_data:
                break
            payload = data[pos + header : end]
            pos = end
            if b0 == 0x81:  # final text frame: nearly everything
                self.on_text(payload, now)
            else:
                self._on_other_frame(b0, payload, now)
            if self.closed:
                return
        if pos == end_of_data:
            if buf:
                buf.clear()
        elif buf:
            del buf[:pos]
        else:
            self._buf = bytearray(data[pos:])

    # -- framing ----------------------------------------------------------
    def _finish_handshake(self, data: bytes) -> bytes:
        self._buf += data
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > wsproto.MAX_HANDSHAKE_BYTES:
                self._abort("handshake answer too large")
            return b""
        try:
            wsproto.check_handshake_response(bytes(self._buf[:end]), self._key)
        except wsproto.HandshakeError as exc:
            self._abort(str(exc))
            return b""
        rest = bytes(self._buf[end + 4 :])
        self._buf = bytearray()
        self._upgraded = True
        self.on_open()
        return rest

    def _on_other_frame(self, b0: int, payload: bytes, now: int) -> None:
        opcode = b0 & 0x0F
        final = b0 & 0x80
        if opcode == wsproto.OP_PING:
            self.send(bytes(payload), wsproto.OP_PONG)
        elif opcode == wsproto.OP_CLOSE:
            if not self.closing:  # the server closed first: answer, and it counts as a disconnect
                self.send(bytes(payload[:2]), wsproto.OP_CLOSE)
            if self.transport is not None:
                self.transport.close()
        elif opcode in (wsproto.OP_TEXT, wsproto.OP_BINARY, wsproto.OP_CONTINUATION):
            if opcode != wsproto.OP_CONTINUATION:
                self._fragments = bytearray()
                self._fragment_is_text = opcode == wsproto.OP_TEXT
            if self._fragments is None:
                self._abort("continuation without a first fragment")
                return
            self._fragments += payload
            if final:
                message, self._fragments = bytes(self._fragments), None
                if self._fragment_is_text:
                    self.on_text(message, now)

    def send(self, payload: bytes, opcode: int = wsproto.OP_TEXT) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(wsproto.encode_frame(payload, opcode))

    def _abort(self, reason: str) -> None:
        self._fail(ClientError(reason))
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, exc: Exception) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc)
            self.ready.exception()  # retrieved: a failed connect is reported, not logged
        self.fail_pending(exc)

    def close(self) -> None:
        """Polite close; the server sees a normal WebSocket close."""
        self.closing = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(wsproto.close_frame(1000))
            self.transport.close()

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    # -- for subclasses ---------------------------------------------------
    def on_open(self) -> None:
        raise NotImplementedError

    def on_text(self, payload: bytes, now: int) -> None:
        raise NotImplementedError

    def fail_pending(self, exc: Exception) -> None:
        raise NotImplementedError

    async def subscribe(self, symbols: list[str]) -> None:
        raise NotImplementedError


async def subscribe_client(client: BaseClient, timeout: float) -> tuple[int, str]:
    """Subscribe an open client to its symbols: (microseconds taken, error or "")."""
    started = time.perf_counter_ns()
    try:
        async with asyncio.timeout(timeout):
            await client.subscribe(client.symbols)
    except Exception as exc:  # one failed request, reported by reason
        return 0, ("timeout" if isinstance(exc, TimeoutError) else str(exc) or exc.__class__.__name__)[:120]
    return (time.perf_counter_ns() - started) // 1000, ""


def _resolve(future: "asyncio.Future[Any]", value: Any) -> None:
    if not future.done():
        future.set_result(value)


def subscribe_request(target: Target, symbols: list[str]) -> tuple[str, dict[str, Any]]:
    """The request that subscribes a client: to prices (throttled or not), or to live candles."""
    if target.candle_interval:
        return "subscribeCandles", {"symbols": symbols, "interval": target.candle_interval}
    body: dict[str, Any] = {"symbols": symbols}
    if target.throttle_ms:
        body["throttle"] = target.throttle_ms
    return "subscribe", body


def _check_subscribe_answer(answer: Any) -> None:
    if not isinstance(answer, dict) or not answer.get("ok"):
        error = answer.get("error", answer) if isinstance(answer, dict) else answer
        code = error.get("code", "refused") if isinstance(error, dict) else "refused"
        raise ClientError(f"subscribe refused: {code}")
    if answer.get("failed"):
        raise ClientError(f"subscribe failed for {answer['failed'][:3]}")


class SocketIOClient(BaseClient):
    """Engine.IO v4 over websocket only: open `0{..}`, `40`, pings `2` answered `3`."""

    def __init__(self, receiver: Receiver, target: Target, symbols: list[str]) -> None:
        super().__init__(receiver, target, symbols)
        self._next_ack = 0
        self._acks: dict[int, asyncio.Future[Any]] = {}

    def on_open(self) -> None:
        pass  # the server speaks first (Engine.IO open packet)

    def on_text(self, payload: bytes, now: int) -> None:
        receiver = self.receiver
        if payload.startswith(SIO_UPDATE_PREFIX):
            if payload == receiver.cached_payload:
                update = receiver.cached_update
            else:
                try:
                    update = orjson.loads(payload[SIO_UPDATE_PREFIX_LEN:-1])
                except orjson.JSONDecodeError:
                    receiver.foreign += 1
                    return
                receiver.cached_payload = bytes(payload)
                receiver.cached_update = update
            receiver.on_update(self.last_seq, update, now)
            return
        if payload.startswith(SIO_CANDLE_PREFIX):
            receiver.candles += 1
            return
        kind = payload[:1]
        if kind == b"2":  # Engine.IO ping: the server drops us without a pong
            self.send(b"3" + bytes(payload[1:]))
        elif kind == b"0":  # Engine.IO open: now join the default namespace
            auth = orjson.dumps({"token": self.target.token}) if self.target.token else b""
            self.send(b"40" + auth)
        elif kind == b"4":
            self._on_socketio_packet(bytes(payload[1:]))
        elif kind == b"1":  # Engine.IO close
            if self.transport is not None:
                self.transport.close()

    def _on_socketio_packet(self, packet: bytes) -> None:
        kind = packet[:1]
        if kind == b"0":  # CONNECT acknowledged
            _resolve(self.ready, None)
        elif kind == b"3":  # ACK: 3<id>[args]
            i = 1
            while i < len(packet) and 48 <= packet[i] <= 57:
                i += 1
            future = self._acks.pop(int(packet[1:i] or b"-1"), None)
            if future is not None:
                args = orjson.loads(packet[i:]) if i < len(packet) else []
                _resolve(future, args[0] if args else None)
        elif kind == b"2":  # an event other than stockUpdate
            event = orjson.loads(packet[1:])
            if event and event[0] == "error":
                self.receiver.on_server_error(event[1] if len(event) > 1 else None)
        elif kind == b"4":  # CONNECT_ERROR
            self._fail(ClientError(f"connection refused: {packet[1:120].decode(errors='replace')}"))
        elif kind == b"1":  # DISCONNECT by the server
            if self.transport is not None:
                self.transport.close()

    def fail_pending(self, exc: Exception) -> None:
        for future in self._acks.values():
            if not future.done():
                future.set_exception(exc)
                future.exception()
        self._acks.clear()

    async def subscribe(self, symbols: list[str]) -> None:
        self._next_ack += 1
        ack_id = self._next_ack
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._acks[ack_id] = future
        self.send(b"42" + str(ack_id).encode() + orjson.dumps(subscribe_request(self.target, symbols)))
        _check_subscribe_answer(await future)
        self.subscribed = True


class LiveWsClient(BaseClient):
    """The plain `/live-price` endpoint: updates are bare objects, replies carry `type`."""

    def __init__(self, receiver: Receiver, target: Target, symbols: list[str]) -> None:
        super().__init__(receiver, target, symbols)
        self._replies: list[asyncio.Future[Any]] = []  # answered in request order

    def on_open(self) -> None:
        _resolve(self.ready, None)

    def on_text(self, payload: bytes, now: int) -> None:
        receiver = self.receiver
        if payload == receiver.cached_payload:
            receiver.on_update(self.last_seq, receiver.cached_update, now)
            return
        if payload.startswith(WS_CANDLE_PREFIX):
            receiver.candles += 1
            return
        try:
            message = orjson.loads(payload)
        except orjson.JSONDecodeError:
            receiver.foreign += 1
            return
        if not isinstance(message, dict):
            receiver.foreign += 1
        elif "type" not in message:
            receiver.cached_payload = bytes(payload)
            receiver.cached_update = message
            receiver.on_update(self.last_seq, message, now)
        elif message["type"] == "error" and message.get("code") in ("slow_client", "server_shutdown"):
            receiver.on_server_error(message)  # unsolicited: not the answer to a request
        elif self._replies:
            _resolve(self._replies.pop(0), message)
        elif message["type"] == "error":
            receiver.on_server_error(message)

    def fail_pending(self, exc: Exception) -> None:
        for future in self._replies:
            if not future.done():
                future.set_exception(exc)
                future.exception()
        self._replies.clear()

    async def subscribe(self, symbols: list[str]) -> None:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._replies.append(future)
        event, body = subscribe_request(self.target, symbols)
        self.send(orjson.dumps({"action": event, **body}))
        answer = await future
        if isinstance(answer, dict) and answer.get("type") in ("subscribed", "candlesSubscribed"):
            answer = {"ok": True, **answer}
        elif isinstance(answer, dict) and answer.get("type") == "error":
            answer = {"ok": False, "error": answer}
        _check_subscribe_answer(answer)
        self.subscribed = True


CLIENT_CLASSES: dict[str, type[BaseClient]] = {"socketio": SocketIOClient, "websocket": LiveWsClient}


@dataclass
class OpenResult:
    client: Optional[BaseClient]
    connect_us: int = 0  # TCP connect until the connection is usable
    subscribe_us: int = 0  # subscribe request to acknowledgement
    error: str = ""


async def open_client(
    receiver: Receiver, target: Target, symbols: list[str], timeout: float, subscribe: bool = True
) -> OpenResult:
    """Connect, upgrade, join and (unless told not to) subscribe, all within `timeout`."""
    loop = asyncio.get_running_loop()
    cls = CLIENT_CLASSES[target.transport]
    ssl_context = ssl.create_default_context() if target.tls else None
    started = time.perf_counter_ns()
    client: Optional[BaseClient] = None
    try:
        async with asyncio.timeout(timeout):
            _, client = await loop.create_connection(
                lambda: cls(receiver, target, symbols),
                target.host,
                target.port,
                ssl=ssl_context,
                server_hostname=target.host if ssl_context else None,
                local_addr=(target.local_host, 0) if target.local_host else None,
            )
            await client.ready
            connected = time.perf_counter_ns()
            if subscribe and symbols:
                await client.subscribe(symbols)
            done = time.perf_counter_ns()
    except Exception as exc:  # any failure is one failed attempt, reported by reason
        if client is not None:
            client.abort()
        reason = "timeout" if isinstance(exc, TimeoutError) else (str(exc) or exc.__class__.__name__)
        return OpenResult(None, error=reason[:120])
    return OpenResult(client, (connected - started) // 1000, (done - connected) // 1000)
