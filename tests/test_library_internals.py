"""What stockstream relies on below the public APIs of python-socketio and python-engineio.

Checked against python-socketio 5.18.1 and python-engineio 4.15.1. Where the
fast path or the shutdown needs a name these libraries do not document, the
name and the behaviour around it are listed here; an upgrade that changes one
fails here with the place that must follow, instead of somewhere deep in an
end-to-end test. Fast: reads the libraries' source, opens no connection.
"""

from __future__ import annotations

import asyncio
import inspect
from types import ModuleType

import engineio
import pytest
import socketio
from engineio import async_server as eio_async_server
from engineio import async_socket as eio_async_socket
from engineio import packet as eio_packet
from engineio.async_socket import AsyncSocket
from socketio import packet as sio_packet
from socketio import async_admin, async_pubsub_manager

from stockstream.transports.socketio_internals import CheckedSocket, EngineIOHooks


def _source(module: ModuleType) -> str:
    return inspect.getsource(module)


def _require(condition: bool, relied_on: str, user: str) -> None:
    if not condition:
        pytest.fail(f"python-socketio/engineio changed: {relied_on} (relied on by {user})", pytrace=False)


def test_engineio_websocket_driver_hook() -> None:
    """engineio builds a socket's WebSocket through `server._async["websocket"](handler, server)`,
    which socketio_internals.py hands to its websocket_driver hook."""
    server = engineio.AsyncServer(async_mode="aiohttp")
    _require(
        "websocket" in getattr(server, "_async", {}),
        'AsyncServer._async["websocket"]',
        "transports/socketio_internals.py EngineIOHooks.__init__",
    )
    _require(
        "self.server._async['websocket'](" in _source(eio_async_socket).replace("ws = ", ""),
        "AsyncSocket calls server._async['websocket'](handler, server)",
        "transports/socketio_internals.py EngineIOHooks._websocket_factory",
    )


def test_engineio_websocket_handler_is_bound_or_a_partial() -> None:
    """The handler the driver gets is the socket's bound `_websocket_handler`, or, with the Admin UI,
    a partial whose first argument is the socket (`handler.args[0]`)."""
    _require(
        callable(getattr(AsyncSocket, "_websocket_handler", None)),
        "AsyncSocket._websocket_handler",
        "transports/socketio_internals.py socket_of",
    )
    _require(
        "AsyncSocket._websocket_handler = functools.partialmethod(" in _source(async_admin),
        "the Admin UI wraps AsyncSocket._websocket_handler in functools.partialmethod",
        "transports/socketio_internals.py socket_of (handler.args[0])",
    )


def test_engineio_ping_is_a_background_task() -> None:
    """engineio schedules the next ping with `server.start_background_task(self._send_ping)`,
    which socketio_internals.py hands to its schedule_ping hook (a timer in transports/eio.py)."""
    _require(
        inspect.iscoroutinefunction(getattr(AsyncSocket, "_send_ping", None)),
        "AsyncSocket._send_ping",
        "transports/socketio_internals.py EngineIOHooks.start_background_task",
    )
    _require(
        "self.server.start_background_task(self._send_ping)" in _source(eio_async_socket),
        "AsyncSocket starts _send_ping through server.start_background_task",
        "transports/socketio_internals.py EngineIOHooks.start_background_task",
    )
    src = _source(eio_async_socket)
    for attribute in ("self.last_ping", "self.closing", "self.closed", "self.queue"):
        _require(
            attribute in src,
            f"AsyncSocket.{attribute.removeprefix('self.')}",
            "transports/eio.py _ping and WebSocketDriver",
        )


def test_engineio_pong_only_schedules_the_next_ping() -> None:
    """A PONG's whole handling in `AsyncSocket.receive` is `self.schedule_ping()`, which
    transports/eio.py calls directly (no task for the pong every ping interval)."""
    source = inspect.getsource(AsyncSocket.receive)
    _require(
        "if pkt.packet_type == packet.PONG:\n            self.schedule_ping()\n        elif" in source,
        "AsyncSocket.receive handles a PONG with schedule_ping() alone",
        "transports/eio.py WebSocketDriver.received",
    )
    _require(
        not inspect.iscoroutinefunction(AsyncSocket.schedule_ping),
        "AsyncSocket.schedule_ping is not a coroutine",
        "transports/eio.py WebSocketDriver.received",
    )


def test_engineio_disconnect_event_names_the_sid_first() -> None:
    """`_trigger_event("disconnect", sid, ...)`: socketio_internals.py reads the sid as args[0]."""
    params = list(inspect.signature(eio_async_server.AsyncServer._trigger_event).parameters)
    _require(
        params[:2] == ["self", "event"],
        "AsyncServer._trigger_event(self, event, *args, **kwargs)",
        "transports/socketio_internals.py EngineIOHooks._trigger_event",
    )
    _require(
        "'disconnect', self.sid" in _source(eio_async_socket),
        "AsyncSocket triggers 'disconnect' with its sid first",
        "transports/socketio_internals.py EngineIOHooks._trigger_event",
    )


def test_engineio_connect_event_comes_after_the_socket_is_registered() -> None:
    """`_handle_connect` builds a plain AsyncSocket, keeps it in `sockets` under
    its sid and then triggers "connect" with that sid first: socketio_internals.py
    turns it into a CheckedSocket there. `receive` still names the packet's type
    by indexing `packet_names` (what CheckedSocket guards)."""
    connect = inspect.getsource(eio_async_server.AsyncServer._handle_connect)
    _require(
        "self.sockets[sid] = s" in connect
        and connect.index("self.sockets[sid] = s") < connect.index("_trigger_event('connect', sid"),
        "AsyncServer._handle_connect registers the socket before triggering 'connect'",
        "transports/socketio_internals.py EngineIOHooks._trigger_event",
    )
    _require(
        "packet.packet_names[pkt.packet_type]" in inspect.getsource(AsyncSocket.receive),
        "AsyncSocket.receive indexes packet_names with the packet type",
        "transports/socketio_internals.py CheckedSocket",
    )


