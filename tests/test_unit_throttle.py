"""Throttle groups in the hub: one group and one timer per (symbol, period), latest first (no servers)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import orjson

from stockstream.broker.memory import MemoryBroker
from stockstream.config import Settings
from stockstream.hub import Hub
from stockstream.throttle import ThrottleGroup
from stockstream.updates import CheckedUpdate, Update
from stockstream.wildcard import WildcardStream

PERIOD = 60  # ms: short, the grouping does not depend on the length


def update(price: float, symbol: str = "AAPL", ts: int = 1000) -> Update:
    return Update(symbol, price, ts, None, json.dumps({"symbol": symbol, "price": price, "timestamp": ts}).encode())


class Member:
    """A session as the hub sees it: records what reaches it, and how."""

    def __init__(self) -> None:
        self.direct: list[Update] = []
        self.throttled: list[Update] = []
        self.wild: list[Update] = []

    def deliver(self, u: Update) -> None:
        self.direct.append(u)

    def deliver_throttled(self, u: Update) -> None:
        self.throttled.append(u)

    def deliver_wildcard(self, u: Update) -> None:
        self.wild.append(u)


def make_hub() -> Hub:
    return Hub(MemoryBroker(Settings.from_env({})))


async def wait_until(check: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def test_members_of_one_period_share_one_group_and_one_emitted_object() -> None:
    """1,000 subscribers of a symbol at one period are one room member with one timer,
    and each emission hands every one of them the same update object."""
    hub = make_hub()
    members = [Member() for _ in range(1000)]
    for m in members:
        await hub.join(m, ["AAPL"], PERIOD)
    assert list(hub.groups["AAPL"]) == [PERIOD]
    assert len(hub.rooms["AAPL"]) == 1 and isinstance(next(iter(hub.rooms["AAPL"])), ThrottleGroup)
    assert hub.subscription_count == 1000
    first = update(1.0)
    hub.on_update(first)
    assert all(m.throttled == [first] for m in members)
    hub.on_update(update(2.0))
    hub.on_update(update(3.0))
    await wait_until(lambda: len(members[0].throttled) == 2)
    last = members[0].throttled[1]
    assert last.price == 3.0 and all(m.throttled[1] is last for m in members)


async def test_leading_edge_at_once_trailing_edge_latest_never_older() -> None:
    """After a quiet period an update goes out at once; within the period only the newest
    waits and goes out at its end; nothing older follows something newer."""
    hub = make_hub()
    member = Member()
    await hub.join(member, ["AAPL"], PERIOD)
    group = hub.groups["AAPL"][PERIOD]
    hub.on_update(update(1.0))
    assert [u.price for u in member.throttled] == [1.0]
    for price in (2.0, 3.0, 4.0):
        hub.on_update(update(price))
    assert [u.price for u in member.throttled] == [1.0]
    await wait_until(lambda: len(member.throttled) == 2)
    assert [u.price for u in member.throttled] == [1.0, 4.0]
    # A quiet period ends the timer: the next update goes out at once again.
    await wait_until(lambda: group._timer is None)
    hub.on_update(update(5.0))
    assert [u.price for u in member.throttled] == [1.0, 4.0, 5.0]


async def test_mixed_subscribers_get_their_own_pace() -> None:
    """On one symbol, an unthrottled subscriber gets every update while each period's
    group emits its own latest: two periods make two groups."""
    hub = make_hub()
    plain, slow, fast = Member(), Member(), Member()
    await hub.join(plain, ["AAPL"])
    await hub.join(slow, ["AAPL"], PERIOD * 4)
    await hub.join(fast, ["AAPL"], PERIOD)
    assert sorted(hub.groups["AAPL"]) == [PERIOD, PERIOD * 4]
    for price in range(1, 11):
        hub.on_update(update(float(price)))
        await asyncio.sleep(PERIOD / 1000 / 3)
    await wait_until(lambda: slow.throttled[-1].price == 10.0 and fast.throttled[-1].price == 10.0)
    assert [u.price for u in plain.direct] == [float(p) for p in range(1, 11)]
    for member in (slow, fast):
        prices = [u.price for u in member.throttled]
        assert prices == sorted(set(prices)) and len(prices) < 10
    assert not plain.throttled and not slow.direct and not fast.direct


async def test_the_last_member_leaving_closes_its_group() -> None:
    """When a group's last member leaves, its timer is cancelled and the group goes; the
    room goes with its last member."""
    hub = make_hub()
    a, b = Member(), Member()
    await hub.join(a, ["AAPL"], PERIOD)
    await hub.join(b, ["AAPL"])
    group = hub.groups["AAPL"][PERIOD]
    hub.on_update(update(1.0))
    hub.on_update(update(2.0))
    assert group._timer is not None
    await hub.leave(a, ["AAPL"])
    assert group._timer is None and "AAPL" not in hub.groups and hub.rooms["AAPL"] == {b}
    await hub.leave(b, ["AAPL"])
    assert "AAPL" not in hub.rooms


async def test_retune_neither_loses_nor_repeats() -> None:
    """Moving a subscriber between periods hands it what its old group held for it, or
    a floor covering what the new group holds that it already had."""
    hub = make_hub()
    member, other = Member(), Member()
    await hub.join(member, ["AAPL"], PERIOD * 100)
    hub.on_update(update(1.0))
    hub.on_update(update(2.0))  # held by the slow group for `member`
    held, floor = hub.retune(member, "AAPL", None)
    assert held is not None and held.price == 2.0 and floor is None
    assert member in hub.rooms["AAPL"]
    # Unthrottled -> a group holding an update the member already got directly.
    await hub.join(other, ["AAPL"], PERIOD * 100)
    hub.on_update(update(3.0))  # leading edge for `other`'s fresh group
    hub.on_update(update(4.0))  # held there; `member` got it directly
    held, floor = hub.retune(member, "AAPL", PERIOD * 100)
    assert held is None and floor == hub.position and [u.price for u in member.direct][-1] == 4.0
    # Both groups holding the newest update, which the member has not had: nothing to do.
    await hub.join(Member(), ["AAPL"], PERIOD * 50)
    hub.on_update(update(5.0))  # the PERIOD*50 group emits it at once, the other holds it
    hub.on_update(update(6.0))
    assert hub.retune(member, "AAPL", PERIOD * 50) == (None, None)


async def test_wildcard_groups_emit_one_batch_of_latest_per_symbol() -> None:
    """A `*` group at a period emits every changed symbol's newest update in one
    `stockUpdates` batch, framed once for both transports."""
    hub = make_hub()
    members = [Member(), Member()]
    for m in members:
        await hub.join_wildcard(m, PERIOD)
    hub.on_update(update(1.0, "AAPL"))
    for price, symbol in [(2.0, "AAPL"), (10.0, "MSFT"), (3.0, "AAPL"), (11.0, "MSFT"), (7.0, "IBM")]:
        hub.on_update(update(price, symbol))
    await wait_until(lambda: len(members[0].throttled) == 2)
    first, second = members[0].throttled
    assert members[1].throttled[1] is second
    assert [u["price"] for u in orjson.loads(first.raw)] == [1.0]
    assert {u["symbol"]: u["price"] for u in orjson.loads(second.raw)} == {"AAPL": 3.0, "MSFT": 11.0, "IBM": 7.0}
    assert b'42["stockUpdates",[' in second.sio_frame
    assert orjson.loads(second.ws_frame[4:])["type"] == "stockUpdates"
    await hub.leave_wildcard(members[0])
    await hub.leave_wildcard(members[1])
    assert not hub.wildcard and not hub.wildcard_groups


def test_a_wildcard_start_drops_what_its_snapshots_cover() -> None:
    """Updates held while `*` snapshots were read go out only when after their symbol's read."""
    stream = WildcardStream(None)
    covered, newer, unread = update(1.0, "AAPL"), update(2.0, "AAPL"), update(5.0, "IBM")
    covered.pos, newer.pos, unread.pos = 3, 9, 4
    for u in (covered, unread, newer):
        assert stream.offer(u) is None
    snapshot = update(1.5, "AAPL")
    out = stream.release({"AAPL": snapshot}, {"AAPL": 5})
    assert out == [snapshot, unread, newer]


