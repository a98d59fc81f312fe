"""Price updates: validated once when they enter, then carried as raw bytes.

Clients receive an update exactly as it was published, so the raw JSON is kept
and the frames that carry it are built once per update, never per recipient.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping, NamedTuple, final

import orjson

from .symbols import SYMBOL_PATTERN

MAX_UPDATE_BYTES = 65536
# The symbol a `stockUpdates` batch travels under (never a valid symbol).
BATCH_SYMBOL = "*"
# The largest integer JavaScript clients read exactly.
MAX_TIMESTAMP = 2**53 - 1


class InvalidUpdate(ValueError):
    """A message that is not a valid price update."""


def ws_text_frame(payload: bytes) -> bytes:
    """One unmasked, uncompressed WebSocket text frame (server to client)."""
    return ws_frame(payload, 0x81)


def ws_frame(payload: bytes, first_byte: int) -> bytes:
    """One unmasked, uncompressed, final WebSocket frame; `first_byte` is FIN | opcode."""
    n = len(payload)
    if n < 126:
        header = bytes((first_byte, n))
    elif n < 65536:
        header = bytes((first_byte, 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((first_byte, 127)) + n.to_bytes(8, "big")
    return header + payload


class ResumePoint(NamedTuple):
    """A place in one symbol's stream to resume after: update `seq`; without
    a seq, the update published at `ms` whose bytes have `digest` (see
    Update.digest), or with no digest every update up to `ms`."""

    seq: int | None
    ms: int | None
    digest: str | None = None


# Final: the hot paths tell an update from a text by `type(item) is Update`, which
# type checkers then also read as "not an update" in the other branch.
@final
class Update:
    """One price update: its parsed key fields and the bytes as published."""

    __slots__ = (
        "symbol",
        "price",
        "timestamp",
        "seq",
        "raw",
        "pos",
        "parts",
        "_sio_payload",
        "_sio_frame",
        "_ws_frame",
        "_sio_recoverable",
        "_digest",
    )

    def __init__(self, symbol: str, price: float, timestamp: int, seq: int | None, raw: bytes) -> None:
        self.symbol = symbol
        self.price = price
        self.timestamp = timestamp
        self.seq = seq
        self.raw = raw
        # Where this update stands in the order this instance received its
        # updates (all symbols, from 1; 0 = not received live): see Hub.position.
        self.pos = 0
        # A batch's updates (see `batch`); None for one symbol's update.
        self.parts: list[Update] | None = None
        self._sio_payload: str | None = None
        self._sio_frame: bytes | None = None
        self._ws_frame: bytes | None = None
        self._sio_recoverable: tuple[str, bytes] | None = None
        self._digest: str | None = None

    @property
    def sio_payload(self) -> str:
        """The Socket.IO packet text: an EVENT `stockUpdate` carrying the update."""
        if self._sio_payload is None:
            self._sio_payload = '2["stockUpdate",' + self.raw.decode() + "]"
        return self._sio_payload

    @property
    def sio_frame(self) -> bytes:
        """The WebSocket frame of the Engine.IO message carrying `sio_payload`."""
        if self._sio_frame is None:
            self._sio_frame = ws_text_frame(b'42["stockUpdate",' + self.raw + b"]")
        return self._sio_frame

    @property
    def digest(self) -> str | None:
        """What identifies an update published without a seq: a hash of its
        bytes (None for an update with a seq, which its seq identifies). A
        timestamp does not: many updates share one millisecond."""
        if self.seq is not None:
            return None
        if self._digest is None:
            self._digest = update_digest(self.raw)
        return self._digest

    @property
    def offset(self) -> str:
        """This update's place in its symbol's stream, as Socket.IO connection
        state recovery hands it back: `SYMBOL:seq`, or `SYMBOL@timestamp#digest`
        for updates published without a seq (see stockstream.recovery)."""
        if self.seq is not None:
            return f"{self.symbol}:{self.seq}"
        return f"{self.symbol}@{self.timestamp}#{self.digest}"

    def sio_recoverable(self) -> tuple[str, bytes]:
        """`sio_payload` and `sio_frame` with the offset as the event's last argument."""
        if self._sio_recoverable is None:
            tail = ',"' + self.offset + '"]'
            payload = '2["stockUpdate",' + self.raw.decode() + tail
            self._sio_recoverable = (payload, ws_text_frame(b"4" + payload.encode()))
        return self._sio_recoverable

    @property
    def ws_frame(self) -> bytes:
        """The WebSocket frame of the bare update, for `/live-price`."""
        if self._ws_frame is None:
            self._ws_frame = ws_text_frame(self.raw)
        return self._ws_frame

    def to_dict(self) -> dict[str, Any]:
        return orjson.loads(self.raw)

    @classmethod
    def batch(cls, updates: list[Update]) -> Update:
        """Several symbols' updates as one `stockUpdates` message (a throttled
        market overview), its frames built once for all recipients. It travels
        as an Update of symbol `*`, so queues and transports carry it like any
        other; it carries no recovery offset (it is not one symbol's stream)."""
        raw = b"[" + b",".join([u.raw for u in updates]) + b"]"
        item = cls(BATCH_SYMBOL, 0.0, max(u.timestamp for u in updates), None, raw)
        item.pos = max(u.pos for u in updates)
        item.parts = updates
        payload = '2["stockUpdates",' + raw.decode() + "]"
        item._sio_payload = payload
        item._sio_frame = ws_text_frame(b"4" + payload.encode())
        item._sio_recoverable = (payload, item._sio_frame)
        item._ws_frame = ws_text_frame(b'{"type":"stockUpdates","updates":' + raw + b"}")
        return item

    def __repr__(self) -> str:
        return f"Update({self.symbol!r}, price={self.price!r}, ts={self.timestamp}, seq={self.seq})"


