"""Parsing of client requests into checked values, the same for every transport."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from .errors import ClientError, ErrorCode, invalid_payload
from .symbols import SymbolError, normalize_symbol
from .throttle import MAX_THROTTLE_MS, MIN_THROTTLE_MS

MAX_HISTORY_LIMIT = 5000
DEFAULT_HISTORY_LIMIT = 1000


@dataclass(frozen=True)
class SymbolsRequest:
    """A subscribe or unsubscribe: symbols as sent, an optional resume point,
    and an optional throttle period (ms)."""

    symbols: list[str]
    since_ms: int | None = None
    since_seq: int | None = None
    throttle_ms: int | None = None


@dataclass(frozen=True)
class HistoryQuery:
    symbol: str
    start_ms: int | None
    end_ms: int | None
    limit: int


def encodable(value: Any) -> bool:
    """Whether `value` can be written back as JSON: JSON decoders accept lone
    surrogates and integers beyond 64 bits, which orjson refuses to write."""
    try:
        orjson.dumps(value)
    except orjson.JSONEncodeError:
        return False
    return True


def _non_negative_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise invalid_payload(f"{name} must be a non-negative integer")
    return value


def parse_symbols_request(payload: Any, max_symbols: int) -> SymbolsRequest:
    """`"AAPL"`, `["AAPL", ...]`, `{"symbol": ...}` or `{"symbols": [...]}` (+ since)."""
    since_ms = since_seq = throttle_ms = None
    if isinstance(payload, dict):
        if "symbols" in payload:
            raw = payload["symbols"]
            if not isinstance(raw, list):
                raise invalid_payload("symbols must be a list of strings")
        elif "symbol" in payload:
            raw = [payload["symbol"]]
        else:
            raise invalid_payload("expected a symbol or a list of symbols")
        if payload.get("since") is not None:
            since_ms = _non_negative_int(payload["since"], "since")
        if payload.get("sinceSeq") is not None:
            since_seq = _non_negative_int(payload["sinceSeq"], "sinceSeq")
        if payload.get("throttle") is not None:
            throttle_ms = payload["throttle"]
            if isinstance(throttle_ms, bool) or not isinstance(throttle_ms, int) \
                    or not MIN_THROTTLE_MS <= throttle_ms <= MAX_THROTTLE_MS:
                raise invalid_payload(f"throttle must be an integer number of milliseconds"
                                      f" from {MIN_THROTTLE_MS} to {MAX_THROTTLE_MS}")
    elif isinstance(payload, list):
        raw = payload
    elif isinstance(payload, str):
        raw = [payload]
    else:
        raise invalid_payload("expected a symbol, a list of symbols, or an object with symbol/symbols")
    if not raw:
        raise invalid_payload("no symbols given")
    if any(not isinstance(s, str) for s in raw):
        raise invalid_payload("every symbol must be a string")
    if len(raw) > max_symbols:
        raise ClientError(ErrorCode.TOO_MANY_SUBSCRIPTIONS,
                          f"at most {max_symbols} symbols per connection")
    return SymbolsRequest(raw, since_ms, since_seq, throttle_ms)


def split_symbols(raw: list[str]) -> tuple[list[str], list[str]]:
    """Valid symbols (normalized, deduplicated, in order) and the invalid inputs."""
    valid: dict[str, None] = {}
    invalid = []
    for text in raw:
        try:
            valid[normalize_symbol(text)] = None
        except SymbolError:
            invalid.append(text[:64])
    return list(valid), invalid


def parse_history_query(payload: Any) -> HistoryQuery:
    if not isinstance(payload, dict):
        raise invalid_payload("expected an object with symbol and optional from, to, limit")
    try:
        symbol = normalize_symbol(payload.get("symbol"))
    except SymbolError as exc:
        raise ClientError(ErrorCode.INVALID_SYMBOL, str(exc)) from None
    return history_query(symbol, payload.get("from"), payload.get("to"), payload.get("limit"))


def history_query(symbol: str, start: Any, end: Any, limit: Any) -> HistoryQuery:
    start_ms = None if start is None else _non_negative_int(start, "from")
    end_ms = None if end is None else _non_negative_int(end, "to")
    if start_ms is not None and end_ms is not None and start_ms > end_ms:
        raise invalid_payload("from must not be after to")
    if limit is None:
        count = DEFAULT_HISTORY_LIMIT
    else:
        count = _non_negative_int(limit, "limit")
        if not 1 <= count <= MAX_HISTORY_LIMIT:
            raise invalid_payload(f"limit must be from 1 to {MAX_HISTORY_LIMIT}")
    return HistoryQuery(symbol, start_ms, end_ms, count)


def parse_token(payload: Any) -> Any:
    """`"<jwt>"` or `{"token": "<jwt>"}`; the verifier checks the value itself."""
    if isinstance(payload, dict):
        return payload.get("token")
    return payload
