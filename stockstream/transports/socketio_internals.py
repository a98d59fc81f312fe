"""Every use stockstream makes of python-socketio's and python-engineio's non-public names.

Checked against python-socketio 5.18.1 and python-engineio 4.15.1:
tests/test_library_internals.py reads both libraries and fails, naming the
name that changed and the hook here that relies on it. The rest of stockstream
subclasses the two servers below and implements their hooks, which have public
names, so an upgrade is checked and mended in this one module.

engineio (`EngineIOHooks`):
- `AsyncServer._async["websocket"]`, the factory of a socket's WebSocket
  server, called as `factory(handler, server)` where the handler is the
  socket's bound `AsyncSocket._websocket_handler` (with the Admin UI, a
  functools.partial whose first argument is the socket) → `websocket_driver(socket)`;
- `AsyncServer._trigger_event("disconnect", sid, ...)`, run by every close of
  a socket → `socket_closed(sid)`;
- `AsyncSocket._send_ping`, started through `start_background_task` after
  each pong as a task asleep for the ping interval → `schedule_ping(socket)`;
- `AsyncServer.sockets` and `AsyncSocket.receive`: a packet whose type is a
  digit past NOOP decodes, and `receive` then fails with an IndexError
  (logged with a stack trace, per packet, at the sender's will), so each new
  socket becomes a `CheckedSocket`, whose `receive` drops such a packet.

python-socketio (`SocketIOHooks`):
- `AsyncServer._engineio_server_class` → the `engineio_server_class` attribute;
- `AsyncServer._handle_eio_message`, which raises ValueError for a packet that
  is not Socket.IO → `malformed_packet(eio_sid)`;
- `AsyncServer._handle_event(eio_sid, namespace, id, data)` → `main_event(eio_sid, id, data)`
  for events of the main namespace;
- `AsyncServer._send_packet`, through which the connect handler's CONNECT reply
  `{"sid": sid}` leaves → `connect_reply(sid, data)` and `connect_reply_sent(sid)`;
- the Redis manager's `thread`, `redis` and `pubsub` attributes, which
  `shutdown()` leaves running → `close_manager(manager)`.

`AsyncPubSubManager._publish` and `_listen` are not here: python-socketio's
documentation names them as the methods a custom message queue implements
(transports/cluster_manager.py).
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

import engineio
import socketio
from engineio import packet as eio_packet
from engineio.async_socket import AsyncSocket
from socketio import packet as sio_packet


def socket_of(handler: Any) -> AsyncSocket:
    """The Engine.IO socket whose WebSocket handler engineio hands over."""
    return handler.__self__ if hasattr(handler, "__self__") else handler.args[0]


class CheckedSocket(AsyncSocket):
    """An Engine.IO socket that drops a packet of an unknown type, as engineio
    drops other packets it has no use for. (Raising an EngineIOError instead
    would have engineio close the long-polling session and hold the POST
    until the client's next poll takes what is queued.)"""

    async def receive(self, pkt: eio_packet.Packet) -> None:
        if 0 <= pkt.packet_type < len(eio_packet.packet_names):
            await super().receive(pkt)


class EngineIOHooks(engineio.AsyncServer):
    """engineio's server with its socket's WebSocket, close and ping as hooks."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._async: dict[str, Any] = {**self._async, "websocket": self._websocket_factory}

    def _websocket_factory(self, handler: Any, server: Any) -> Callable[[dict[str, Any]], Any]:
        return self.websocket_driver(socket_of(handler))

    def websocket_driver(self, socket: AsyncSocket) -> Callable[[dict[str, Any]], Any]:
        """What serves `socket` over a WebSocket: called with the request's environ."""
        raise NotImplementedError

    def socket_closed(self, sid: str) -> None:
        """The Engine.IO socket `sid` is closing, for whatever reason."""

    def schedule_ping(self, socket: AsyncSocket) -> bool:
        """The next ping of `socket` is due after the ping interval; True when
        scheduled here (engineio then starts no task for it)."""
        return False

    async def _trigger_event(self, event: str, *args: Any, **kwargs: Any) -> Any:
        if event == "connect" and args:
            socket = self.sockets.get(args[0])
            if type(socket) is AsyncSocket:
                socket.__class__ = CheckedSocket  # the same object, checking what it receives
        elif event == "disconnect" and args:
            self.socket_closed(args[0])
        return await super()._trigger_event(event, *args, **kwargs)

    def start_background_task(self, target: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(target, "__func__", None) is AsyncSocket._send_ping and self.schedule_ping(target.__self__):
            return None
        return super().start_background_task(target, *args, **kwargs)


class SocketIOHooks(socketio.AsyncServer):
    """python-socketio's server with its main namespace's events, malformed
    packets and CONNECT reply as hooks."""

    engineio_server_class: type[engineio.AsyncServer] = engineio.AsyncServer

    def _engineio_server_class(self) -> type[engineio.AsyncServer]:
        return self.engineio_server_class

    async def malformed_packet(self, eio_sid: str) -> None:
        """A message that is not a Socket.IO packet arrived on `eio_sid`."""

    async def main_event(self, eio_sid: str, id: int | None, data: Any) -> None:
        """An event of the main namespace: `data` is the decoded packet's
        argument list, `id` its ack id (None: no ack asked for)."""

    def connect_reply(self, sid: str, data: dict[str, Any]) -> dict[str, Any]:
        """The body of the main namespace's CONNECT reply to `sid`."""
        return data

    def connect_reply_sent(self, sid: str) -> None:
        """The CONNECT reply to `sid` was handed to Engine.IO."""

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        try:
            await super()._handle_eio_message(eio_sid, data)
        except ValueError:
            await self.malformed_packet(eio_sid)

    async def _handle_event(self, eio_sid: str, namespace: str | None, id: int | None, data: Any) -> None:
        if (namespace or "/") != "/":
            return await super()._handle_event(eio_sid, namespace, id, data)  # e.g. the Admin UI's
        await self.main_event(eio_sid, id, data)

    async def _send_packet(self, eio_sid: str, pkt: Any) -> None:
        sid = None
        if (
            pkt.packet_type == sio_packet.CONNECT
            and (pkt.namespace or "/") == "/"
            and isinstance(pkt.data, dict)
            and "sid" in pkt.data
        ):
            sid = pkt.data["sid"]
            pkt.data = self.connect_reply(sid, pkt.data)
        await super()._send_packet(eio_sid, pkt)
        if sid is not None:
            self.connect_reply_sent(sid)


async def close_manager(manager: Any) -> None:
    """Stop a pub/sub client manager's listener task and close its Redis
    connections (python-socketio leaves both running after shutdown())."""
    task = getattr(manager, "thread", None)
    if isinstance(task, asyncio.Task):
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    for name in ("pubsub", "redis"):
        connection = getattr(manager, name, None)
        if connection is not None:
            try:
                await connection.aclose()
            except Exception:  # noqa: BLE001 - a connection Redis already dropped may fail to close
                pass
