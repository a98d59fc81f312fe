"""Connection state recovery's pieces without servers: offsets, the sent log,
where each symbol resumes, the saved sessions, and the python-socketio
internals the pid relies on."""

from __future__ import annotations

import asyncio
import inspect

import orjson
import pytest
import socketio

from stockstream.broker.memory import MemoryBroker
from stockstream.config import Settings
from stockstream.recovery import (
    SENT_LOG_SIZE,
    RecoveryState,
    SavedStreams,
    SentLog,
    load_state,
    positions,
    saved_streams,
)
from stockstream.transports.sio_recovery import PidInConnectReply
from stockstream.updates import Update


def update(symbol: str, seq: int | None, ts: int = 1000) -> Update:
    return Update(symbol, 1.0, ts, seq, orjson.dumps({"symbol": symbol, "price": 1.0, "timestamp": ts, "seq": seq}))


def state_of(log: SentLog, symbols: list[str]) -> dict:
    state = load_state(log.to_state(SavedStreams(symbols, {}, [], 0)))
    assert state is not None
    return state


def test_offset_rides_as_the_last_argument_of_the_update_event() -> None:
    """The recoverable packet is the plain one plus the offset as a last string argument."""
    u = update("AAPL", 7)
    payload, frame = u.sio_recoverable()
    assert orjson.loads(payload[1:]) == ["stockUpdate", u.to_dict(), "AAPL:7"]
    assert frame.endswith(b"4" + payload.encode())
    seqless = update("AAPL", None, 55)
    assert seqless.offset == f"AAPL@55#{seqless.digest}" and len(seqless.digest or "") == 16


def test_each_symbol_resumes_from_its_last_update_at_or_before_the_offset() -> None:
    """What was sent after the client's offset counts as lost; before it, as received."""
    log = SentLog()
    for u in (update("A", 1), update("B", 1), update("A", 2), update("B", 2), update("A", 3)):
        log.record(u)
    assert positions(state_of(log, ["A", "B"]), "B:1") == {"A": (1, 1000, None), "B": (1, 1000, None)}
    assert positions(state_of(log, ["A", "B"]), "A:2") == {"A": (2, 1000, None), "B": (1, 1000, None)}
    assert positions(state_of(log, ["A", "B"]), "A:3") == {"A": (3, 1000, None), "B": (2, 1000, None)}


def test_unknown_or_missing_offset_is_no_recovery() -> None:
    """An offset this session never sent, or none after something was sent: fresh session."""
    log = SentLog()
    log.record(update("A", 1))
    assert positions(state_of(log, ["A"]), "A:9") is None
    assert positions(state_of(log, ["A"]), None) is None
    assert positions(state_of(log, ["A"]), 12) is None
    assert positions(state_of(SentLog(), ["A"]), None) == {}


def test_forgotten_offsets_keep_their_symbols_positions() -> None:
    """Past SENT_LOG_SIZE the oldest offsets are forgotten (no longer recoverable
    from), but the positions they carried still count for later offsets."""
    log = SentLog()
    log.record(update("OLD", 5))
    for seq in range(1, SENT_LOG_SIZE + 1):
        log.record(update("NEW", seq))
    state = state_of(log, ["OLD", "NEW"])
    assert positions(state, "OLD:5") is None
    assert positions(state, f"NEW:{SENT_LOG_SIZE}") == {"OLD": (5, 1000, None), "NEW": (SENT_LOG_SIZE, 1000, None)}


async def test_memory_broker_keeps_a_session_for_its_ttl_and_hands_it_out_once() -> None:
    """sessions.take returns what sessions.save stored, once, and nothing after the ttl."""
    broker = MemoryBroker(Settings.from_env({}))
    await broker.sessions.save("p1", b"state", 30)
    assert await broker.sessions.take("p1") == b"state"
    assert await broker.sessions.take("p1") is None
    await broker.sessions.save("p2", b"state", 0.05)
    await asyncio.sleep(0.1)
    assert await broker.sessions.take("p2") is None


class _Recorder(PidInConnectReply):
    def __init__(self, state: RecoveryState | None) -> None:
        self.state = state

    def recovery_state(self, sid: str) -> RecoveryState | None:
        return self.state


