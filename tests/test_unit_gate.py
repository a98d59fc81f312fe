"""Gates order the start of a symbol's stream by stream position (no servers, milliseconds)."""

from __future__ import annotations

import json

from stockstream.gate import Gate, Gates
from stockstream.updates import Update


def update(price: float, pos: int, *, ts: int = 1000, seq: int | None = None, symbol: str = "AAPL") -> Update:
    body = {"symbol": symbol, "price": price, "timestamp": ts}
    if seq is not None:
        body["seq"] = seq
    u = Update(symbol, price, ts, seq, json.dumps(body).encode())
    u.pos = pos
    return u


def prices(updates: list[Update]) -> list[float]:
    return [u.price for u in updates]


def test_held_updates_at_or_before_the_read_are_dropped_later_ones_follow():
    """Updates received up to the read's position are covered by it; the later ones follow it, in order."""
    gate = Gate()
    for pos, price in enumerate([1.0, 2.0, 3.0, 4.0], start=1):
        assert gate.offer(update(price, pos)) is False
    snapshot = update(2.0, 0)
    assert prices(gate.release([snapshot], position=2)) == [2.0, 3.0, 4.0]
    assert gate.open and gate.offer(update(5.0, 5))


def test_a_burst_sharing_one_timestamp_never_goes_backwards():
    """Ten updates with one timestamp and no seq: the position decides, so nothing
    older than the snapshot follows it (a timestamp comparison cannot tell them apart)."""
    gate = Gate()
    burst = [update(100.0 + i, i + 1, ts=5000) for i in range(10)]
    for u in burst:
        gate.offer(u)
    out = gate.release([update(106.0, 0, ts=5000)], position=7)
    assert prices(out) == [106.0, 107.0, 108.0, 109.0]


def test_the_echo_of_a_third_party_snapshot_is_dropped_once():
    """SET read before its PUBLISH arrives: the byte-identical announcement after the
    read is dropped, only that one, and only as the first update after the read."""
    snapshot = update(7.0, 0)
    gate = Gate()
    gate.offer(update(7.0, 3))  # the PUBLISH of what was read, after the marker
    gate.offer(update(8.0, 4))
    assert prices(gate.release([snapshot], 2, echo=snapshot.raw)) == [7.0, 8.0]
    gate = Gate()
    assert gate.release([snapshot], 2, echo=snapshot.raw) == [snapshot]
    assert not gate.open
    assert gate.offer(update(7.0, 9)) is False  # arrives after release: still the echo
    assert gate.open and gate.offer(update(7.0, 10)) is True  # a real repeat goes out


def test_the_echo_check_ends_at_the_first_different_update():
    """An update that differs from the snapshot ends the echo check: a later identical one goes out."""
    snapshot = update(7.0, 0)
    gate = Gate()
    gate.release([snapshot], 2, echo=snapshot.raw)
    assert gate.offer(update(8.0, 3)) is True
    assert gate.offer(update(7.0, 4)) is True


def test_gates_echo_only_for_updates_without_seq():
    """stockstream's publisher writes and announces atomically (with seq): no echo is expected."""
    gates = Gates()
    gates.hold("AAPL")
    sequenced = update(7.0, 0, seq=3)
    assert gates.release("AAPL", [sequenced], 5) == [sequenced]
    assert "AAPL" not in gates
    gates.hold("AAPL")
    unsequenced = update(7.0, 0)
    gates.release("AAPL", [unsequenced], 5)
    assert "AAPL" in gates and not gates.offer(update(7.0, 6)) and "AAPL" not in gates


def test_gates_pass_other_symbols_and_release_nothing_for_a_dropped_gate():
    """Only the gated symbol waits; a gate dropped meanwhile (unsubscribed) sends nothing."""
    gates = Gates()
    gates.hold("AAPL")
    assert gates.offer(update(1.0, 1, symbol="MSFT")) is True
    assert gates.offer(update(1.0, 2)) is False
    gates.drop("AAPL")
    assert gates.release("AAPL", [update(1.0, 0)], 0) == []
    assert not gates
