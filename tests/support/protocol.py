"""Assertions on the shapes of what the server sends (acks, replies, errors, updates)."""

from __future__ import annotations

import math
import re
from typing import Any, Iterable

SYMBOL_RE = re.compile(r"^[A-Z0-9^][A-Z0-9.\-_/:=^]{0,31}$")


def failed_entries(symbols: Iterable[str], code: str = "invalid_symbol") -> list[dict[str, str]]:
    return [{"symbol": s, "code": code} for s in symbols]


def _failed_pairs(failed: Any) -> list[tuple[Any, Any]]:
    assert isinstance(failed, list), f"`failed` is not a list: {failed!r}"
    for entry in failed:
        assert isinstance(entry, dict) and "symbol" in entry and "code" in entry, (
            f"`failed` entry lacks symbol/code: {entry!r}"
        )
    return [(e["symbol"], e["code"]) for e in failed]


def assert_subscribe_ack(
    ack: Any, symbols: list[str], added: list[str], failed: list[dict[str, str]] | None = None, *, exact: bool = True
) -> None:
    """{"ok": true, "symbols": sorted whole set, "added": [...], "failed": [...]}."""
    assert isinstance(ack, dict), f"subscribe ack is not an object: {ack!r}"
    assert ack.get("ok") is True, f"subscribe ack not ok: {ack!r}"
    assert ack.get("symbols") == sorted(symbols), (
        f"ack symbols {ack.get('symbols')!r} != whole sorted set {sorted(symbols)!r}"
    )
    assert ack.get("added") == added, f"ack added {ack.get('added')!r} != {added!r} (request order)"
    assert _failed_pairs(ack.get("failed")) == _failed_pairs(failed or []), (
        f"ack failed {ack.get('failed')!r} != {failed or []!r}"
    )
    if exact:
        assert set(ack) <= {"ok", "symbols", "added", "failed", "type", "id"}, (
            f"unexpected keys in subscribe ack: {sorted(ack)}"
        )


def assert_unsubscribe_ack(
    ack: Any, symbols: list[str], removed: list[str], failed: list[dict[str, str]] | None = None
) -> None:
    """{"ok": true, "symbols": sorted set left, "removed": [...]} (+ "failed" for bad symbols)."""
    assert isinstance(ack, dict), f"unsubscribe ack is not an object: {ack!r}"
    assert ack.get("ok") is True, f"unsubscribe ack not ok: {ack!r}"
    assert ack.get("symbols") == sorted(symbols), (
        f"ack symbols {ack.get('symbols')!r} != sorted set left {sorted(symbols)!r}"
    )
    assert ack.get("removed") == removed, f"ack removed {ack.get('removed')!r} != {removed!r}"
    assert _failed_pairs(ack.get("failed", [])) == _failed_pairs(failed or []), (
        f"ack failed {ack.get('failed')!r} != {failed or []!r}"
    )


def assert_error_object(error: Any, code: str) -> None:
    assert isinstance(error, dict), f"error is not an object: {error!r}"
    assert error.get("code") == code, f"error code {error.get('code')!r} != {code!r}: {error!r}"
    assert isinstance(error.get("message"), str) and error["message"].strip(), (
        f"error without a human message: {error!r}"
    )


def assert_error_ack(ack: Any, code: str) -> None:
    """{"ok": false, "error": {"code": code, "message": "..."}}."""
    assert isinstance(ack, dict), f"ack is not an object: {ack!r}"
    assert ack.get("ok") is False, f"expected ok:false with {code}, got {ack!r}"
    assert_error_object(ack.get("error"), code)


def is_valid_update(update: Any, channel_symbol: str | None = None) -> bool:
    """A valid update: symbol string, finite non-bool price, non-negative int timestamp."""
    if not isinstance(update, dict):
        return False
    symbol, price, ts = update.get("symbol"), update.get("price"), update.get("timestamp")
    if not isinstance(symbol, str) or not SYMBOL_RE.match(symbol.upper()):
        return False
    if isinstance(price, bool) or not isinstance(price, (int, float)) or not math.isfinite(price):
        return False
    if isinstance(ts, bool) or not isinstance(ts, int) or ts < 0:
        return False
    return channel_symbol is None or symbol.upper() == channel_symbol