async def test_a_checked_socket_drops_a_packet_of_an_unknown_type() -> None:
    """A packet whose type is a digit past NOOP is dropped, where a plain
    AsyncSocket raises IndexError; known packets are received as before."""
    server = EngineIOHooks(async_mode="aiohttp")
    unknown = eio_packet.Packet(encoded_packet="9")
    with pytest.raises(IndexError):
        await AsyncSocket(server, "plain").receive(unknown)
    checked = CheckedSocket(server, "checked")
    await checked.receive(unknown)
    with pytest.raises(engineio.exceptions.UnknownPacketError):
        await checked.receive(eio_packet.Packet(encoded_packet="6"))  # NOOP: as a plain socket answers it


def test_socketio_server_hooks() -> None:
    """The Socket.IO server's engine class and its event entry points, overridden in
    transports/socketio_internals.py, keep their names and signatures."""
    server = socketio.AsyncServer
    _require(
        callable(getattr(server, "_engineio_server_class", None)),
        "AsyncServer._engineio_server_class",
        "transports/socketio_internals.py SocketIOHooks",
    )
    _require(
        list(inspect.signature(server._handle_eio_message).parameters) == ["self", "eio_sid", "data"],
        "AsyncServer._handle_eio_message(self, eio_sid, data)",
        "transports/socketio_internals.py SocketIOHooks",
    )
    _require(
        list(inspect.signature(server._handle_event).parameters) == ["self", "eio_sid", "namespace", "id", "data"],
        "AsyncServer._handle_event(self, eio_sid, namespace, id, data)",
        "transports/socketio_internals.py SocketIOHooks",
    )


def test_redis_manager_attributes_closed_at_shutdown() -> None:
    """The pub/sub manager keeps its listener task in `thread` and its connections in `redis`
    and `pubsub`, which socketio_internals.py close_manager stops (shutdown() leaves them running)."""
    src = _source(async_pubsub_manager) + _source(socketio.async_redis_manager)
    for attribute in ("self.thread = ", "self.redis = ", "self.pubsub = "):
        _require(
            attribute in src,
            f"AsyncRedisManager.{attribute.split('.')[1].split(' ')[0]}",
            "transports/socketio_internals.py close_manager",
        )


HOOKS = {
    "SocketIOHooks": {"engineio_server_class", "malformed_packet", "main_event", "connect_reply", "connect_reply_sent"},
    "EngineIOHooks": {"websocket_driver", "socket_closed", "schedule_ping"},
}


def test_hook_names_do_not_shadow_the_libraries() -> None:
    """The hooks have names neither library uses (python-socketio's `event` is
    its decorator): an upgrade that adds one of them fails here."""
    from stockstream.transports.socketio_internals import EngineIOHooks, SocketIOHooks

    for ours, theirs in ((SocketIOHooks, socketio.AsyncServer), (EngineIOHooks, engineio.AsyncServer)):
        assert HOOKS[ours.__name__] <= set(vars(ours)), f"{ours.__name__} lost a hook"
        clashes = {name for name in HOOKS[ours.__name__] if hasattr(theirs, name)}
        _require(
            not clashes,
            f"{theirs.__module__}.{theirs.__name__} now has {sorted(clashes)}",
            f"transports/socketio_internals.py {ours.__name__}",
        )


async def test_pings_are_timers_not_tasks() -> None:
    """With stockstream's engine, engineio's next ping is a timer: no task is
    started for it, and the PING is queued once the interval has passed."""
    from stockstream.transports.eio import EngineIOServer

    server = EngineIOServer(async_mode="aiohttp", send_buffer=65536, ping_interval=0.05)
    socket = AsyncSocket(server, "s1")
    socket.queue = server.create_queue()
    tasks_before = len(asyncio.all_tasks())
    assert server.start_background_task(socket._send_ping) is None
    assert len(asyncio.all_tasks()) == tasks_before
    for _ in range(100):
        if socket.queue.qsize():
            break
        await asyncio.sleep(0.01)
    assert socket.queue.get_nowait().packet_type == eio_packet.PING


async def test_connect_reply_hooks_wrap_the_connect_packet() -> None:
    """The main namespace's CONNECT reply passes through connect_reply before it
    is encoded and sent, and connect_reply_sent runs after; other packets and
    namespaces go out untouched."""
    from stockstream.transports.socketio_internals import SocketIOHooks

    calls: list[str] = []

    class Server(SocketIOHooks):
        def connect_reply(self, sid: str, data: dict) -> dict:
            calls.append(f"reply {sid}")
            return {**data, "extra": 1}

        def connect_reply_sent(self, sid: str) -> None:
            calls.append(f"sent {sid}")

    server = Server(async_mode="aiohttp")
    sent: list[object] = []

    async def send(eio_sid: str, data: object) -> None:
        calls.append("eio.send")
        sent.append(data)

    server.eio.send = send  # type: ignore[method-assign]  # records what would be sent
    await server._send_packet("e1", sio_packet.Packet(sio_packet.CONNECT, {"sid": "s1"}, namespace="/"))
    await server._send_packet("e1", sio_packet.Packet(sio_packet.CONNECT, {"sid": "s2"}, namespace="/admin"))
    await server._send_packet("e1", sio_packet.Packet(sio_packet.EVENT, ["x", {"sid": "s3"}], namespace="/"))
    assert calls == ["reply s1", "eio.send", "sent s1", "eio.send", "eio.send"]
    assert '"extra":1' in str(sent[0]) and "extra" not in str(sent[1])
