"""Socket.IO connection state recovery on python-socketio's server.

python-socketio has no such feature (checked against python-socketio 5.18.1),
so two things are added here, and only here, through the CONNECT-reply hooks of
`.socketio_internals.SocketIOHooks`:
- the CONNECT reply carries the session's `pid`;
- what a recovered session replays is queued only after that reply, so a
  client's first packet is always the CONNECT.
The offsets themselves ride on update frames (`Update.sio_recoverable`); the
saved state, the sent log and each symbol's position are in
stockstream.recovery; the session restores itself (`Session.restore`, on the
path every subscription starts on).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from ..broker import BackendUnavailable
from ..recovery import RecoveryState, SentLog, load_state, mark_live, positions, saved_streams, take_saved

if TYPE_CHECKING:
    from ..session import Session

log = logging.getLogger("stockstream.recovery")


@dataclass
class RecoveryStats:
    """Counters for /metrics."""

    recovered: int = 0
    not_recovered: int = 0
    saved: int = 0


async def recover(
    session: "Session", state: RecoveryState, auth: Any, stats: RecoveryStats, release: Callable[[str], Awaitable[None]]
) -> None:
    """Run in the connect handler: when the client names a pid it had, give
    the session back (same pid) or start fresh (a new one). `release`
    disconnects a Socket.IO sid on whichever instance holds it (see
    stockstream.recovery). Either way the pid is then noted as live here."""
    pid = auth.get("pid") if isinstance(auth, dict) else None
    if isinstance(pid, str) and pid:
        await _recover(session, state, pid, auth.get("offset"), stats, release)
    try:
        await mark_live(session.services.broker, state.pid, session.connection.id)
    except BackendUnavailable:
        pass  # a reconnect then finds no entry, as after an outage: a fresh session


async def _recover(
    session: "Session",
    state: RecoveryState,
    pid: str,
    offset: Any,
    stats: RecoveryStats,
    release: Callable[[str], Awaitable[None]],
) -> None:
    try:
        saved = load_state(await take_saved(session.services.broker, pid, release))
    except BackendUnavailable:
        saved = None
    streams = saved_streams(saved) if saved is not None else None
    points = positions(saved, offset) if saved is not None else None
    try:
        opener = await session.restore(streams, points) if streams is not None and points is not None else None
    except Exception:  # a recovery that fails must still leave a working, fresh session
        log.exception("session %s: recovery failed", pid)
        opener = None
    if opener is None or saved is None:
        stats.not_recovered += 1
        log.info("session %s not recovered: a fresh session starts", pid)
        return
    stats.recovered += 1
    state.pid = pid
    state.sent = SentLog.continuing(saved)
    state.opener = opener


async def save(session: "Session", state: RecoveryState, window: float, stats: RecoveryStats) -> None:
    """The connection dropped: keep its session for `window` seconds."""
    if session.closed:
        await forget(session, state)  # nothing left to save; its reconnect must not wait
        return
    if state.frozen:
        return
    data = state.sent.to_state(session.recoverable())
    state.frozen = True
    try:
        await session.services.broker.sessions.save(state.pid, data, window)
        stats.saved += 1
    except BackendUnavailable:
        log.warning("session %s not saved: the backend is unavailable", state.pid)


async def forget(session: "Session", state: RecoveryState) -> None:
    """The client disconnected itself: nothing to recover, and its reconnect
    (which still names the pid) must not wait for a save."""
    if state.frozen:
        return
    state.frozen = True
    try:
        await session.services.broker.sessions.take(state.pid)
    except BackendUnavailable:
        pass  # the entry expires by itself; a reconnect meanwhile waits SAVE_WAIT at most


class PidInConnectReply:
    """Mixed into the Socket.IO server: adds `pid` to the CONNECT reply of the
    main namespace and opens a recovered session's streams right after it."""

    def recovery_state(self, sid: str) -> RecoveryState | None:  # provided by the server
        raise NotImplementedError

    def connect_reply(self, sid: str, data: dict[str, Any]) -> dict[str, Any]:
        state = self.recovery_state(sid)
        return data if state is None else {**data, "pid": state.pid}

    def connect_reply_sent(self, sid: str) -> None:
        state = self.recovery_state(sid)
        if state is not None and state.opener is not None:
            opener, state.opener = state.opener, None
            opener()