def test_connect_reply_gets_the_pid_and_streams_open_after_it() -> None:
    """The CONNECT reply carries the pid; a recovered session's streams open
    only once that reply was handed to Engine.IO, and only once."""
    state = RecoveryState()
    opened: list[str] = []
    server = _Recorder(state)
    state.opener = lambda: opened.append("open")
    assert server.connect_reply("s1", {"sid": "s1"}) == {"sid": "s1", "pid": state.pid}
    assert opened == []
    server.connect_reply_sent("s1")
    server.connect_reply_sent("s1")
    assert opened == ["open"] and state.opener is None
    assert _Recorder(None).connect_reply("s2", {"sid": "s2"}) == {"sid": "s2"}


def test_python_socketio_still_sends_the_connect_reply_through_send_packet() -> None:
    """PidInConnectReply relies on python-socketio (checked with 5.18.1) building
    the CONNECT reply as {'sid': sid} and sending it with _send_packet after the
    connect handler ran; this fails if that changes."""
    source = inspect.getsource(socketio.AsyncServer._handle_connect)
    handler = source.index("_trigger_event(")
    reply = source.index("packet.CONNECT, {'sid': sid}", handler)
    assert "self._send_packet(eio_sid, self.packet_class(" in source[handler : reply + 40]
    assert "async def _send_packet(self, eio_sid, pkt)" in inspect.getsource(socketio.AsyncServer._send_packet)


def test_recovery_needs_history() -> None:
    """RECOVERY_WINDOW > 0 without history cannot replay anything: refused."""
    from stockstream.config import SettingsError

    with pytest.raises(SettingsError, match="^RECOVERY_WINDOW"):
        Settings.from_env({"RECOVERY_WINDOW": "30", "HISTORY_MAX_ENTRIES": "0"})
    assert Settings.from_env({}).recovery_window == 0


def test_a_recovered_session_still_knows_the_offsets_sent_before() -> None:
    """Dropped again before the client received anything new, a recovered
    session must still recover from the client's old offset."""
    log = SentLog()
    log.record(update("A", 1))
    log.record(update("A", 2))
    again = SentLog.continuing(state_of(log, ["A"]))
    again.record(update("A", 3))
    assert positions(state_of(again, ["A"]), "A:1") == {"A": (1, 1000, None)}


def test_nothing_more_is_sent_once_the_session_is_taken_for_saving() -> None:
    """After its state was saved, a connection writes nothing: an update the
    client received then would carry an offset the saved session does not know."""
    from stockstream.transports.socketio_transport import SocketIOConnection

    connection = SocketIOConnection.__new__(SocketIOConnection)
    connection._server = None  # type: ignore[assignment]  # any attempt to write would touch it
    connection._direct = None
    connection.recovery = RecoveryState()
    connection.recovery.frozen = True
    assert connection.send([update("A", 1)], None) is True
    assert list(connection.recovery.sent.entries) == []


def seqless(symbol: str, ts: int, n: int) -> Update:
    """An update as the original design publishes it: no seq; `n` tells apart
    updates that share a millisecond."""
    raw = orjson.dumps({"symbol": symbol, "price": 1.0, "timestamp": ts, "n": n})
    return Update(symbol, 1.0, ts, None, raw)


def test_updates_without_seq_sharing_a_millisecond_have_distinct_offsets() -> None:
    """A timestamp is not a position: updates published in one millisecond get
    different offsets, and the offset a client names resumes each symbol from
    exactly that update, not from the first one of its millisecond."""
    sent = [seqless("A", 1000, 1), seqless("A", 1000, 2), seqless("B", 1000, 1), seqless("A", 1000, 3)]
    assert len({u.offset for u in sent}) == 4
    log = SentLog()
    for u in sent:
        log.record(u)
    state = state_of(log, ["A", "B"])
    assert positions(state, sent[1].offset) == {"A": (None, 1000, sent[1].digest)}
    assert positions(state, sent[3].offset) == {"A": (None, 1000, sent[3].digest), "B": (None, 1000, sent[2].digest)}
    assert positions(state, "A@1000") is None, "a bare timestamp names no update"


