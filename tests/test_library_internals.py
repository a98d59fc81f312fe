"""What stockstream relies on below the public APIs of python-socketio and python-engineio.

Checked against python-socketio 5.18.1 and python-engineio 4.15.1. Where the
fast path or the shutdown needs a name these libraries do not document, the
name and the behaviour around it are listed here; an upgrade that changes one
fails here with the place that must follow, instead of somewhere deep in an
end-to-end test. Fast: reads the libraries' source, opens no connection.
"""
from __future__ import annotations

import inspect
from types import ModuleType

import engineio
import pytest
import socketio
from engineio import async_server as eio_async_server
from engineio import async_socket as eio_async_socket
from engineio.async_socket import AsyncSocket
from socketio import async_admin, async_pubsub_manager


def _source(module: ModuleType) -> str:
    return inspect.getsource(module)


def _require(condition: bool, relied_on: str, user: str) -> None:
    if not condition:
        pytest.fail(f"python-socketio/engineio changed: {relied_on} (relied on by {user})", pytrace=False)


def test_engineio_websocket_driver_hook() -> None:
    """engineio builds a socket's WebSocket through `server._async["websocket"](handler, server)`,
    which transports/eio.py replaces with its own driver."""
    server = engineio.AsyncServer(async_mode="aiohttp")
    _require("websocket" in getattr(server, "_async", {}), 'AsyncServer._async["websocket"]',
             "transports/eio.py EngineIOServer.__init__")
    _require("self.server._async['websocket'](" in _source(eio_async_socket).replace("ws = ", ""),
             "AsyncSocket calls server._async['websocket'](handler, server)", "transports/eio.py WebSocketDriver")


def test_engineio_websocket_handler_is_bound_or_a_partial() -> None:
    """The handler the driver gets is the socket's bound `_websocket_handler`, or, with the Admin UI,
    a partial whose first argument is the socket (`handler.args[0]`)."""
    _require(callable(getattr(AsyncSocket, "_websocket_handler", None)), "AsyncSocket._websocket_handler",
             "transports/eio.py WebSocketDriver.__init__")
    _require("AsyncSocket._websocket_handler = functools.partialmethod(" in _source(async_admin),
             "the Admin UI wraps AsyncSocket._websocket_handler in functools.partialmethod",
             "transports/eio.py WebSocketDriver.__init__ (handler.args[0])")


def test_engineio_ping_is_a_background_task() -> None:
    """engineio schedules the next ping with `server.start_background_task(self._send_ping)`,
    which transports/eio.py turns into a timer."""
    _require(inspect.iscoroutinefunction(getattr(AsyncSocket, "_send_ping", None)), "AsyncSocket._send_ping",
             "transports/eio.py EngineIOServer.start_background_task")
    _require("self.server.start_background_task(self._send_ping)" in _source(eio_async_socket),
             "AsyncSocket starts _send_ping through server.start_background_task",
             "transports/eio.py EngineIOServer.start_background_task")
    src = _source(eio_async_socket)
    for attribute in ("self.last_ping", "self.closing", "self.closed", "self.queue"):
        _require(attribute in src, f"AsyncSocket.{attribute.removeprefix('self.')}", "transports/eio.py _ping")


def test_engineio_disconnect_event_names_the_sid_first() -> None:
    """`_trigger_event("disconnect", sid, ...)`: transports/eio.py reads the sid as args[0]."""
    params = list(inspect.signature(eio_async_server.AsyncServer._trigger_event).parameters)
    _require(params[:2] == ["self", "event"], "AsyncServer._trigger_event(self, event, *args, **kwargs)",
             "transports/eio.py EngineIOServer._trigger_event")
    _require("'disconnect', self.sid" in _source(eio_async_socket),
             "AsyncSocket triggers 'disconnect' with its sid first", "transports/eio.py EngineIOServer._trigger_event")


def test_socketio_server_hooks() -> None:
    """The Socket.IO server's engine class and its event entry points, overridden in
    transports/socketio_transport.py, keep their names and signatures."""
    server = socketio.AsyncServer
    _require(callable(getattr(server, "_engineio_server_class", None)), "AsyncServer._engineio_server_class",
             "transports/socketio_transport.py SocketIOServer")
    _require(list(inspect.signature(server._handle_eio_message).parameters) == ["self", "eio_sid", "data"],
             "AsyncServer._handle_eio_message(self, eio_sid, data)", "transports/socketio_transport.py")
    _require(list(inspect.signature(server._handle_event).parameters) == ["self", "eio_sid", "namespace", "id", "data"],
             "AsyncServer._handle_event(self, eio_sid, namespace, id, data)", "transports/socketio_transport.py")


def test_redis_manager_attributes_closed_at_shutdown() -> None:
    """The pub/sub manager keeps its listener task in `thread` and its connections in `redis`
    and `pubsub`, which node.py close_socketio_manager stops (shutdown() leaves them running)."""
    src = _source(async_pubsub_manager) + _source(socketio.async_redis_manager)
    for attribute in ("self.thread = ", "self.redis = ", "self.pubsub = "):
        _require(attribute in src, f"AsyncRedisManager.{attribute.split('.')[1].split(' ')[0]}",
                 "node.py close_socketio_manager")
