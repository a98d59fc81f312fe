"""One Session per client connection, whichever transport carries it.

The session holds the subscription set and the identity, runs the client's
requests (`Session.actions` names them) strictly in the order they were sent,
and owns the connection's Outbox: its replies, errors and updates leave in one
order. A transport decodes frames into Requests and, when its session asks,
encodes replies in its own framing (the Connection protocol); it never queues
anything itself. The subscribe path, from request to snapshot to live updates,
is in this file, and every stream starts on it (`Session.start_streams`): a
subscribe, a resume from `since`/`sinceSeq`, a throttled or `*` subscribe and
a recovered Socket.IO session (`Session.restore`) alike.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Protocol

import orjson

from .auth import Identity, TokenVerifier
from .broker import BackendUnavailable, Broker, Replay
from .candle_streams import CandleFollows, CandleStreams
from .candles import LIVE_INTERVALS_MS
from .config import MAX_HEARTBEAT_SECONDS, MIN_HEARTBEAT_SECONDS, Settings
from .errors import INTERNAL_ERROR, ClientError, ErrorCode, invalid_payload
from .gate import Gates
from .heartbeat import HEARTBEAT_EVENT, Heartbeats
from .hub import Hub
from .outbox import FlushScheduler, Outbox, Sink
from .ratelimit import TokenBucket
from .recovery import RecoveryState, SavedStreams
from .client_requests import (
    encodable,
    parse_candles_request,
    parse_history_query,
    parse_symbols_request,
    parse_token,
    split_candle_symbols,
    split_symbols,
)
from .shared_events import SharedEvent
from .throttle import MAX_THROTTLE_MS, MIN_THROTTLE_MS
from .updates import BATCH_SYMBOL, ResumePoint, Update
from .wildcard import WildcardStream

log = logging.getLogger("stockstream.session")

# How long a subscribe may wait for the backend before answering `unavailable`.
BACKEND_TIMEOUT = 5.0
BACKEND_DOWN = ClientError(ErrorCode.UNAVAILABLE, "the price backend is unavailable; retry shortly")
# Requests past REQUEST_BURST are refused, but each still waits for its
# turn to be answered in order. A connection holding this many unanswered
# ones (while one waits on the backend) sends without reading its answers:
# it is closed, so a flood cannot grow the list without bound.
MAX_WAITING_REQUESTS = 1000
# The subscription to every symbol (it counts as one subscription).
WILDCARD = "*"
# Symbols per snapshot read when a `*` subscription starts.
WILDCARD_READ_CHUNK = 500


def _split_with_wildcard(raw: list[str]) -> tuple[list[str], list[str], int | None]:
    """split_symbols without `*`, and the place `*` takes among the valid
    symbols in request order (None: not requested)."""
    if WILDCARD not in raw:
        return *split_symbols(raw), None
    valid, invalid = split_symbols([s for s in raw if s != WILDCARD])
    return valid, invalid, len(split_symbols(raw[: raw.index(WILDCARD)])[0])


class ResumeUnreachable(Exception):
    """History no longer reaches back to a stream's resume point."""


@dataclass
class StreamStarts:
    """Streams started with their gates closed (Session.start_streams): what
    each sends first and the stream position it was read at (see Gate);
    `replayed`: whether history reached every resume point (None: none was
    given); `wildcard`: the snapshots a starting `*` sends and their positions."""

    first: dict[str, list[Update]]
    positions: dict[str, int]
    replayed: bool | None
    wildcard: tuple[dict[str, Update], dict[str, int]] | None


class Sessions:
    """Every open session of this instance by its connection's id: the one
    registry (transports look sessions up here; draining and metrics read it)."""

    __slots__ = ("_by_id",)

    def __init__(self) -> None:
        self._by_id: dict[str, Session] = {}

    def add(self, session: "Session") -> None:
        self._by_id[session.id] = session

    def remove(self, session: "Session") -> None:
        if self._by_id.get(session.id) is session:
            del self._by_id[session.id]

    def get(self, session_id: str) -> "Session | None":
        return self._by_id.get(session_id)

    def count(self, transport: str) -> int:
        return sum(1 for s in self._by_id.values() if s.connection.transport == transport)

    def __iter__(self) -> Iterator["Session"]:
        return iter(list(self._by_id.values()))

    def __len__(self) -> int:
        return len(self._by_id)