def test_digest_is_of_the_bytes_as_published() -> None:
    """The digest depends on every byte of the update (any field), not on its parsed values only."""
    a = seqless("A", 1000, 1)
    b = Update("A", 1.0, 1000, None, a.raw.replace(b'"n":1', b'"n":2'))
    assert a.digest != b.digest
    assert Update("A", 1.0, 1000, None, a.raw).digest == a.digest
    assert update("A", 3).digest is None, "an update with a seq is named by its seq"


def test_a_session_saved_before_offsets_had_digests_still_resumes_by_timestamp() -> None:
    """State saved by an earlier version (entries of three) keeps working: its
    offsets were SYMBOL@timestamp and resume by timestamp."""
    state = {"symbols": ["A"], "base": {}, "sent": [["A", None, 1000], ["A", 7, 1001]]}
    assert positions(state, "A@1000") == {"A": (None, 1000, None)}
    assert SentLog.continuing(state).entries[0] == ("A", None, 1000, None)


async def test_a_reconnect_waits_for_the_save_of_a_connection_still_live() -> None:
    """take_saved: when the pid's connection is still live, it is released
    (disconnected, by sid) and its state, saved a moment later, is what the
    reconnect gets; a pid whose client disconnected itself (no entry) or
    whose connection never saves gives None, the latter after SAVE_WAIT at most."""
    from stockstream import recovery

    broker = MemoryBroker(Settings.from_env({}))
    released: list[str] = []

    async def release(sid: str) -> None:
        released.append(sid)
        asyncio.get_running_loop().call_later(0.1, asyncio.ensure_future, broker.sessions.save("p1", b"state", 30))

    await recovery.mark_live(broker, "p1", "sid-1")
    assert await recovery.take_saved(broker, "p1", release) == b"state"
    assert released == ["sid-1"]
    assert await recovery.take_saved(broker, "p1", release) is None and released == ["sid-1"]

    async def release_never_saves(sid: str) -> None:
        released.append(sid)

    await recovery.mark_live(broker, "p2", "sid-2")
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await recovery.take_saved(broker, "p2", release_never_saves) is None
    assert recovery.SAVE_WAIT - 0.1 <= loop.time() - started <= recovery.SAVE_WAIT + 2.0


@pytest.mark.parametrize("operation", ["save", "take"])
async def test_saved_sessions_on_an_unreachable_cluster_raise_backend_unavailable(operation: str) -> None:
    """On a Redis Cluster whose nodes are gone, sessions.save and sessions.take
    raise BackendUnavailable (what recovery handles), not the cluster client's
    RedisClusterException."""
    from stockstream.broker import BackendUnavailable
    from stockstream.broker.redis.broker import RedisBroker
    from tests.support.waiting import free_port

    url = f"redis://127.0.0.1:{free_port()}"
    broker = RedisBroker(url, Settings.from_env({}, redis_url=url, redis_cluster=True))
    try:
        with pytest.raises(BackendUnavailable):
            if operation == "save":
                await broker.sessions.save("p1", b"state", 30)
            else:
                await broker.sessions.take("p1")
    finally:
        await broker.close()


def test_a_saved_session_keeps_what_it_asked_for() -> None:
    """Subscriptions, throttles, followed candles and the heartbeat survive the
    save; a session saved with its symbols only (an earlier version) loads
    with none of the rest; a malformed one does not load."""
    streams = SavedStreams(["AAPL", "MSFT"], {"AAPL": 1000}, [("AAPL", "1m"), ("MSFT", "1s")], 15)
    state = load_state(SentLog().to_state(streams))
    assert state is not None and saved_streams(state) == streams
    assert saved_streams({"symbols": ["AAPL"], "base": {}, "sent": []}) == SavedStreams(["AAPL"], {}, [], 0)
    for bad in (
        {"symbols": "AAPL"},
        {"symbols": [], "throttles": {"AAPL": "1000"}},
        {"symbols": [], "throttles": {"AAPL": True}},
        {"symbols": [], "candles": [["AAPL"]]},
        {"symbols": [], "candles": [["AAPL", 60]]},
        {"symbols": [], "heartbeat": -1},
        {"symbols": [], "heartbeat": 1.5},
    ):
        assert saved_streams(bad) is None, bad
