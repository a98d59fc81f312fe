"""Application heartbeats: a subscribe's `"heartbeat": <s>` asks for
`{"type": "heartbeat", "seq": N}` frames on /live-price (a `heartbeat` event
`{"seq": N}` on Socket.IO) every N seconds, so a client tells a stale feed
from a quiet one. One shared timer per period, none per connection."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from itertools import pairwise
from typing import Any

import pytest

from stockstream.app import node_of
from stockstream.config import Settings, SettingsError
from stockstream.config import MAX_HEARTBEAT_SECONDS, check_heartbeat
from stockstream.heartbeat import BEATS_PER_TURN, Heartbeats
from stockstream.session import Services, Session
from tests.support.inprocess import Stack, inprocess_stack
from tests.support.raw_ws import RawWebSocket
from tests.support.waiting import PROMPT, eventually
from tests.support.ws import WsClient
from tests.test_unit_session import FakeConnection
from tests.test_unit_session import stack as session_stack


def is_heartbeat(frame: dict[str, Any]) -> bool:
    return frame.get("type") == "heartbeat"


def heartbeats(ws: WsClient) -> list[tuple[int, float]]:
    """(seq, arrival time) of every heartbeat frame so far."""
    return [(r["seq"], t) for r, t in zip(ws.replies.items, ws.replies.arrived) if is_heartbeat(r)]


async def ask(ws: WsClient, frame: dict[str, Any]) -> dict[str, Any]:
    """Send a request and return its reply, skipping heartbeats that come meanwhile."""
    await ws.send(frame)
    return await ws.next_reply(lambda r: not is_heartbeat(r))


def services_of(stack: Stack) -> Services:
    return node_of(stack.app).services


def live_price_sessions(stack: Stack) -> list[Session]:
    return [s for s in services_of(stack).sessions if s.connection.transport == "websocket"]


@pytest.fixture
async def memory_stack() -> AsyncIterator[Stack]:
    async with inprocess_stack("memory") as ready:
        yield ready


# -- unit: the bookkeeping ------------------------------------------------------------------


def test_heartbeat_values_are_checked() -> None:
    """0 (off) and whole seconds from 1 to 3600 are accepted; anything else is refused."""
    assert [check_heartbeat(v) for v in (0, 1, 30, MAX_HEARTBEAT_SECONDS)] == [0, 1, 30, MAX_HEARTBEAT_SECONDS]
    for bad in (-1, MAX_HEARTBEAT_SECONDS + 1, 1.5, 2.0, "5", True, None, [1]):
        with pytest.raises(ValueError):
            check_heartbeat(bad)


def test_live_price_heartbeat_setting_is_checked() -> None:
    """LIVE_PRICE_HEARTBEAT defaults to 0 (off) and refuses values outside 0-3600 naming the setting."""
    assert Settings.from_env({}).live_price_heartbeat == 0
    assert Settings.from_env({"LIVE_PRICE_HEARTBEAT": "15"}).live_price_heartbeat == 15
    for bad in ("-1", "3601", "1.5", "soon"):
        with pytest.raises(SettingsError, match="LIVE_PRICE_HEARTBEAT"):
            Settings.from_env({"LIVE_PRICE_HEARTBEAT": bad})


async def test_one_timer_per_period_shared_by_its_members() -> None:
    """Members asking for the same period share one timer; a new period replaces
    the old one; leaving the last member of a period cancels its timer."""
    services, _ = await session_stack()
    beats = Heartbeats()
    sessions = [Session(services, FakeConnection()) for _ in range(6)]
    for index, session in enumerate(sessions):
        beats.set(session, 5 if index % 2 else 7)
    assert (beats.timers(), beats.members()) == (2, 6)
    beats.set(sessions[0], 5)  # 7 -> 5
    assert beats.period_of(sessions[0]) == 5 and (beats.timers(), beats.members()) == (2, 6)
    beats.set(sessions[0], 5)  # unchanged
    assert (beats.timers(), beats.members()) == (2, 6)
    for session in sessions[2::2]:
        beats.stop(session)
    assert (beats.timers(), beats.members()) == (1, 4)  # nobody on 7 any more
    beats.close()
    assert (beats.timers(), beats.members()) == (0, 0)
    for session in sessions:
        await session.closed_by_transport()


class Counter:
    """A member that counts its beats."""

    def __init__(self) -> None:
        self.beats = 0

    def beat(self) -> None:
        self.beats += 1


class Broken(Counter):
    """A member whose beat fails."""

    def beat(self) -> None:
        raise RuntimeError("the connection's encoder failed")


async def test_a_walk_over_many_members_is_spread_over_loop_turns() -> None:
    """A tick beats at most BEATS_PER_TURN members per event-loop turn, every member
    exactly once per walk; one that leaves during the walk is not beaten, and a
    member that raises does not stop the others."""
    beats = Heartbeats()
    beats.set(Broken(), 1)  # walked first
    members = [Counter() for _ in range(2 * BEATS_PER_TURN + 10)]
    for member in members:
        beats.set(member, 1)
    (ticker,) = beats._tickers.values()
    ticker._tick()  # the timer's callback, without waiting a period
    assert sum(m.beats for m in members) == BEATS_PER_TURN - 1
    beats.stop(members[-1])
    for _ in range(3):
        await asyncio.sleep(0)
    assert [m.beats for m in members] == [1] * (len(members) - 1) + [0]
    beats.close()


async def test_a_beat_is_queued_in_order_and_skipped_while_behind() -> None:
    """A beat goes through the session's outbox behind what is already queued,
    numbered 1, 2, 3; a client that is behind gets none (no pile-up) and the
    numbering goes on without a gap once it caught up."""
    services, _ = await session_stack()
    connection = FakeConnection()
    session = Session(services, connection)
    session.outbox.push("before")  # type: ignore[arg-type]  # the fake records any item
    session.beat()
    services.scheduler.flush_now()
    assert connection.sent == ["before"] and connection.answers == [("event", "heartbeat", {"seq": 1})]
    session.outbox.behind_since = 1.0
    for _ in range(5):
        session.beat()
    assert session.outbox.pending() == 0
    session.outbox.behind_since = None
    session.beat()
    services.scheduler.flush_now()
    assert [a[-1]["seq"] for a in connection.answers] == [1, 2]
    await session.closed_by_transport()
    session.beat()
    assert session.outbox.pending() == 0


# -- /live-price, through the real server --------------------------------------------------


async def test_heartbeat_frames_come_numbered_at_the_period(memory_stack: Stack, clients: Any) -> None:
    """After a subscribe with "heartbeat": 1, frames {"type":"heartbeat","seq":N}
    arrive with N = 1, 2, 3, ... about one second apart, after the subscribe's
    reply, while no price moves."""
    ws = await clients.ws(memory_stack.url)
    reply = await ws.subscribe("HBA", heartbeat=1, id="s1")
    assert reply["type"] == "subscribed" and reply["id"] == "s1" and reply["added"] == ["HBA"]
    asked_at = ws.replies.arrived[-1]
    await ws.replies.wait_for(lambda _: len(heartbeats(ws)) >= 4, 4 + 2 * PROMPT, "4 heartbeats")
    beats = heartbeats(ws)
    assert [seq for seq, _ in beats[:4]] == [1, 2, 3, 4]
    assert all(
        json.dumps(r, sort_keys=True) == json.dumps({"seq": r["seq"], "type": "heartbeat"}, sort_keys=True)
        for r in ws.replies.items
        if is_heartbeat(r)
    ), "a heartbeat frame holds only type and seq"
    times = [t for _, t in beats[:4]]
    assert times[0] - asked_at <= 1.0 + 1.5, "the first heartbeat within a period (and a margin)"
    gaps = [b - a for a, b in pairwise(times)]
    # The timer runs on a fixed grid: one late beat makes the next gap shorter, never a burst.
    assert all(0.3 <= gap <= 2.5 for gap in gaps), gaps
    assert 0.7 <= (times[3] - times[0]) / 3 <= 1.6, gaps
    assert ws.updates.items == [], "nothing was published: heartbeats are not price updates"


async def test_bad_heartbeat_values_answer_invalid_payload_with_the_frame_id(memory_stack: Stack, clients: Any) -> None:
    """A heartbeat that is not 0 or 1-3600 whole seconds answers `invalid_payload`
    with the frame's id, changes neither the subscriptions nor the heartbeat,
    and leaves the socket open."""
    ws = await clients.ws(memory_stack.url)
    await ws.subscribe("HBB", heartbeat=3)
    (session,) = live_price_sessions(memory_stack)
    heartbeats_ = services_of(memory_stack).heartbeats
    for index, bad in enumerate([-1, 3601, 1.5, "5", True, [1], {"s": 1}, 0.0]):
        reply = await ask(ws, {"action": "subscribe", "symbols": ["HBC"], "heartbeat": bad, "id": index})
        assert reply["type"] == "error" and reply["code"] == "invalid_payload", (bad, reply)
        assert reply["id"] == index and "heartbeat" in reply["message"], reply
    assert heartbeats_.period_of(session) == 3
    assert session.subscriptions == {"HBB"}
    assert (await ask(ws, {"action": "ping", "id": "p"}))["type"] == "pong"
    assert ws.is_open


async def test_a_later_subscribe_replaces_the_heartbeat_and_0_stops_it(memory_stack: Stack, clients: Any) -> None:
    """A later subscribe's heartbeat replaces the earlier one, an absent one
    leaves it as it is, `{"heartbeat": N}` alone sets it without symbols, and
    0 stops it: no more heartbeat frames, and no timer left."""
    ws = await clients.ws(memory_stack.url)
    heartbeats_ = services_of(memory_stack).heartbeats
    await ws.subscribe("HBD", heartbeat=60)
    (session,) = live_price_sessions(memory_stack)
    assert heartbeats_.period_of(session) == 60
    await ask(ws, {"action": "subscribe", "symbol": "HBE"})  # no heartbeat: unchanged
    assert heartbeats_.period_of(session) == 60
    reply = await ask(ws, {"action": "subscribe", "heartbeat": 1, "id": 7})
    assert reply["type"] == "subscribed" and reply["id"] == 7
    assert reply["added"] == [] and reply["symbols"] == ["HBD", "HBE"]
    assert heartbeats_.period_of(session) == 1 and heartbeats_.timers() == 1
    await ws.replies.wait_for(lambda _: len(heartbeats(ws)) >= 2, 2 + 2 * PROMPT, "2 heartbeats")
    reply = await ask(ws, {"action": "subscribe", "symbol": "HBF", "heartbeat": 0})
    assert reply["type"] == "subscribed" and reply["added"] == ["HBF"]
    assert heartbeats_.members() == 0 and heartbeats_.timers() == 0
    seen = len(heartbeats(ws))
    # Two periods of silence are the observable side of "stopped" (the timer is gone, above).
    await asyncio.sleep(2.2)
    assert (await ask(ws, {"action": "ping"}))["type"] == "pong"
    assert len(heartbeats(ws)) == seen, heartbeats(ws)
    # Unsubscribe does not touch the heartbeat.
    await ask(ws, {"action": "subscribe", "heartbeat": 2})
    await ask(ws, {"action": "unsubscribe", "symbol": "HBD", "heartbeat": 0})
    assert heartbeats_.period_of(session) == 2


async def test_heartbeats_stop_when_connections_close(memory_stack: Stack, clients: Any) -> None:
    """Connections on several periods share a timer per period; once they are
    closed (by the client, or by the server) no member and no timer is left."""
    heartbeats_ = services_of(memory_stack).heartbeats
    sockets = [await clients.ws(memory_stack.url) for _ in range(12)]
    for index, ws in enumerate(sockets):
        await ws.subscribe(f"HB{index}", heartbeat=1 + index % 3)
    assert (heartbeats_.members(), heartbeats_.timers()) == (12, 3)
    for ws in sockets[:6]:
        await ws.close()
    await eventually(lambda: heartbeats_.members() == 6, PROMPT, "6 members left")
    for session in live_price_sessions(memory_stack):
        await session.close()  # the server ends these
    for ws in sockets[6:]:
        assert await ws.wait_closed() == 1008
    await eventually(lambda: heartbeats_.members() == 0 and heartbeats_.timers() == 0, PROMPT, "every timer cancelled")
    assert len(services_of(memory_stack).sessions) == 0


async def test_clients_that_ask_and_vanish_leave_no_timer(memory_stack: Stack) -> None:
    """Clients that ask for a heartbeat and drop the connection at once, before or
    while the subscribe is handled, leave no session, no member and no timer."""
    heartbeats_ = services_of(memory_stack).heartbeats
    for round_ in range(30):
        raw = await RawWebSocket.open("127.0.0.1", memory_stack.port, "/live-price")
        await raw.send_text(
            json.dumps({"action": "subscribe", "symbol": f"HV{round_ % 4}", "heartbeat": 1 + round_ % 5})
        )
        if round_ % 2:
            await raw.read_some(0.01)  # sometimes after the reply went out
        raw.close()
    await eventually(lambda: len(services_of(memory_stack).sessions) == 0, 2 * PROMPT, "every session gone")
    assert (heartbeats_.members(), heartbeats_.timers()) == (0, 0)


async def test_hostile_sequences_on_one_connection(memory_stack: Stack, clients: Any) -> None:
    """A client flipping its heartbeat back and forth, mixing bad values, heartbeat-only
    subscribes and unsubscribes as fast as it can gets every reply in order with its id,
    holds at most one membership (one timer), and then heartbeats numbered without gaps."""
    ws = await clients.ws(memory_stack.url)
    heartbeats_ = services_of(memory_stack).heartbeats
    values: list[Any] = [1, 3600, 0, -5, 2, 0, 0, "x", 17, 1.0, 3600, None, 1]
    frames = []
    for index, value in enumerate(values * 3):
        frame: dict[str, Any] = {"action": "subscribe", "id": index, "heartbeat": value}
        if index % 4 == 0:
            frame["symbol"] = f"HH{index % 3}"
        frames.append(frame)
        if index % 5 == 0:
            frames.append({"action": "unsubscribe", "symbol": "HH0", "id": f"u{index}"})
    for frame in frames:
        await ws.send(frame)
    await ws.replies.wait_for(
        lambda items: len([r for r in items if not is_heartbeat(r)]) >= len(frames), 2 * PROMPT, "every reply"
    )
    replies = [r for r in ws.replies.items if not is_heartbeat(r)]
    assert [r["id"] for r in replies] == [f["id"] for f in frames]
    for frame, reply in zip(frames, replies):
        value = frame.get("heartbeat")
        bad = frame["action"] == "subscribe" and (
            (value is None and "symbol" not in frame)  # neither symbols nor a heartbeat
            or value is not None
            and (isinstance(value, (str, float, bool)) or not 0 <= value <= 3600)
        )
        assert (reply["type"] == "error") == bad, (frame, reply)
    (session,) = live_price_sessions(memory_stack)
    assert heartbeats_.period_of(session) == 1
    assert (heartbeats_.members(), heartbeats_.timers()) == (1, 1)
    seen = len(heartbeats(ws))
    await ws.replies.wait_for(lambda _: len(heartbeats(ws)) >= seen + 2, 2 + 2 * PROMPT, "2 more heartbeats")
    seqs = [seq for seq, _ in heartbeats(ws)]
    assert seqs == list(range(1, len(seqs) + 1))


async def test_a_client_that_is_behind_gets_no_pile_of_heartbeats(clients: Any) -> None:
    """A /live-price client that stopped reading while asking for a heartbeat every
    second holds at most one heartbeat in its server-side queue however long it
    stays behind; when it reads again, the heartbeats go on numbered without gaps."""
    async with inprocess_stack("memory", outbound_buffer_bytes=4096, slow_client_timeout=60.0) as stack:
        raw = await RawWebSocket.open("127.0.0.1", stack.port, "/live-price")
        try:
            await raw.send_text(json.dumps({"action": "subscribe", "symbol": "HBS", "heartbeat": 1}))
            assert json.loads(await raw.next_text())["type"] == "subscribed"
            (session,) = live_price_sessions(stack)
            padding = "p" * 2000
            for attempt in range(2000):
                await stack.publish("HBS", 1.0 + attempt, padding=padding)
                if session.outbox.behind_since is not None:
                    break
                await asyncio.sleep(0)
            assert session.outbox.behind_since is not None, "the client never fell behind"
            started = session._beats  # heartbeats queued so far
            # Three periods of a stream the client does not read: updates are
            # conflated to one, and texts never are, so each heartbeat queued
            # would stay. At most one may slip in while the kernel takes a chunk.
            loop = asyncio.get_running_loop()
            until = loop.time() + 3.3
            while loop.time() < until:
                await stack.publish("HBS", 5.0, padding=padding)
                assert session.outbox.pending() <= 2
                await asyncio.sleep(0.05)
            assert session._beats - started <= 1, (started, session._beats)
            started = session._beats

            def seqs(frames: list[tuple[int, bytes]]) -> list[int]:
                return [json.loads(p)["seq"] for op, p in frames if op == 1 and b'"type":"heartbeat"' in p]

            frames: list[tuple[int, bytes]] = []
            for _ in range(10):  # reading again: the backlog, then the next heartbeats
                frames += await raw.drain(0.5)
                if seqs(frames) and seqs(frames)[-1] > started:
                    break
            got = seqs(frames)
            assert got and got[-1] > started, got
            assert got == list(range(got[0], got[0] + len(got)))
        finally:
            raw.close()


async def test_live_price_heartbeat_setting_gives_every_live_price_connection_a_heartbeat(clients: Any) -> None:
    """With LIVE_PRICE_HEARTBEAT=1 a /live-price client gets heartbeats without
    asking (and can turn them off with 0); Socket.IO connections do not (they
    have Engine.IO's heartbeat) unless their subscribe asks."""
    async with inprocess_stack("memory", live_price_heartbeat=1) as stack:
        ws = await clients.ws(stack.url)
        await ws.replies.wait_for(lambda _: len(heartbeats(ws)) >= 2, 2 + 2 * PROMPT, "2 heartbeats")
        assert [seq for seq, _ in heartbeats(ws)[:2]] == [1, 2]
        sio = await clients.sio(stack.url)
        await sio.subscribe({"symbols": ["HBX"]})
        heartbeats_ = services_of(stack).heartbeats
        assert heartbeats_.members() == 1
        await ask(ws, {"action": "subscribe", "heartbeat": 0})
        assert heartbeats_.members() == 0


async def test_socketio_subscribe_with_heartbeat_gets_heartbeat_events(memory_stack: Stack, clients: Any) -> None:
    """On Socket.IO the same subscribe field asks for `heartbeat` events `{"seq": N}`,
    numbered 1, 2, 3."""
    sio = await clients.sio(memory_stack.url)
    ack = await sio.subscribe({"symbols": ["HBY"], "heartbeat": 1})
    assert ack["ok"] is True
    bad = await sio.subscribe({"symbols": ["HBY"], "heartbeat": 0.5})
    assert bad["ok"] is False and bad["error"]["code"] == "invalid_payload"

    def beats(items: list[tuple]) -> list[Any]:
        return [args[0] for kind, *rest in items if kind == "event" for name, args in [rest] if name == "heartbeat"]

    await sio.timeline.wait_for(lambda items: len(beats(items)) >= 3, 3 + 2 * PROMPT, "3 heartbeat events")
    assert beats(sio.timeline.items)[:3] == [{"seq": 1}, {"seq": 2}, {"seq": 3}]
