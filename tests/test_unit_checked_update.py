"""An update is checked once, where it enters; brokers publish the checked form as it is (no servers)."""

from __future__ import annotations

from typing import Any

import pytest

from stockstream import updates
from stockstream.broker.memory import MemoryBroker
from stockstream.broker.redis.broker import RedisBroker
from stockstream.config import Settings
from stockstream.publisher import checked_price, checked_update, make_update, received_update
from stockstream.symbols import SymbolError
from stockstream.updates import CheckedUpdate, InvalidUpdate


class CountingCheck:
    """Stands in for `updates.validate_fields` and counts its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self._check = updates.validate_fields

    def __call__(self, data: Any, channel_symbol: str | None = None) -> tuple[str, float, int, int | None]:
        self.calls += 1
        return self._check(data, channel_symbol)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> CountingCheck:
    check = CountingCheck()
    monkeypatch.setattr(updates, "validate_fields", check)
    return check


async def test_a_published_update_is_checked_once(counted: CountingCheck) -> None:
    """A producer's update costs one field check: the edge's. The memory broker publishes it unchecked,
    with the same bytes and seq as before."""
    broker = MemoryBroker(Settings.from_env({}))
    update = checked_update({"symbol": "aapl", "price": 189.5, "timestamp": 1000, "volume": 3})
    assert counted.calls == 1
    stored = await broker.publish(update)
    stored_again = await broker.publish(update)
    assert counted.calls == 1
    assert stored is not None and stored_again is not None
    assert stored.raw == b'{"symbol":"AAPL","price":189.5,"timestamp":1000,"volume":3,"seq":1}'
    assert (stored.symbol, stored.price, stored.timestamp, stored.seq, stored_again.seq) == ("AAPL", 189.5, 1000, 1, 2)


async def test_the_redis_broker_does_not_check_again(counted: CountingCheck) -> None:
    """RedisBroker.publish hands the checked update's JSON (without seq) to its script and checks nothing."""
    broker = RedisBroker("redis://127.0.0.1:1", Settings.from_env({}))
    calls: list[tuple[list[str], list[Any]]] = []

    async def script(keys: list[str], args: list[Any]) -> int:
        calls.append((keys, args))
        return 7

    broker.store._publish_script = script  # type: ignore[assignment]  # no Redis: the script's arguments are the point
    try:
        update = checked_price("msft", 415.2, 2000, n=1)
        stored = await broker.publish(update)
    finally:
        await broker.close()
    assert counted.calls == 1
    assert stored is not None and stored.seq == 7
    assert stored.raw == b'{"symbol":"MSFT","price":415.2,"timestamp":2000,"n":1,"seq":7}'
    ((keys, args),) = calls
    assert keys[0] == "stock:MSFT" and args[:2] == [b'{"symbol":"MSFT","price":415.2,"timestamp":2000,"n":1}', 2000]


def test_the_checked_type_is_only_built_by_checking() -> None:
    """CheckedUpdate's constructor is the check: unchecked input is refused with validate_fields' own errors,
    and the checked fields cannot be changed afterwards (a caller's dict changing later changes nothing)."""
    with pytest.raises(InvalidUpdate, match="price must be a finite number"):
        CheckedUpdate({"symbol": "AAPL", "price": "1.5", "timestamp": 1})
    with pytest.raises(InvalidUpdate, match="an update is a JSON object"):
        CheckedUpdate([1, 2])
    data = {"symbol": "AAPL", "price": 1.0, "timestamp": 1}
    update = CheckedUpdate(data)
    data["price"] = float("nan")
    assert update.encode() == b'{"symbol":"AAPL","price":1.0,"timestamp":1}'
    with pytest.raises(TypeError):
        update.fields["price"] = "x"  # type: ignore[index]  # the refused write is the test
    with pytest.raises(AttributeError):
        update.price = 2.0  # type: ignore[misc]  # the refused write is the test


@pytest.mark.parametrize(
    "data, error, message",
    [
        ({"symbol": "not a symbol!", "price": 1, "timestamp": 1}, SymbolError, "not a valid symbol"),
        ({"symbol": 5, "price": 1, "timestamp": 1}, SymbolError, "a symbol is a string"),
        ({"symbol": "AAPL", "price": True, "timestamp": 1}, InvalidUpdate, "price must be a finite number"),
        ({"symbol": "AAPL", "price": 1, "timestamp": -1}, InvalidUpdate, "timestamp must be a non-negative integer"),
        ("AAPL", InvalidUpdate, "an update is a JSON object"),
    ],
)
def test_the_edge_refuses_what_it_always_refused(data: Any, error: type[Exception], message: str) -> None:
    """checked_update (API, CLI, HTTP, simulator) refuses invalid updates with the same error types and texts."""
    with pytest.raises(error, match=message):
        checked_update(data)


def test_each_edge_keeps_its_rule_for_a_missing_timestamp() -> None:
    """Our producers' updates get the current time when they carry none; a Kafka record without one is refused.
    Both uppercase the symbol and keep the fields' order."""
    filled = checked_update({"price": 2, "symbol": "ibm", "volume": 1})
    assert list(filled.fields) == ["symbol", "price", "timestamp", "volume"] and filled.timestamp > 0
    with pytest.raises(InvalidUpdate, match="timestamp"):
        received_update({"symbol": "IBM", "price": 2})
    received = received_update({"price": 2, "symbol": "ibm", "timestamp": 5})
    assert received.encode() == b'{"price":2,"symbol":"IBM","timestamp":5}'
    assert make_update("ibm", 2.5, 5, n=1) == {"symbol": "IBM", "price": 2.5, "timestamp": 5, "n": 1}