def update_digest(raw: bytes) -> str:
    """The digest of an update's bytes: 64 bits, so that two different updates
    of a symbol near the same time never share one in practice."""
    return hashlib.blake2b(raw, digest_size=8).hexdigest()


def validate_fields(data: Any, channel_symbol: str | None = None) -> tuple[str, float, int, int | None]:
    """Check an update object; return (symbol, price, timestamp, seq)."""
    if not isinstance(data, dict):
        raise InvalidUpdate("an update is a JSON object")
    symbol = data.get("symbol")
    if not isinstance(symbol, str):
        raise InvalidUpdate("symbol must be a string")
    symbol = symbol.upper()
    if not SYMBOL_PATTERN.fullmatch(symbol):
        raise InvalidUpdate("symbol is not valid")
    if channel_symbol is not None and symbol != channel_symbol:
        raise InvalidUpdate("symbol differs from the channel's")
    price = data.get("price")
    if isinstance(price, bool) or not isinstance(price, (int, float)) or not math.isfinite(price):
        raise InvalidUpdate("price must be a finite number")
    timestamp = data.get("timestamp")
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or not 0 <= timestamp <= MAX_TIMESTAMP:
        raise InvalidUpdate("timestamp must be a non-negative integer (ms)")
    seq = data.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        seq = None
    return symbol, price, timestamp, seq


@dataclass(frozen=True, slots=True, init=False)
class CheckedUpdate:
    """An update object that passed `validate_fields` where it entered: a
    broker publishes it as it is, without checking it again.

    Built only by checking (the constructor is the check); `fields` is the
    object to encode, keys in the order they were given, read-only so it
    cannot change after the check.
    """

    symbol: str
    price: float
    timestamp: int
    fields: Mapping[str, Any]

    def __init__(self, data: Any) -> None:
        symbol, price, timestamp, _ = validate_fields(data)
        # A copy: a later change to the caller's dict must not be published unchecked.
        fields = dict(data)
        fields["symbol"] = symbol
        object.__setattr__(self, "symbol", symbol)
        object.__setattr__(self, "price", price)
        object.__setattr__(self, "timestamp", timestamp)
        object.__setattr__(self, "fields", MappingProxyType(fields))

    def encode(self, seq: int | None = None) -> bytes:
        """The JSON as published: see `encode_update`."""
        return encode_update(self.fields, seq)

    def to_dict(self) -> dict[str, Any]:
        """The checked update object (a copy), e.g. to put on a Kafka topic."""
        return dict(self.fields)


def load_message(raw: bytes) -> Any:
    """A message's JSON value, within the size limit."""
    if len(raw) > MAX_UPDATE_BYTES:
        raise InvalidUpdate("update too large")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidUpdate("not valid JSON") from None


def parse_update(raw: bytes | str, channel_symbol: str | None = None) -> Update:
    """Validate a published message; `channel_symbol` is the channel's symbol."""
    if isinstance(raw, str):
        raw = raw.encode()
    symbol, price, timestamp, seq = validate_fields(load_message(raw), channel_symbol)
    return Update(symbol, price, timestamp, seq, raw)


def encode_update(data: Mapping[str, Any], seq: int | None = None) -> bytes:
    """The JSON of an update as this project publishes it: `seq`, when given, last."""
    body = {k: v for k, v in data.items() if k != "seq"}
    if seq is not None:
        body["seq"] = seq
    return orjson.dumps(body)
