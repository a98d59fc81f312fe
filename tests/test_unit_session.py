"""A session answers every request and never leaves one half applied; a subscribe's
snapshot and live updates form one sequence (no servers, embedded backend)."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Collection

from stockstream.auth import TokenVerifier
from stockstream.broker.memory import MemoryBroker
from stockstream.config import Settings
from stockstream.errors import ClientError, ErrorCode
from stockstream.hub import Hub
from stockstream.outbox import FlushScheduler
from stockstream.recovery import SavedStreams
from stockstream.session import MAX_WAITING_REQUESTS, Request, Services, Session, StreamStarts
from stockstream.shared_events import SharedEvent
from stockstream.updates import CheckedUpdate, ResumePoint, Update

from tests.support.waiting import now_ms, period_with_room


class FakeConnection:
    transport = "fake"

    def __init__(self, fail_replies: bool = False) -> None:
        self.id = f"fake-{id(self)}"
        self.fail_replies = fail_replies
        self.answers: list[tuple[str, Any]] = []
        self.sent: list[Any] = []
        self.log: list[Any] = []  # everything sent, in order

    def send(self, items: Collection[Any], limit: int | None) -> bool:
        for item in items:
            self.log.append(item)
            if isinstance(item, tuple):
                self.answers.append(item)
            else:
                self.sent.append(item)
        return True

    def backlog(self) -> int:
        return 0

    # Encoded messages are tuples here, so the test tells them from updates.
    def encode_reply(self, request: Request, result: dict[str, Any]) -> list[Any]:
        if self.fail_replies:
            raise TypeError("str is not valid UTF-8: surrogates not allowed")
        return [("ok", result)]

    def encode_error(self, error: ClientError, request: Request | None = None) -> Any:
        return ("error", error.code.value)

    def encode_event(self, name: str, payload: dict[str, Any]) -> Any:
        return ("event", name, payload)

    recovery = None

    def joined(self, symbols: list[str]) -> None:
        pass

    def left(self, symbols: list[str]) -> None:
        pass

    async def disconnect(self, going_away: bool = False) -> None:
        pass


async def stack(env: dict[str, str] | None = None) -> tuple[Services, MemoryBroker]:
    settings = Settings.from_env(env or {})
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
    assert not session.drained and connection.answers == []
    services.scheduler.flush_now()
    assert connection.answers == [("error", "server_shutdown")]
    assert session.drained


class OtherTransportConnection(FakeConnection):
    transport = "other"


async def test_one_registry_holds_every_open_session_until_it_closes() -> None:
    """Every session, whatever its transport, is in services.sessions under its
    connection's id from creation until its connection is gone."""
    services, _ = await stack()
    first, second = FakeConnection(), OtherTransportConnection()
    one, two = Session(services, first), Session(services, second)
    assert services.sessions.get(first.id) is one and services.sessions.get(second.id) is two
    assert len(services.sessions) == 2
    assert (services.sessions.count("fake"), services.sessions.count("other")) == (1, 1)
    await one.closed_by_transport()
    assert services.sessions.get(first.id) is None and list(services.sessions) == [two]
    await two.close()
    assert len(services.sessions) == 0


async def test_a_refused_identity_leaves_no_session_registered() -> None:
    """A session refused at creation (too many connections for its user) is not registered."""
    settings = Settings.from_env({"MAX_CONNECTIONS_PER_USER": "1"})
    broker = MemoryBroker(settings)
    hub = Hub(broker)
    services = Services(settings, hub, broker, TokenVerifier(settings), FlushScheduler())
    from stockstream.auth import Identity

    Session(services, FakeConnection(), Identity("ann"))
    try:
        Session(services, FakeConnection(), Identity("ann"))
    except ClientError as error:
        assert error.code is ErrorCode.AUTH_FAILED
    else:
        raise AssertionError("a second connection of the user was admitted")
    assert len(services.sessions) == 1


async def test_replies_and_updates_leave_through_the_outbox_in_request_order() -> None:
    """The connection only encodes: a reply is queued by the session behind
    what was already queued, and sent with the next flush, in order."""
    services, broker = await stack()
    connection = FakeConnection()
    session = Session(services, connection)
    session.submit(Request("subscribe", ["AAPL"], ack=1))
    await answered(connection, 1)
    await broker.publish(CheckedUpdate({"symbol": "AAPL", "price": 1.0, "timestamp": 1000}))
    session.submit(Request("ping", None, ack=2))
    await answered(connection, 2)
    kinds = [item[0] if isinstance(item, tuple) else item.price for item in connection.log]
    assert kinds == ["ok", 1.0, "ok"]


