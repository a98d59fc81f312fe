"""The hub numbers updates in arrival order and gives joiners a consistent start (no servers)."""

from __future__ import annotations

import json
from typing import Any

from stockstream.broker.memory import MemoryBroker
from stockstream.config import Settings
from stockstream.hub import Hub, Subscriber
from stockstream.updates import Update


def update(price: float, symbol: str = "AAPL", ts: int = 1000) -> Update:
    return Update(symbol, price, ts, None, json.dumps({"symbol": symbol, "price": price, "timestamp": ts}).encode())


class FakeSession:
    def __init__(self) -> None:
        self.received: list[Update] = []

    def deliver(self, u: Update) -> None:
        self.received.append(u)


def make_hub() -> tuple[Hub, MemoryBroker]:
    broker = MemoryBroker(Settings.from_env({}))
    return Hub(broker), broker


async def test_positions_follow_arrival_and_mark_is_the_last_one() -> None:
    """Every update gets the next position across symbols; mark() is the last given."""
    hub, _ = make_hub()
    session: Any = FakeSession()
    await hub.join(session, ["AAPL"])
    for i, symbol in enumerate(["AAPL", "MSFT", "AAPL"]):
        hub.on_update(update(i, symbol))
    assert hub.mark() == 3
    assert [u.pos for u in session.received] == [1, 3]


async def test_a_joiner_gets_the_latest_with_the_position_it_stands_at() -> None:
    """A room's latest update is a second joiner's snapshot, at the position of the join:
    every update delivered after it is after that position."""
    hub, _ = make_hub()
    first: Any = FakeSession()
    await hub.join(first, ["AAPL"])
    hub.on_update(update(1.0))
    hub.on_update(update(2.0))
    second: Any = FakeSession()
    known, position = await hub.join(second, ["AAPL"])
    assert known["AAPL"].price == 2.0 and position == 2
    hub.on_update(update(3.0))
    assert [u.pos > position for u in second.received] == [True]


async def test_a_remembered_snapshot_never_replaces_a_newer_update() -> None:
    """A snapshot read at position P is kept as the room's latest only if nothing arrived after P."""
    hub, _ = make_hub()
    session: Any = FakeSession()
    await hub.join(session, ["AAPL"])
    hub.on_update(update(5.0))  # position 1, arrives after a read at position 0
    hub.remember({"AAPL": update(4.0)}, {"AAPL": 0})
    assert hub.latest["AAPL"].price == 5.0
    hub.remember({"AAPL": update(6.0)}, {"AAPL": 1})
    assert hub.latest["AAPL"].price == 6.0 and hub.latest["AAPL"].pos == 1


async def test_a_resync_snapshot_is_placed_in_the_stream_and_its_echo_dropped() -> None:
    """After an interruption, the re-read snapshot goes to the room with the next position,
    and the third-party PUBLISH announcing that same value afterwards is not sent twice."""
    hub, _ = make_hub()
    session: Any = FakeSession()
    await hub.join(session, ["AAPL"])
    snapshot = update(9.0)
    hub.on_resync({"AAPL": snapshot})
    hub.on_update(update(9.0))  # the echo
    hub.on_update(update(10.0))
    assert [u.price for u in session.received] == [9.0, 10.0]
    assert [u.pos for u in session.received] == [1, 3]


class Recorder:
    """A bare subscriber: only the one method of the hub's protocol, nothing of a Session."""

    def __init__(self) -> None:
        self.received: list[Update] = []

    def deliver(self, u: Update) -> None:
        self.received.append(u)


async def test_the_hub_delivers_to_any_subscriber() -> None:
    """Any object with deliver() receives its rooms' updates and resync snapshots, and nothing after leaving."""
    hub, _ = make_hub()
    subscriber: Subscriber = Recorder()
    other: Subscriber = Recorder()
    await hub.join(subscriber, ["AAPL"])
    await hub.join(other, ["MSFT"])
    hub.on_update(update(1))
    hub.on_update(update(2, "MSFT"))
    hub.on_resync({"AAPL": update(3)})
    await hub.leave(subscriber, ["AAPL"])
    hub.on_update(update(4))
    assert [u.price for u in subscriber.received] == [1, 3]  # type: ignore[attr-defined]  # typed as the protocol on purpose: a Recorder
    assert [u.price for u in other.received] == [2]  # type: ignore[attr-defined]  # typed as the protocol on purpose: a Recorder


def test_the_hub_admits_users_up_to_the_limit() -> None:
    """admit_user refuses a user at its limit until one of its connections is released; 0 means no limit."""
    hub, _ = make_hub()
    assert hub.admit_user("ann", 2) and hub.admit_user("ann", 2)
    assert not hub.admit_user("ann", 2)
    hub.release_user("ann")
    assert hub.admit_user("ann", 2)
    hub.release_user("ann")
    hub.release_user("ann")
    assert "ann" not in hub.users
    assert all(hub.admit_user("bob", 0) for _ in range(5))


async def test_a_resume_is_delivered_in_the_stream_before_later_updates() -> None:
    """After a shard's reader restarts, the updates it replays reach the room in order at the
    next positions (other symbols' replays only advance the position), a third-party
    snapshot closing the replay has its later PUBLISH (the same bytes) dropped once, and a
    resumed snapshot the room already holds is not sent again."""
    hub, _ = make_hub()
    session: Any = FakeSession()
    await hub.join(session, ["AAPL"])
    hub.on_update(update(1.0))
    hub.on_resume({"AAPL": [update(2.0), update(3.0)], "MSFT": [update(9.0, "MSFT")]})
    hub.on_update(update(3.0))  # the third-party PUBLISH of the snapshot read just before it
    hub.on_update(update(4.0))
    assert [u.price for u in session.received] == [1.0, 2.0, 3.0, 4.0]
    assert [u.pos for u in session.received] == [1, 2, 3, 6]
    assert hub.latest["AAPL"].price == 4.0
    hub.on_resume({"AAPL": [update(4.0)]})  # the room's latest again: not repeated
    assert [u.price for u in session.received] == [1.0, 2.0, 3.0, 4.0]
