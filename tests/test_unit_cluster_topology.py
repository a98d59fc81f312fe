"""Which shard readers a slot map change restarts, and which snapshot a resume may send (no Redis)."""

from __future__ import annotations

import json

from stockstream.broker.redis.shards import UNKNOWN, _newer, plan_readers, slot_of
from stockstream.updates import Update

A, B, C, A2 = "10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000", "10.0.0.4:7000"


def channel_on(owners: dict[int, str], master: str, skip: int = 0) -> str:
    """A symbol channel whose slot `master` owns (the `skip`-th one found)."""
    for index in range(10000):
        channel = f"stock:{{S{index}}}"
        if owners.get(slot_of(channel)) == master:
            if skip == 0:
                return channel
            skip -= 1
    raise AssertionError(f"no channel on {master}")


def three_masters() -> dict[int, str]:
    return {slot: (A, B, C)[slot * 3 // 16384] for slot in range(16384)}


def marker(channel: str) -> str:
    return channel + ":marker:abc"


def test_a_failover_restarts_only_the_failed_masters_reader() -> None:
    """The replica promoted for A gets a new reader, A's is stopped; B's and C's readers,
    whose masters kept their address and slots, are left alone."""
    owners = three_masters()
    wanted = [channel_on(owners, m) for m in (A, B, C)]
    placed = {c: owners[slot_of(c)] for w in wanted for c in (w, marker(w))}
    promoted = {slot: (A2 if name == A else name) for slot, name in owners.items()}
    plan = plan_readers(promoted, {A: False, B: True, C: True}, placed, wanted)
    assert plan.start == {A2} and plan.stop == {A} and plan.restart == set()
    assert plan.release == {wanted[0], marker(wanted[0])}


def test_a_map_that_did_not_change_touches_nothing() -> None:
    """The same slot owners (a replica added or failed over, a node's epoch bumped): no reader
    is started, stopped or restarted, even one that is down (it reconnects by itself)."""
    owners = three_masters()
    wanted = [channel_on(owners, m) for m in (A, B, C)]
    placed = {c: owners[slot_of(c)] for c in wanted[1:]}
    plan = plan_readers(owners, {A: False, B: True, C: True}, placed, wanted)
    assert plan == (set(), set(), set(), set())


def test_a_migrated_slot_restarts_only_its_new_owners_reader() -> None:
    """A wanted symbol's slot moved from A to B: B's reader restarts to take it over, A keeps its
    reader (Redis dropped the channel), C is untouched; moving a slot nobody wants restarts nothing."""
    owners = three_masters()
    moving, staying = channel_on(owners, A), channel_on(owners, A, skip=1)
    wanted = [moving, staying, channel_on(owners, B), channel_on(owners, C)]
    placed = {c: owners[slot_of(c)] for c in wanted}
    migrated = dict(owners)
    migrated[slot_of(moving)] = B
    plan = plan_readers(migrated, {A: True, B: True, C: True}, placed, wanted)
    assert plan.restart == {B} and not plan.start and not plan.stop
    assert plan.release == {moving}
    unwanted = dict(owners)
    unwanted[slot_of(channel_on(owners, C, skip=5))] = B
    assert plan_readers(unwanted, {A: True, B: True, C: True}, placed, wanted) == (set(), set(), set(), set())


def update(seq: int | None, ts: int, price: float = 1.0) -> Update:
    body = {"symbol": "AAPL", "price": price, "timestamp": ts, **({"seq": seq} if seq is not None else {})}
    return Update("AAPL", price, ts, seq, json.dumps(body).encode())


def test_a_resume_sends_a_snapshot_only_when_it_is_news() -> None:
    """The snapshot a resume falls back to is sent unless clients hold it or something newer:
    by seq for the project's publisher (a promoted replica may lack the last writes), by
    timestamp for third-party updates; always when the point is unknown or had no price."""
    assert _newer(update(5, 100), UNKNOWN) and _newer(update(5, 100), None)
    assert not _newer(update(5, 100), update(5, 100))
    assert _newer(update(6, 100), update(5, 100))
    assert not _newer(update(4, 200), update(5, 100))
    assert not _newer(update(None, 100), update(None, 100))
    assert _newer(update(None, 100, price=2.0), update(None, 100))
    assert not _newer(update(None, 99), update(None, 100))
    assert _newer(update(None, 101), update(5, 100))