def test_every_request_a_session_answers_is_framed_by_both_transports() -> None:
    """One list of requests (Session.actions): /live-price frames a reply to
    each, and Socket.IO takes each as an event but ping (its own heartbeat)."""
    from stockstream.transports.socketio_transport import EVENTS
    from stockstream.transports.websocket import REPLY_TYPES

    assert set(REPLY_TYPES) == Session.actions
    assert EVENTS == Session.actions - {"ping"}


def spy_on_starts(monkeypatch: Any) -> list[tuple[str, StreamStarts]]:
    """Every stream start from now on (session id, what it read): the one path subscriptions start on."""
    starts: list[tuple[str, StreamStarts]] = []
    original = Session.start_streams

    async def start_streams(self: Session, *args: Any, **kwargs: Any) -> StreamStarts:
        result = await original(self, *args, **kwargs)
        starts.append((self.id, result))
        return result

    monkeypatch.setattr(Session, "start_streams", start_streams)
    return starts


# Within history's age limit: update n is published at NOW_MS + n.
NOW_MS = int(time.time() * 1000)
HOUR_MS = 3_600_000


async def publish_prices(broker: MemoryBroker, prices: range) -> None:
    for n in prices:
        await broker.publish(CheckedUpdate({"symbol": "AAPL", "price": float(n), "timestamp": NOW_MS + n}))


def prices_sent(connection: FakeConnection) -> list[float]:
    return [item.price for item in connection.sent if isinstance(item, Update)]


def subscribed_to(symbols: list[str]) -> SavedStreams:
    """A saved session holding plain subscriptions only."""
    return SavedStreams(symbols, {}, [], 0)


async def test_a_recovery_and_a_since_seq_subscribe_start_alike(monkeypatch: Any) -> None:
    """A recovered session resuming after seq 2 and a subscribe with sinceSeq 2
    start on the same path (Session.start_streams): the same replay, read at
    the same stream position, then the same live updates, once each."""
    services, broker = await stack()
    await publish_prices(broker, range(1, 6))
    starts = spy_on_starts(monkeypatch)
    subscriber = FakeConnection()
    Session(services, subscriber).submit(Request("subscribe", {"symbols": ["AAPL"], "sinceSeq": 2}, ack=1))
    await answered(subscriber, 1)
    assert subscriber.answers[0][1]["recovered"] is True
    recovered = FakeConnection()
    session = Session(services, recovered)
    opener = await session.restore(subscribed_to(["AAPL"]), {"AAPL": ResumePoint(2, NOW_MS + 2)})
    assert opener is not None and session.subscriptions == {"AAPL"} and session.gates
    await publish_prices(broker, range(6, 8))  # held at the gate until the streams open
    opener()
    await publish_prices(broker, range(8, 9))
    services.scheduler.flush_now()
    assert [session_id for session_id, _ in starts] == [subscriber.id, recovered.id]
    (_, by_subscribe), (_, by_recovery) = starts
    assert by_subscribe.first == by_recovery.first and by_subscribe.positions == by_recovery.positions
    assert by_subscribe.replayed is by_recovery.replayed is True
    assert prices_sent(subscriber) == prices_sent(recovered) == [3.0, 4.0, 5.0, 6.0, 7.0, 8.0]


async def test_history_gone_falls_back_for_a_subscribe_and_fails_a_recovery(monkeypatch: Any) -> None:
    """From a point history no longer reaches, a sinceSeq subscribe falls back
    to the snapshot (recovered: false) while a recovery gives nothing back:
    no subscription, gate or room is left behind."""
    services, broker = await stack({"HISTORY_MAX_ENTRIES": "2"})
    await publish_prices(broker, range(1, 6))
    starts = spy_on_starts(monkeypatch)
    subscriber = FakeConnection()
    Session(services, subscriber).submit(Request("subscribe", {"symbols": ["AAPL"], "sinceSeq": 1}, ack=1))
    await answered(subscriber, 1)
    services.scheduler.flush_now()
    assert subscriber.answers[0][1]["recovered"] is False and prices_sent(subscriber) == [5.0]
    session = Session(services, FakeConnection())
    assert await session.restore(subscribed_to(["AAPL"]), {"AAPL": ResumePoint(1, NOW_MS + 1)}) is None
    assert session.subscriptions == set() and not session.gates
    assert session not in services.hub.rooms["AAPL"]
    assert len(starts) == 1, "the failed recovery started no stream"


