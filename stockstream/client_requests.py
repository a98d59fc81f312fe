"""Parsing of client requests into checked values, the same for every transport."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from .candles import LIVE_INTERVALS_MS
from .errors import ClientError, ErrorCode, invalid_payload
from .config import check_heartbeat
from .symbols import SymbolError, normalize_symbol
from .throttle import MAX_THROTTLE_MS, MIN_THROTTLE_MS

MAX_HISTORY_LIMIT = 5000
DEFAULT_HISTORY_LIMIT = 1000


@dataclass(frozen=True)
class SymbolsRequest:
    """A subscribe or unsubscribe: symbols as sent, an optional resume point,
    and (subscribe) the heartbeat period asked for (None leaves it as it is)
    and an optional throttle period (ms)."""

    symbols: list[str]
    since_ms: int | None = None
    since_seq: int | None = None
    heartbeat: int | None = None
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


def parse_symbols_request(payload: Any, max_symbols: int, *, subscribe: bool = False) -> SymbolsRequest:
    """`"AAPL"`, `["AAPL", ...]`, `{"symbol": ...}` or `{"symbols": [...]}` (+ since).

    A subscribe's object may carry `heartbeat` (seconds, 0 for off), and then
    needs no symbols: `{"heartbeat": 5}` only sets the heartbeat.
    """
    since_ms = since_seq = heartbeat = throttle_ms = None
    if isinstance(payload, dict):
        if subscribe and payload.get("heartbeat") is not None:
            try:
                heartbeat = check_heartbeat(payload["heartbeat"])
            except ValueError as exc:
                raise invalid_payload(str(exc)) from None
        if "symbols" in payload:
            raw = payload["symbols"]
            if not isinstance(raw, list):
                raise invalid_payload("symbols must be a list of strings")
        elif "symbol" in payload:
            raw = [payload["symbol"]]
        elif heartbeat is not None:
            return SymbolsRequest([], heartbeat=heartbeat)
        else:
            raise invalid_payload("expected a symbol or a list of symbols")
        if payload.get("since") is not None:
            since_ms = _non_negative_int(payload["since"], "since")
        if payload.get("sinceSeq") is not None:
            since_seq = _non_negative_int(payload["sinceSeq"], "sinceSeq")
        if payload.get("throttle") is not None:
            throttle_ms = payload["throttle"]
            if (
                isinstance(throttle_ms, bool)
                or not isinstance(throttle_ms, int)
                or not MIN_THROTTLE_MS <= throttle_ms <= MAX_THROTTLE_MS
            ):
                raise invalid_payload(
                    f"throttle must be an integer number of milliseconds from {MIN_THROTTLE_MS} to {MAX_THROTTLE_MS}"
                )
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
        raise ClientError(ErrorCode.TOO_MANY_SUBSCRIPTIONS, f"at most {max_symbols} symbols per connection")
    return SymbolsRequest(raw, since_ms, since_seq, heartbeat, throttle_ms)


@dataclass(frozen=True)
class CandlesRequest:
    """A subscribeCandles or unsubscribeCandles: symbols as sent and the interval named."""

    symbols: list[str]
    interval: str


def parse_candles_request(payload: Any, max_symbols: int) -> CandlesRequest:
    """`{"symbol": ..., "interval": ...}` or `{"symbols": [...], "interval": ...}`.
    The interval is checked by the caller: an unknown one fails the symbols
    (`invalid_interval`), not the request."""
    if not isinstance(payload, dict):
        raise invalid_payload('expected an object with "symbol" or "symbols" and "interval"')
    interval = payload.get("interval")
    if not isinstance(interval, str):
        raise invalid_payload('"interval" must be a string such as "1m"')
    return CandlesRequest(parse_symbols_request(payload, max_symbols).symbols, interval[:16])


def split_candle_symbols(request: CandlesRequest) -> tuple[list[str], list[dict[str, str]]]:
    """The valid symbols of a candles request, and its `failed` entries: an
    interval with no live candles fails every symbol (`invalid_interval`)."""
    valid, invalid = split_symbols(request.symbols)
    failed = [{"symbol": s, "code": ErrorCode.INVALID_SYMBOL.value} for s in invalid]
    if request.interval not in LIVE_INTERVALS_MS:
        failed += [{"symbol": s, "code": ErrorCode.INVALID_INTERVAL.value} for s in valid]
        valid = []
    return valid, failed


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
