"""A session answers every request and never leaves one half applied; a subscribe's
snapshot and live updates form one sequence (no servers, embedded backend)."""
from __future__ import annotations

import asyncio
from typing import Any, Collection

from stockstream.auth import TokenVerifier
from stockstream.broker.memory import MemoryBroker
from stockstream.config import Settings
from stockstream.errors import ClientError, ErrorCode
from stockstream.hub import Hub
from stockstream.outbox import FlushScheduler
from stockstream.session import Request, Services, Session
from stockstream.updates import CheckedUpdate, Update


class FakeConnection:
    transport = "fake"

    def __init__(self, fail_replies: bool = False) -> None:
        self.fail_replies = fail_replies
        self.answers: list[tuple[str, Any]] = []
        self.sent: list[Any] = []

    def send(self, items: Collection[Any], limit: int | None) -> bool:
        self.sent.extend(items)
        return True

    def backlog(self) -> int:
        return 0

    def reply(self, request: Request, result: dict[str, Any]) -> None:
        if self.fail_replies:
            raise TypeError("str is not valid UTF-8: surrogates not allowed")
        self.answers.append(("ok", result))

    def reply_error(self, request: Request, error: ClientError) -> None:
        self.answers.append(("error", error.code.value))

    def error_text(self, error: ClientError) -> str:
        return error.code.value

    def joined(self, symbols: list[str]) -> None:
        pass

    def left(self, symbols: list[str]) -> None:
        pass

    async def disconnect(self, going_away: bool = False) -> None:
        pass


async def stack() -> tuple[Services, MemoryBroker]:
    settings = Settings.from_env({})
    broker = MemoryBroker(settings)
    hub = Hub(broker)
    await broker.start(hub)
    return Services(settings, hub, broker, TokenVerifier(settings), FlushScheduler()), broker


async def answered(connection: FakeConnection, count: int) -> None:
    for _ in range(200):
        if len(connection.answers) >= count:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"only {connection.answers} answered")


async def test_a_lone_surrogate_is_refused_before_anything_is_applied() -> None:
    """subscribe ["AAPL", "\\ud800"]: invalid_payload, and AAPL is not subscribed."""
    services, _ = await stack()
    connection = FakeConnection()
    session = Session(services, connection)
    session.submit(Request("subscribe", ["AAPL", "\ud800"], ack=1))
    await answered(connection, 1)
    assert connection.answers == [("error", "invalid_payload")]
    assert session.subscriptions == set() and not services.hub.rooms


async def test_a_reply_that_cannot_be_encoded_is_undone_and_answered_internal() -> None:
    """If a reply still fails to encode, the subscribe is undone (no room, no gate) and answered."""
    services, _ = await stack()
    connection = FakeConnection(fail_replies=True)
    session = Session(services, connection)
    session.submit(Request("subscribe", ["AAPL"], ack=1))
    await answered(connection, 1)
    assert connection.answers == [("error", "internal")]
    assert session.subscriptions == set() and not session.gates and not services.hub.rooms


async def test_snapshot_then_only_newer_updates() -> None:
    """A subscribe while the symbol streams: its snapshot, then exactly the updates published after it."""
    services, broker = await stack()
    watcher = Session(services, FakeConnection())
    watcher.submit(Request("subscribe", ["AAPL"], ack=1))
    for n in range(1, 4):
        await broker.publish(CheckedUpdate({"symbol": "AAPL", "price": float(n), "timestamp": 1000}))
    connection = FakeConnection()
    session = Session(services, connection)
    session.submit(Request("subscribe", ["AAPL"], ack=1))
    await answered(connection, 1)
    for n in range(4, 7):
        await broker.publish(CheckedUpdate({"symbol": "AAPL", "price": float(n), "timestamp": 1000}))
    await asyncio.sleep(0.01)
    prices = [item.price for item in connection.sent if isinstance(item, Update)]
    assert prices == [3.0, 4.0, 5.0, 6.0]


async def test_the_shutdown_notice_is_queued_and_drained_once_sent() -> None:
    """notify_shutdown queues the notice; drained is false while it waits and true once it left (or closed)."""
    services, _ = await stack()
    connection = FakeConnection()
    session = Session(services, connection)
    assert session.drained
    session.notify_shutdown(ClientError(ErrorCode.SERVER_SHUTDOWN, "bye"))
    assert not session.drained and connection.sent == []
    services.scheduler.flush_now()
    assert connection.sent == ["server_shutdown"]
    assert session.drained