async def test_a_since_subscribe_of_a_symbol_already_streaming_answers_recovered() -> None:
    """A resubscribe with sinceSeq of a symbol the session already streams (say,
    after connection state recovery gave it back) adds nothing and answers
    `recovered: true`: nothing was missed. `*` alone with a since starts with
    snapshots and claims no recovery."""
    services, broker = await stack()
    await publish_prices(broker, range(1, 4))
    connection = FakeConnection()
    session = Session(services, connection)
    session.submit(Request("subscribe", ["AAPL"], ack=1))
    session.submit(Request("subscribe", {"symbols": ["AAPL"], "sinceSeq": 1}, ack=2))
    session.submit(Request("subscribe", {"symbols": ["*"], "sinceSeq": 1}, ack=3))
    await answered(connection, 3)
    first, again, wildcard = (answer for _, answer in connection.answers)
    assert "recovered" not in first
    assert again["added"] == [] and again["recovered"] is True
    assert wildcard["added"] == ["*"] and "recovered" not in wildcard


async def test_a_recovered_session_keeps_its_throttles_candles_and_heartbeat() -> None:
    """What a session asked for besides its subscriptions comes back with it:
    a throttled symbol stays throttled (a burst reaches it as one update, the
    latest), a followed candle starts again with its current candle, and the
    heartbeat period goes on; a plain symbol stays unthrottled."""
    await period_with_room(HOUR_MS, 5_000)  # the candle's updates fall in one 1h period
    services, broker = await stack()

    async def publish(symbol: str, price: float) -> Update | None:
        return await broker.publish(CheckedUpdate({"symbol": symbol, "price": price, "timestamp": now_ms()}))

    await publish("AAPL", 1.0)
    last = await publish("AAPL", 2.0)
    assert last is not None and last.seq == 2
    old_connection = FakeConnection()
    old = Session(services, old_connection)
    old.submit(Request("subscribe", {"symbols": ["AAPL"], "throttle": 60_000}, ack=1))
    old.submit(Request("subscribe", {"symbols": ["MSFT"], "heartbeat": 30}, ack=2))
    old.submit(Request("subscribeCandles", {"symbols": ["AAPL"], "interval": "1h"}, ack=3))
    await answered(old_connection, 3)
    saved = old.recoverable()
    assert saved == SavedStreams(["AAPL", "MSFT"], {"AAPL": 60_000}, [("AAPL", "1h")], 30), saved

    connection = FakeConnection()
    session = Session(services, connection)
    opener = await session.restore(saved, {"AAPL": ResumePoint(2, last.timestamp)})
    assert opener is not None
    opener()
    services.scheduler.flush_now()
    assert session.throttles == {"AAPL": 60_000} and session.candles.keys() == [("AAPL", "1h")]
    assert services.heartbeats.period_of(session) == 30
    candles = [item for item in connection.sent if isinstance(item, SharedEvent) and item.name == "candle"]
    assert len(candles) == 1, connection.sent  # the current candle, at once
    for n in range(3, 8):
        await publish("AAPL", float(n))
    for n in range(1, 4):
        await publish("MSFT", float(n))
    services.scheduler.flush_now()
    msft = [item.price for item in connection.sent if isinstance(item, Update) and item.symbol == "MSFT"]
    aapl = [item.price for item in connection.sent if isinstance(item, Update) and item.symbol == "AAPL"]
    assert msft == [1.0, 2.0, 3.0], msft
    assert len(aapl) <= 1 and all(p == 3.0 for p in aapl), aapl  # throttled: the period has not ended


async def test_a_saved_session_this_connection_may_not_have_starts_fresh() -> None:
    """A throttle or heartbeat out of bounds, an unknown candle interval, or
    more candle streams than MAX_SUBSCRIPTIONS: nothing is restored."""
    services, _ = await stack({"MAX_SUBSCRIPTIONS": "2"})
    for saved in (
        SavedStreams(["AAPL"], {"AAPL": 10}, [], 0),
        SavedStreams(["AAPL"], {}, [], 99_999),
        SavedStreams([], {}, [("AAPL", "7m")], 0),
        SavedStreams([], {}, [("A", "1m"), ("B", "1m"), ("C", "1m")], 0),
    ):
        session = Session(services, FakeConnection())
        assert await session.restore(saved, {}) is None, saved
        assert session.subscriptions == set() and session.candles.keys() == [] and not services.hub.rooms


async def test_a_flood_of_requests_nobody_waits_for_closes_the_connection() -> None:
    """Requests past REQUEST_BURST are refused in order; a connection that
    piles up MAX_WAITING_REQUESTS unanswered ones is closed with rate_limited
    instead of growing the list without bound."""
    services, _ = await stack()
    connection = FakeConnection()
    session = Session(services, connection)
    for n in range(MAX_WAITING_REQUESTS + 50):  # no await: none is answered meanwhile
        session.submit(Request("ping", None, ack=n))
    assert len(session._requests) == MAX_WAITING_REQUESTS
    for _ in range(200):
        if session.closed:
            break
        await asyncio.sleep(0.005)
    assert session.closed and session._requests == []
    assert connection.log[-1] == ("error", "rate_limited"), connection.log[-3:]