@dataclass
class Services:
    """What every session shares; built once by create_app."""

    settings: Settings
    hub: Hub
    broker: Broker
    verifier: TokenVerifier
    scheduler: FlushScheduler
    sessions: Sessions = field(default_factory=Sessions)
    heartbeats: Heartbeats = field(default_factory=Heartbeats)
    candles: CandleStreams = field(init=False)

    def __post_init__(self) -> None:
        self.candles = CandleStreams(self.hub, self.broker, self.settings.candle_min_interval_ms)


class Connection(Sink, Protocol):
    """What a transport provides to its session: the encoding of the session's
    messages in the transport's framing, and the writing of what the session's
    Outbox hands it (Sink). It never queues anything by itself."""

    id: str  # unique among this instance's open connections
    transport: str

    @property
    def recovery(self) -> RecoveryState | None:
        """Its part in connection state recovery (its pid, the offsets it
        sent), given when it is built; None: its session is not recoverable."""

    def encode_reply(self, request: "Request", result: dict[str, Any]) -> list[str]:
        """The message texts answering a request that succeeded, all encoded
        before any is returned: raises TypeError or ValueError when `result`
        cannot be written."""

    def encode_error(self, error: ClientError, request: "Request | None" = None) -> str:
        """The message text of an error: the answer to `request`, or (None)
        one that tells the client unprompted."""

    def encode_event(self, name: str, payload: dict[str, Any]) -> str:
        """The message text of an event the server sends unprompted (a
        heartbeat, `tokenExpiring`): on /live-price a frame with `type` name."""

    def joined(self, symbols: list[str]) -> None:
        """The session entered these rooms."""

    def left(self, symbols: list[str]) -> None:
        """The session left these rooms."""

    async def disconnect(self, going_away: bool = False) -> None:
        """Close the connection; the transport then calls Session.closed_by_transport().
        `going_away`: the server is shutting down, the client may reconnect."""


@dataclass
class Request:
    action: str
    payload: Any
    ack: Any = None  # the transport's reply handle (a Socket.IO ack id, a frame id)
    refused: ClientError | None = None