async def test_a_throttled_joiner_never_gets_what_its_snapshot_covers() -> None:
    """A session joining a group that holds an update gets that update as its snapshot
    (the room's latest) and not a second time when the period ends; then later ones."""
    from stockstream.session import Request, Session
    from tests.test_unit_session import FakeConnection, answered, stack

    services, broker = await stack()
    first_connection, joiner_connection = FakeConnection(), FakeConnection()
    first, joiner = Session(services, first_connection), Session(services, joiner_connection)
    first.submit(Request("subscribe", {"symbol": "AAPL", "throttle": 100}, ack=1))
    await answered(first_connection, 1)
    await broker.publish(CheckedUpdate({"symbol": "AAPL", "price": 1.0, "timestamp": 1}))  # at once
    await broker.publish(CheckedUpdate({"symbol": "AAPL", "price": 2.0, "timestamp": 2}))  # held
    joiner.submit(Request("subscribe", {"symbol": "AAPL", "throttle": 100}, ack=1))
    await answered(joiner_connection, 1)
    await wait_until(lambda: [u.price for u in first_connection.sent] == [1.0, 2.0])
    await broker.publish(CheckedUpdate({"symbol": "AAPL", "price": 3.0, "timestamp": 3}))
    await wait_until(lambda: [u.price for u in joiner_connection.sent][-1:] == [3.0])
    assert [u.price for u in joiner_connection.sent] == [2.0, 3.0]