class Session:
    __slots__ = (
        "id",
        "services",
        "settings",
        "connection",
        "subscriptions",
        "candles",
        "gates",
        "outbox",
        "identity",
        "closed",
        "_requests",
        "_worker",
        "_bucket",
        "_expiry",
        "_closing",
        "_beats",
        "throttles",
        "floors",
        "wildcard",
        "__weakref__",
    )

    def __init__(self, services: Services, connection: Connection, identity: Identity | None = None) -> None:
        self.id = connection.id
        self.services = services
        self.settings = services.settings
        self.connection = connection
        self.subscriptions: set[str] = set()
        self.candles = CandleFollows(services.candles, self)
        self.gates = Gates()
        self.outbox = Outbox(
            connection,
            services.scheduler,
            self.settings.outbound_buffer_bytes,
            self.settings.slow_client_timeout,
            self._on_slow,
        )
        self.identity: Identity | None = None
        self.closed = False
        # A list, not a deque: most connections never hold a request for long,
        # and an empty deque costs 600 bytes per connection.
        self._requests: list[Request] = []
        self._worker: asyncio.Task[None] | None = None
        self._bucket = TokenBucket(self.settings.request_rate, self.settings.request_burst)
        self._expiry: asyncio.TimerHandle | None = None
        self._closing: asyncio.Task[None] | None = None
        self._beats = 0  # heartbeats sent
        # Throttled subscriptions (symbol -> period ms); the `*` subscription.
        self.throttles: dict[str, int] = {}
        self.wildcard: WildcardStream | None = None
        # Per throttled symbol: its group may still hold an update at or
        # before this stream position, which the client already has.
        self.floors: dict[str, int] | None = None
        if identity is not None:
            self._set_identity(identity)
        services.sessions.add(self)
        if connection.transport == "websocket" and self.settings.live_price_heartbeat:
            services.heartbeats.set(self, self.settings.live_price_heartbeat)

    # -- delivery (the hot path) ------------------------------------------------

    def deliver(self, update: Update) -> None:
        if self.gates and not self.gates.offer(update):
            return
        self.outbox.push_update(update)

    def deliver_event(self, event: SharedEvent) -> None:
        """A live candle (CandleMember): queued in order, framed once for all its clients."""
        if not self.outbox.given_up:
            self.outbox.push(event)

    def deliver_throttled(self, update: Update) -> None:
        if update.symbol == BATCH_SYMBOL:
            self._deliver_any(update)
            return
        floors = self.floors
        if floors:
            floor = floors.get(update.symbol)
            if floor is not None:
                if update.pos <= floor:
                    return
                del floors[update.symbol]
        self.deliver(update)

    def deliver_wildcard(self, update: Update) -> None:
        if update.symbol not in self.subscriptions:  # else its own subscription delivers it
            self._deliver_any(update)

    def _deliver_any(self, update: Update) -> None:
        wildcard = self.wildcard
        item = wildcard.offer(update) if wildcard is not None else None
        if item is not None:
            self.outbox.push_update(item)

    # -- requests ---------------------------------------------------------------

    def submit(self, request: Request) -> None:
        """Queue a request; requests run one at a time in arrival order."""
        if self.closed:
            return
        if len(self._requests) >= MAX_WAITING_REQUESTS:
            self.close_soon(ClientError(ErrorCode.RATE_LIMITED, "too many requests waiting for an answer"))
            return
        if not self._bucket.take() or len(self._requests) >= self.settings.request_burst:
            request.refused = ClientError(ErrorCode.RATE_LIMITED, "too many requests; slow down")
        self._requests.append(request)
        if self._worker is None:
            self._worker = asyncio.create_task(self._run_requests())

    async def _run_requests(self) -> None:
        try:
            while self._requests and not self.closed:
                await self._handle(self._requests.pop(0))
        finally:
            self._worker = None

    async def _handle(self, request: Request) -> None:
        handler = self._handlers.get(request.action)
        after: Callable[[], None] | None = None
        try:
            if request.refused is not None:
                raise request.refused
            if handler is None:
                raise invalid_payload(f"unknown request {str(request.action)[:40]!r}")
            if not encodable(request.payload):
                # Replies echo parts of the request (a failed symbol): refused
                # before anything is applied rather than answered with a reply
                # that cannot be written.
                raise invalid_payload(
                    "the request holds text or numbers JSON cannot carry back "
                    "(a lone surrogate, an integer beyond 64 bits)"
                )
            result, after = await handler(self, request.payload)
        except ClientError as error:
            self._reply_error(request, error)
            if error.code is ErrorCode.AUTH_FAILED and not self.closed:
                await self.close()
            return
        except BackendUnavailable:
            self._reply_error(request, BACKEND_DOWN)
            return
        except Exception:  # one bad request must not end the session
            log.exception("request %r failed", request.action)
            self._reply_error(request, INTERNAL_ERROR)
            return
        if self.closed:
            return
        try:
            texts = self.connection.encode_reply(request, result)
        except (TypeError, ValueError):
            # Nothing was queued (replies are encoded whole first): the request
            # is undone, so no stream is left behind a gate never opened.
            log.warning("reply to %r could not be encoded; request undone", request.action)
            if result.get("added"):
                if request.action == "subscribeCandles":
                    await self.candles.drop((s, result["interval"]) for s in result["added"])
                else:
                    await self.drop(result["added"])
            self._reply_error(request, INTERNAL_ERROR)
            return
        for text in texts:
            self.outbox.push(text)
        if after is not None:
            after()

    def _reply_error(self, request: Request, error: ClientError) -> None:
        if not self.closed:
            self.outbox.push(self.connection.encode_error(error, request))

    async def _subscribe(self, payload: Any) -> tuple[dict[str, Any], Callable[[], None]]:
        if self.settings.require_auth and self.identity is None:
            raise ClientError(ErrorCode.AUTH_REQUIRED, "authenticate before subscribing")
        request = parse_symbols_request(payload, self.settings.max_subscriptions, subscribe=True)
        valid, invalid, at = _split_with_wildcard(request.symbols)
        failed = [{"symbol": s, "code": ErrorCode.INVALID_SYMBOL.value} for s in invalid]
        if at is not None:
            if self.settings.wildcard_enabled and (self.identity is None or self.identity.wildcard):
                valid.insert(at, WILDCARD)
            else:
                failed.append({"symbol": WILDCARD, "code": ErrorCode.FORBIDDEN_SYMBOL.value})
        allowed = []
        for symbol in valid:
            if self.identity is not None and symbol != WILDCARD and not self.identity.allows(symbol):
                failed.append({"symbol": symbol, "code": ErrorCode.FORBIDDEN_SYMBOL.value})
            else:
                allowed.append(symbol)
        # `*` at another period starts afresh, with its snapshots.
        restart = WILDCARD in allowed and self.wildcard is not None and self.wildcard.throttle_ms != request.throttle_ms
        added = [s for s in allowed if s not in self.subscriptions or (restart and s == WILDCARD)]
        if len(self.subscriptions) - restart + len(added) > self.settings.max_subscriptions:
            raise ClientError(
                ErrorCode.TOO_MANY_SUBSCRIPTIONS, f"at most {self.settings.max_subscriptions} symbols per connection"
            )
        if added and not self.services.broker.ready:
            # The listener is down, so waiting for the backend would only delay the answer.
            raise BackendUnavailable("backend not ready")
        if restart:
            await self.drop([WILDCARD])
        since = request.since_ms is not None or request.since_seq is not None
        point = ResumePoint(request.since_seq, request.since_ms)
        points = {s: point for s in added if s != WILDCARD} if since else {}
        starts = await self.start_streams(added, points, throttle_ms=request.throttle_ms)
        result: dict[str, Any] = {"ok": True, "symbols": sorted(self.subscriptions), "added": added, "failed": failed}
        if since and any(s != WILDCARD for s in allowed):
            # A symbol already streaming has nothing to replay: its resume is whole.
            # (`since` does not apply to `*`: it starts with snapshots.)
            result["recovered"] = starts.replayed is not False
        if request.throttle_ms is not None:
            result["throttle"] = request.throttle_ms
        retuned = [s for s in allowed if s not in added and self.throttles.get(s) != request.throttle_ms]

        heartbeat = request.heartbeat

        def start() -> None:
            self.retune(retuned, request.throttle_ms)
            self.open_streams(starts)
            # Only a subscribe that succeeded changes the heartbeat, and its
            # first beat comes after the reply.
            if heartbeat is not None:
                self.services.heartbeats.set(self, heartbeat)

        return result, start

    # -- starting streams: the one path every subscription starts on -------------
    #
    # A subscribe (with or without a resume point) and a recovered Socket.IO
    # session both come here: each stream is subscribed with its gate closed,
    # its room joined, and what it starts with read (a replay from history or
    # the snapshot) at a known stream position; once the client may receive
    # them, open_streams sends them, then the live updates that waited.

    async def start_streams(
        self,
        symbols: list[str],
        points: Mapping[str, ResumePoint],
        *,
        throttle_ms: int | None = None,
        exact: bool = False,
    ) -> StreamStarts:
        """Subscribe to `symbols` (`*` included) with their gates closed and
        read what each stream starts with: the replay after `points[symbol]`
        when history reaches back to it, else (or without a point) the
        snapshot. `exact`: a point history no longer reaches fails the whole
        start (ResumeUnreachable) instead of falling back to the snapshot.

        On failure nothing is left subscribed: raises BackendUnavailable (the
        backend did not answer within BACKEND_TIMEOUT) or ResumeUnreachable.
        """
        streams = [s for s in symbols if s != WILDCARD]
        self.hold(streams)
        if len(streams) < len(symbols):
            self.subscriptions.add(WILDCARD)
            self.wildcard = WildcardStream(throttle_ms)
        try:
            starts = await asyncio.wait_for(self._read_starts(streams, points, throttle_ms, exact), BACKEND_TIMEOUT)
        except asyncio.TimeoutError:
            await self.drop(symbols)
            raise BackendUnavailable("the backend did not answer in time") from None
        except Exception:
            await self.drop(symbols)
            raise
        self.connection.joined(streams)
        return starts

    def recoverable(self) -> SavedStreams:
        """What this session has asked for, as connection state recovery keeps it."""
        return SavedStreams(
            sorted(self.subscriptions),
            dict(self.throttles),
            self.candles.keys(),
            self.services.heartbeats.period_of(self),
        )

    async def restore(self, saved: SavedStreams, points: Mapping[str, ResumePoint]) -> Callable[[], None] | None:
        """Connection state recovery: give a dropped connection's session back
        as it was. Each subscription resumes exactly after `points[symbol]`
        (the last update its client received; none: nothing reached it, its
        snapshot), at its throttle; its live candles start again with their
        current candle; its heartbeat goes on. Returns what opens the streams,
        to run once the client knows it is connected; None when the session
        cannot be given back as it was (then it starts fresh, with nothing)."""
        if not self._may_restore(saved):
            return None
        groups: dict[int | None, list[str]] = {}
        for symbol in saved.symbols:
            groups.setdefault(saved.throttles.get(symbol), []).append(symbol)
        intervals: dict[str, list[str]] = {}
        for symbol, interval in saved.candles:
            intervals.setdefault(interval, []).append(symbol)
        started: list[StreamStarts] = []
        joins: list[Callable[[], None]] = []
        try:
            for throttle_ms, symbols in groups.items():
                started.append(await self.start_streams(symbols, points, throttle_ms=throttle_ms, exact=True))
            for interval, symbols in intervals.items():
                joins.append(await self.candles.start(symbols, interval, BACKEND_TIMEOUT))
        except (BackendUnavailable, ResumeUnreachable):
            await self.drop(sorted(self.subscriptions))
            await self.candles.drop(self.candles.keys())
            return None

        def open_all() -> None:
            for starts in started:
                self.open_streams(starts)
            for join in joins:
                join()
            if saved.heartbeat:
                self.services.heartbeats.set(self, saved.heartbeat)

        return open_all

    def _may_restore(self, saved: SavedStreams) -> bool:
        """Whether this connection may have what the saved session held."""
        if WILDCARD in saved.symbols:
            return False  # a `*` subscription starts again with its snapshots
        wanted = set(saved.symbols) | {symbol for symbol, _ in saved.candles}
        identity = self.identity
        if identity is not None and not all(identity.allows(s) for s in wanted):
            return False  # entitlements changed: the client must subscribe again
        if self.settings.require_auth and identity is None and wanted:
            return False
        limit = self.settings.max_subscriptions
        return (
            len(saved.symbols) <= limit
            and len(saved.candles) <= limit
            and all(MIN_THROTTLE_MS <= ms <= MAX_THROTTLE_MS for ms in saved.throttles.values())
            and all(interval in LIVE_INTERVALS_MS for _, interval in saved.candles)
            and (saved.heartbeat == 0 or MIN_HEARTBEAT_SECONDS <= saved.heartbeat <= MAX_HEARTBEAT_SECONDS)
        )

    def hold(self, symbols: list[str]) -> None:
        """Subscribe with each stream's gate closed: live updates wait."""
        for symbol in symbols:
            self.gates.hold(symbol)
            self.subscriptions.add(symbol)

    def open_streams(self, starts: StreamStarts) -> None:
        """Send each held stream's first updates, read at its position, then
        what waited at its gate after them, and let live updates through;
        the same for `*`."""
        positions = starts.positions
        for symbol, updates in starts.first.items():
            for update in self.gates.release(symbol, updates, positions[symbol]):
                self.outbox.push_update(update)
            if symbol in self.throttles:
                # Its group may emit an update this start already covers.
                self.floors = {**(self.floors or {}), symbol: positions[symbol]}
        if starts.wildcard is not None and self.wildcard is not None:
            for item in self.wildcard.release(*starts.wildcard):
                self.outbox.push_update(item)

    async def _read_starts(
        self, symbols: list[str], points: Mapping[str, ResumePoint], throttle_ms: int | None, exact: bool
    ) -> StreamStarts:
        """Join the rooms, then find what each stream starts with and the
        stream position each was read at (see Gate); then `*`'s snapshots."""
        broker = self.services.broker
        hub = self.services.hub
        known, joined_at = await hub.join(self, symbols, throttle_ms)
        if throttle_ms is not None:
            self.throttles.update(dict.fromkeys(symbols, throttle_ms))
        first: dict[str, list[Update]] = {s: [] for s in symbols}
        positions = dict.fromkeys(symbols, joined_at)
        replayed = None
        need_snapshot = []
        for symbol in symbols:
            point = points.get(symbol)
            if point is None:
                need_snapshot.append(symbol)
                continue
            replay = await self._replay(symbol, point)
            if replay.complete:
                first[symbol] = replay.updates
                positions[symbol] = replay.position
                replayed = replayed is not False
            elif exact:
                raise ResumeUnreachable(symbol)
            else:
                replayed = False
                need_snapshot.append(symbol)
        unknown = [s for s in need_snapshot if s not in known]
        if unknown:
            snapshots, read_at = await broker.snapshots_at(unknown)
            hub.remember(snapshots, read_at)
        else:
            snapshots, read_at = {}, {}
        for symbol in need_snapshot:
            if symbol in known:
                snapshot = known[symbol]
            else:
                snapshot = snapshots.get(symbol)
                positions[symbol] = read_at[symbol]
            if snapshot is not None:
                first[symbol] = [snapshot]
        return StreamStarts(first, positions, replayed, await self._wildcard_first(throttle_ms))

    async def _replay(self, symbol: str, point: ResumePoint) -> Replay:
        """The stored updates of `symbol` after `point` (see ResumePoint)."""
        broker = self.services.broker
        if point.seq is None and point.ms is not None and point.digest is not None:
            return await broker.replay_after_update(symbol, point.ms, point.digest)
        return await broker.replay_at(symbol, point.ms, point.seq)

    async def _wildcard_first(self, throttle_ms: int | None) -> tuple[dict[str, Update], dict[str, int]] | None:
        """Join every symbol's stream (if held), then read the snapshots of
        the priced symbols not subscribed on their own, with their positions."""
        if self.wildcard is None or self.wildcard.held is None:
            return None
        broker = self.services.broker
        await self.services.hub.join_wildcard(self, throttle_ms)
        priced = await broker.symbols_with_price(self.settings.wildcard_snapshot_max)
        # Unthrottled, a symbol subscribed on its own streams there; the overview has them all.
        wanted = priced if throttle_ms is not None else [s for s in priced if s not in self.subscriptions]
        snapshots: dict[str, Update] = {}
        positions: dict[str, int] = {}
        for i in range(0, len(wanted), WILDCARD_READ_CHUNK):
            read = await broker.snapshots_at(wanted[i : i + WILDCARD_READ_CHUNK])
            positions.update(read.positions)
            snapshots.update((s, u) for s, u in read.snapshots.items() if u is not None)
        return snapshots, positions

    # -- throttled streams: another period for subscribed symbols

    def retune(self, symbols: list[str], throttle_ms: int | None) -> None:
        """Serve subscribed symbols at another throttle period (None: unthrottled)
        from now on, without a gap or a repeat (a `*` subscription is kept as it is)."""
        hub = self.services.hub
        for symbol in symbols:
            if symbol == WILDCARD:
                continue
            held, floor = hub.retune(self, symbol, throttle_ms)
            if throttle_ms is None:
                self.throttles.pop(symbol, None)
            else:
                self.throttles[symbol] = throttle_ms
            if held is not None:
                self.deliver(held)
            if floor is not None:
                self.floors = {**(self.floors or {}), symbol: floor}

    async def _unsubscribe(self, payload: Any) -> tuple[dict[str, Any], None]:
        request = parse_symbols_request(payload, self.settings.max_subscriptions)
        valid, invalid, at = _split_with_wildcard(request.symbols)
        if at is not None:
            valid.insert(at, WILDCARD)
        removed = [s for s in valid if s in self.subscriptions]
        await self.drop(removed)
        failed = [{"symbol": s, "code": ErrorCode.INVALID_SYMBOL.value} for s in invalid]
        return {"ok": True, "symbols": sorted(self.subscriptions), "removed": removed, "failed": failed}, None

    async def drop(self, symbols: list[str]) -> None:
        """Unsubscribe: leave the rooms, discard what was queued for them."""
        for symbol in symbols:
            self.subscriptions.discard(symbol)
            self.gates.drop(symbol)
            self.throttles.pop(symbol, None)
            if self.floors:
                self.floors.pop(symbol, None)
            self.outbox.drop_symbol(symbol)
        if WILDCARD in symbols:
            symbols = [s for s in symbols if s != WILDCARD]
            self.wildcard = None
            # What `*` queued: batches, and updates of symbols not subscribed on their own.
            self.outbox.drop_updates(lambda u: u.symbol not in self.subscriptions)
            await self.services.hub.leave_wildcard(self)
        if not self.closed:
            self.connection.left(symbols)
        await self.services.hub.leave(self, symbols)

    async def _history(self, payload: Any) -> tuple[dict[str, Any], None]:
        query = parse_history_query(payload)
        if self.settings.require_auth and self.identity is None:
            raise ClientError(ErrorCode.AUTH_REQUIRED, "authenticate before reading history")
        if self.identity is not None and not self.identity.allows(query.symbol):
            raise ClientError(ErrorCode.FORBIDDEN_SYMBOL, f"not entitled to {query.symbol}", symbols=[query.symbol])
        updates = await self.services.broker.history(query.symbol, query.start_ms, query.end_ms, query.limit)
        return {"ok": True, "symbol": query.symbol, "updates": [orjson.Fragment(u.raw) for u in updates]}, None

    async def _authenticate(self, payload: Any) -> tuple[dict[str, Any], Callable[[], None] | None]:
        identity = self.services.verifier.verify(parse_token(payload))
        self._set_identity(identity)
        revoked = [
            s for s in sorted(self.subscriptions) if not (identity.wildcard if s == WILDCARD else identity.allows(s))
        ]
        if revoked:
            await self.drop(revoked)
        revoked_candles = [key for key in self.candles.keys() if not identity.allows(key[0])]
        await self.candles.drop(revoked_candles)
        result: dict[str, Any] = {"ok": True, "user": identity.user, "expiresAt": identity.expires_at_ms}
        if revoked:
            result["revoked"] = revoked
        dropped = sorted(set(revoked).union(symbol for symbol, _ in revoked_candles))
        if not dropped:
            return result, None
        # After the answer: the client learns why those streams stopped.
        notice = ClientError(
            ErrorCode.FORBIDDEN_SYMBOL,
            "the new token does not allow these symbols: they were unsubscribed",
            symbols=dropped,
        )
        return result, lambda: self.outbox.push(self.connection.encode_error(notice))

    # -- live candles -------------------------------------------------------------

    async def _subscribe_candles(self, payload: Any) -> tuple[dict[str, Any], Callable[[], None]]:
        if self.settings.require_auth and self.identity is None:
            raise ClientError(ErrorCode.AUTH_REQUIRED, "authenticate before subscribing")
        request = parse_candles_request(payload, self.settings.max_subscriptions)
        interval = request.interval
        valid, failed = split_candle_symbols(request)
        allowed = []
        for symbol in valid:
            if self.identity is not None and not self.identity.allows(symbol):
                failed.append({"symbol": symbol, "code": ErrorCode.FORBIDDEN_SYMBOL.value})
            else:
                allowed.append(symbol)
        added = [s for s in allowed if (s, interval) not in self.candles]
        if len(self.candles) + len(added) > self.settings.max_subscriptions:
            raise ClientError(
                ErrorCode.TOO_MANY_SUBSCRIPTIONS,
                f"at most {self.settings.max_subscriptions} candle streams per connection",
            )
        if added and not self.services.broker.ready:
            raise BackendUnavailable("backend not ready")
        join = await self.candles.start(added, interval, BACKEND_TIMEOUT)
        return {
            "ok": True,
            "interval": interval,
            "symbols": self.candles.symbols(interval),
            "added": added,
            "failed": failed,
        }, join

    async def _unsubscribe_candles(self, payload: Any) -> tuple[dict[str, Any], None]:
        request = parse_candles_request(payload, self.settings.max_subscriptions)
        interval = request.interval
        valid, failed = split_candle_symbols(request)
        removed = [s for s in valid if (s, interval) in self.candles]
        await self.candles.drop((s, interval) for s in removed)
        return {
            "ok": True,
            "interval": interval,
            "symbols": self.candles.symbols(interval),
            "removed": removed,
            "failed": failed,
        }, None

    async def _ping(self, payload: Any) -> tuple[dict[str, Any], None]:
        return {"ok": True}, None

    # The one list of requests a session answers, whichever transport.
    _handlers = {
        "subscribe": _subscribe,
        "unsubscribe": _unsubscribe,
        "history": _history,
        "authenticate": _authenticate,
        "ping": _ping,
        "subscribeCandles": _subscribe_candles,
        "unsubscribeCandles": _unsubscribe_candles,
    }
    actions = frozenset(_handlers)

    # -- heartbeats ----------------------------------------------------------------

    def beat(self) -> None:
        """One heartbeat, queued behind what is already queued; none for a
        client that is behind (they would only pile up in its backlog)."""
        outbox = self.outbox
        if self.closed or outbox.given_up or outbox.behind_since is not None:
            return
        self._beats += 1
        outbox.push(self.connection.encode_event(HEARTBEAT_EVENT, {"seq": self._beats}))

    # -- identity -----------------------------------------------------------------

    def _set_identity(self, identity: Identity) -> None:
        hub = self.services.hub
        limit = self.settings.max_connections_per_user
        previous = self.identity.user if self.identity is not None else None
        if identity.user != previous:
            if not hub.admit_user(identity.user, limit):
                raise ClientError(
                    ErrorCode.AUTH_FAILED, f"too many connections for user {identity.user!r} (limit {limit})"
                )
            if previous is not None:
                hub.release_user(previous)
        self.identity = identity
        # One timer per connection: the warning first (TOKEN_EXPIRY_WARNING
        # before exp), then the end; a new token starts it again.
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if identity.expires_at is not None:
            left = identity.expires_at - time.time()
            warning = self.settings.token_expiry_warning
            loop = asyncio.get_running_loop()
            if warning > 0:
                self._expiry = loop.call_later(max(0.0, left - warning), self._warn_expiry)
            else:
                self._expiry = loop.call_later(max(0.0, left), self._expire)

    def _warn_expiry(self) -> None:
        self._expiry = None
        identity = self.identity
        if self.closed or identity is None or identity.expires_at is None:
            return
        left = max(0.0, identity.expires_at - time.time())
        self.outbox.push(
            self.connection.encode_event("tokenExpiring", {"expiresAt": identity.expires_at_ms, "in": int(left * 1000)})
        )
        self._expiry = asyncio.get_running_loop().call_later(left, self._expire)

    def _expire(self) -> None:
        self._expiry = None
        self.close_soon(ClientError(ErrorCode.AUTH_FAILED, "token expired; authenticate again with a fresh token"))

    # -- ending -------------------------------------------------------------------

    def notify_shutdown(self, notice: ClientError) -> None:
        """Queue the shutdown notice behind whatever is already queued."""
        self.outbox.push(self.connection.encode_error(notice))

    @property
    def drained(self) -> bool:
        """Closed, or nothing queued for the client is still waiting to leave."""
        return self.closed or not (self.outbox.pending() or self.connection.backlog())

    def _on_slow(self) -> None:
        self.close_soon(ClientError(ErrorCode.SLOW_CLIENT, "the connection fell too far behind the price stream"))

    def close_soon(self, error: ClientError | None = None) -> None:
        if self._closing is None and not self.closed:
            self._closing = asyncio.create_task(self.close(error))

    async def close(self, error: ClientError | None = None, *, going_away: bool = False) -> None:
        """Send what is queued and why (when there is a reason), then disconnect.

        A slow client's queue is dropped instead: it could not take it.
        `going_away` (a shutdown) lets clients reconnect by themselves.
        """
        if self.closed:
            return
        slow = error is not None and error.code is ErrorCode.SLOW_CLIENT
        self.outbox.flush_final(self.connection.encode_error(error) if error is not None else None, drop_pending=slow)
        await self.connection.disconnect(going_away)
        await self.closed_by_transport()

    async def closed_by_transport(self) -> None:
        """The connection is gone: leave every room and release everything."""
        if self.closed:
            return
        self.closed = True
        self.services.heartbeats.stop(self)
        self.outbox.close()
        if self._expiry is not None:
            self._expiry.cancel()
        if self._worker is not None and self._worker is not asyncio.current_task():
            self._worker.cancel()
        self._requests.clear()
        self.services.sessions.remove(self)
        hub = self.services.hub
        if self.identity is not None:
            hub.release_user(self.identity.user)
        symbols, self.subscriptions = list(self.subscriptions), set()
        self.gates.clear()
        if self.wildcard is not None:
            self.wildcard = None
            await hub.leave_wildcard(self)
        await hub.leave(self, symbols)
        await self.candles.drop(self.candles.keys())
