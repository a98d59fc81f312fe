"""History for third-party publishers: their updates recorded by one elected instance.

A publisher that does the original `SET` + `PUBLISH stock:X` bypasses the
atomic publish, so its updates reach clients but not the symbol's history
stream. The instance holding a Redis lock pattern-subscribes to every price
channel and appends the updates that carry no `seq` (the project's own
publisher adds one, and has already stored those) to the history stream.

Why a single elected recorder rather than every instance recording and
deduplicating: a pattern subscription carries the traffic of every symbol, and
only one instance should pay for that.

Why it never records an update twice: every tenure holds a fresh random token,
and the append script refuses to write unless the lock still holds that token
(fencing). A new leader subscribes only after taking the lock, so it sees only
updates published after the previous tenure ended; the previous leader, even if
it stalled past its lease and still has old messages buffered, can no longer
write them. The price of that guarantee is a short window without recording
after a crash: up to the lock's lease.

A clean stop hands over without that window, since a client recovering its
session across the stop needs every update in history: the leader asks for
a successor (KeyLayout.recorder_handoff) and records on; a standby subscribes, says it is
ready, and waits for the lock while buffering. Only then does the leader stop
and release the lock. The successor's buffer overlaps what the leader
recorded last; both subscriptions see the messages in the same order, so the
successor skips, per symbol, what is up to the newest entry history already
holds, and records the rest. With no standby around, the leader just stops.

Every recorded entry carries the recording's epoch (field `e`): a tenure that
starts without a handoff (the first, or after a crash or a lone stop) begins
a new one, a successor keeps its predecessor's. Entries of one symbol with
different epochs may have a gap between them, and a replay across them is
not complete.

Recorded entries get the id `{max(timestamp, newest entry's ms)}-*`, so ids
keep growing. They are appended as they arrive: when one symbol has both kinds
of publishers, history holds them in recording order, which may put a
third-party update a moment after an atomic one published just after it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ...backoff import Backoff
from ...config import Settings
from ...updates import InvalidUpdate, parse_update
from ..clients import recorder_client
from ..keys import KeyLayout

log = logging.getLogger("stockstream.recorder")

# A stopping leader's request for a successor (its token) is answered
# READY + the successor's token (keys: KeyLayout.recorder_*).
READY = b"ready:"
# The lease bounds the failover window after a crash; renewing four times per
# lease rides out a few missed renewals. Standbys poll the lock, which bounds
# the window after a clean stop (the leader then releases it at once).
LOCK_TTL_MS = 2000
RENEW_EVERY = 0.5
STANDBY_POLL = 0.25
# A stop does not wait longer than this for Redis to take the lock back.
RELEASE_TIMEOUT = 1.0
# A standby marks itself for this long at each poll (a few polls' worth).
STANDBY_TTL_MS = 1000
# A stopping leader waits this long at most for a successor to be ready (a
# standby notices the request within a poll); the successor waits for the
# lock as long as a crashed leader's lease could last.
HANDOFF_WAIT = 1.0
HANDOFF_CHECK_EVERY = 0.02
# A stopping recorder's loop notices within one read (at most a second).
STOP_WAIT = 2.0
# Messages appended per round trip when they arrive in bursts.
BATCH = 256
# A silent subscription is probed after PROBE_AFTER seconds and counts as
# dead after DEAD_AFTER without any answer (as the listener does).
PROBE_AFTER = 5.0
DEAD_AFTER = 15.0

# Returns 1 when appended, -1 when this tenure no longer holds the lock.
APPEND_SCRIPT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local ms = tonumber(ARGV[3])
local newest = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)[1]
if newest then
  local newest_ms = tonumber(string.match(newest[1], '^(%d+)'))
  if newest_ms > ms then ms = newest_ms end
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], string.format('%d', ms) .. '-*', 'u', ARGV[2], 'e', ARGV[6])
redis.call('XTRIM', KEYS[2], 'MINID', '~', ARGV[5])
return 1
"""

RENEW_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# Answers a stopping leader's request (ARGV[1], its token) once: 1 when this
# standby is now its successor.
CLAIM_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""

RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class LostLock(Exception):
    """This tenure's lock expired or was taken over."""


class HistoryRecorder:
    """Elects itself (or waits) and, while leading, records third-party updates."""

    def __init__(self, url: str, settings: Settings, keys: KeyLayout) -> None:
        self._settings = settings
        self._keys = keys
        self._redis = recorder_client(url)
        self._append = self._redis.register_script(APPEND_SCRIPT)
        self._renew = self._redis.register_script(RENEW_SCRIPT)
        self._release = self._redis.register_script(RELEASE_SCRIPT)
        self._claim = self._redis.register_script(CLAIM_SCRIPT)
        # The token of the tenure this instance leads, if it does.
        self._tenure: str | None = None
        self._epoch = 0
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        # Until Redis first answers, an unreachable Redis is the listener's to report.
        self._reached = False
        self.leading = False
        self.recorded = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="stockstream-history-recorder")

    async def close(self) -> None:
        if self._task is not None:
            if self._tenure is not None:
                await self._hand_over(self._tenure)
            # Asked to stop as well as cancelled: redis-py's reads with a
            # timeout can swallow a cancellation that lands as their timeout
            # fires, which a recorder busy with a stream makes likely; the
            # loop then stops at its next check.
            self._stopping = True
            self._task.cancel()
            await asyncio.wait([self._task], timeout=STOP_WAIT)
            while not self._task.done():
                self._task.cancel()
                await asyncio.wait([self._task], timeout=0.1)
            self._task = None
        await self._redis.aclose()

    async def _run(self) -> None:
        backoff = Backoff(initial=0.2, cap=5.0)
        while not self._stopping:
            try:
                token = secrets.token_hex(16)
                acquired = await self._redis.set(self._keys.recorder_lock(), token, nx=True, px=LOCK_TTL_MS)
                self._reached = True
                if acquired:
                    await self._lead(token, await self._redis.incr(self._keys.recorder_epoch()))
                else:
                    await self._stand_by(token)
                self._failing = False
                backoff.reset()
                await asyncio.sleep(STANDBY_POLL)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the recorder must outlive any failure
                # One warning per outage; the retries of the same outage go to debug.
                unreached = not self._reached and isinstance(exc, (RedisConnectionError, RedisTimeoutError))
                (log.debug if self._failing or unreached else log.warning)("history recorder: %s", exc)
                self._failing = True
                await asyncio.sleep(backoff.next())

    async def _lead(
        self, token: str, epoch: int, pubsub: Any = None, backlog: list[dict[str, Any]] | None = None
    ) -> None:
        """One tenure: record until the lock is lost, then let it go. A
        successor comes with its subscription and what it buffered meanwhile."""
        self.leading = True
        self._tenure = token
        self._epoch = epoch
        log.info("recording third-party updates into history on this instance")
        keeper = asyncio.create_task(self._keep_lock(token))
        try:
            if pubsub is None:
                pubsub = self._redis.pubsub()
                await pubsub.psubscribe(self._keys.every_channel())
            if backlog:
                await self._record(token, await self._unrecorded(backlog))
            heard = time.monotonic()
            while not keeper.done() and not self._stopping:
                messages, answered = await _read_burst(pubsub)
                now = time.monotonic()
                if answered:
                    heard = now
                elif now - heard > DEAD_AFTER:
                    raise ConnectionError("the recorder's subscription stopped answering")
                elif now - heard > PROBE_AFTER:
                    await pubsub.ping()
                if messages:
                    await self._record(token, messages)
            if keeper.done():
                keeper.result()
        except LostLock:
            log.info("no longer recording history: the lock moved to another instance")
        finally:
            self.leading = False
            self._tenure = None
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
            if pubsub is not None:
                await _close_quietly(pubsub)
            await asyncio.shield(self._let_go(token))

    # -- handing over on a clean stop ---------------------------------------------

    async def _hand_over(self, token: str) -> None:
        """Ask a standby to take over and wait, recording on, until it is
        subscribed (see the module docstring). Bounded; never raises."""
        try:
            if not await self._redis.exists(self._keys.recorder_standby()):
                return
            await self._redis.set(self._keys.recorder_handoff(), token, px=int(HANDOFF_WAIT * 2000))
            deadline = time.monotonic() + HANDOFF_WAIT
            while time.monotonic() < deadline and self.leading:
                answer: Any = await self._redis.get(self._keys.recorder_handoff())
                if answer is not None and answer.startswith(READY):
                    return
                await asyncio.sleep(HANDOFF_CHECK_EVERY)
            log.info("no instance took over recording history within %.1f s", HANDOFF_WAIT)
        except Exception as exc:  # noqa: BLE001 - a stop goes on without a successor
            log.debug("history recorder could not hand over: %s", exc)

    async def _stand_by(self, token: str) -> None:
        """A standby's poll: mark itself, and answer a stopping leader's request."""
        await self._redis.set(self._keys.recorder_standby(), token, px=STANDBY_TTL_MS)
        request: Any = await self._redis.get(self._keys.recorder_handoff())
        if request is None or request.startswith(READY):
            return
        pubsub = self._redis.pubsub()
        handed = False
        try:
            await pubsub.psubscribe(self._keys.every_channel())
            backlog: list[dict[str, Any]] = []
            while True:  # subscribed once confirmed; price messages come only after
                message = await pubsub.get_message(timeout=HANDOFF_WAIT)
                if message is None:
                    return
                if message["type"] in (b"psubscribe", "psubscribe"):
                    break
            if not await self._claim(
                keys=[self._keys.recorder_handoff()], args=[request, READY + token.encode(), int(HANDOFF_WAIT * 2000)]
            ):
                return  # another standby answered first
            deadline = time.monotonic() + LOCK_TTL_MS / 1000 + HANDOFF_WAIT
            while time.monotonic() < deadline and not self._stopping:
                if await self._redis.set(self._keys.recorder_lock(), token, nx=True, px=LOCK_TTL_MS):
                    handed = True
                    await self._lead(
                        token, int(await self._redis.get(self._keys.recorder_epoch()) or 0), pubsub, backlog
                    )
                    return
                message = await pubsub.get_message(timeout=HANDOFF_CHECK_EVERY)
                while message is not None:
                    if message["type"] in (b"pmessage", "pmessage"):
                        backlog.append(message)
                    message = await pubsub.get_message(timeout=0)
            if not self._stopping:
                log.warning("history recorder: the stopping leader did not release its lock")
        finally:
            if not handed:
                await _close_quietly(pubsub)

    async def _unrecorded(self, backlog: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The messages a successor buffered that its predecessor did not
        record: per symbol, those after the newest one history holds."""
        # Only updates without a seq are recorded (and compared): the atomic
        # publish stored the others in history itself, in its own order.
        backlog = [m for m in backlog if b'"seq":' not in m["data"]]
        by_channel: dict[bytes, list[bytes]] = {}
        for message in backlog:
            by_channel.setdefault(message["channel"], []).append(message["data"])
        skip: dict[bytes, int] = {}
        for channel, datas in by_channel.items():
            symbol = self._keys.recorded_symbol(channel)
            buffered = {data: i for i, data in enumerate(datas)}  # the last occurrence of each
            newest: Any = await self._redis.xrevrange(self._keys.history(symbol), "+", "-", count=len(datas) + 16)
            for _, fields in newest:
                if fields.get(b"u") in buffered:
                    skip[channel] = buffered[fields[b"u"]] + 1
                    break
        kept = []
        for message in backlog:
            channel = message["channel"]
            if skip.get(channel, 0) > 0:
                skip[channel] -= 1
                continue
            kept.append(message)
        return kept

    async def _keep_lock(self, token: str) -> None:
        held_until = time.monotonic() + LOCK_TTL_MS / 1000
        while True:
            await asyncio.sleep(RENEW_EVERY)
            try:
                renewed = await self._renew(keys=[self._keys.recorder_lock()], args=[token, LOCK_TTL_MS])
            except Exception as exc:  # retried until the lease runs out
                if time.monotonic() >= held_until:
                    raise LostLock() from exc
                continue
            if not renewed:
                raise LostLock()
            held_until = time.monotonic() + LOCK_TTL_MS / 1000

    async def _record(self, token: str, messages: list[dict[str, Any]]) -> None:
        if not messages:
            return
        settings = self._settings
        horizon = max(0, int(time.time() * 1000 - settings.history_max_age * 1000))
        async with self._redis.pipeline(transaction=False) as pipe:
            count = 0
            for message in messages:
                if b'"seq":' in message["data"]:
                    continue  # published atomically, already in history: skip the parse
                symbol = self._keys.recorded_symbol(message["channel"])
                try:
                    update = parse_update(message["data"], symbol)
                except InvalidUpdate:
                    continue  # the listeners count and log malformed messages
                if update.seq is not None:
                    continue  # published atomically, already in history
                await self._append(
                    keys=[self._keys.recorder_lock(), self._keys.history(update.symbol)],
                    args=[token, update.raw, update.timestamp, settings.history_max_entries, horizon, self._epoch],
                    client=pipe,
                )
                count += 1
            if not count:
                return
            results = await pipe.execute()
        self.recorded += sum(1 for r in results if r == 1)
        if any(r == -1 for r in results):
            raise LostLock()

    async def _let_go(self, token: str) -> None:
        """Release the lock at once so a standby takes over without waiting for the lease."""
        try:
            await asyncio.wait_for(self._release(keys=[self._keys.recorder_lock()], args=[token]), RELEASE_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - the lease expires on its own
            log.debug("history recorder could not release its lock: %s", exc)


async def _read_burst(pubsub: Any) -> tuple[list[dict[str, Any]], bool]:
    """The price messages waiting (at most BATCH), after waiting up to a second
    for the first; and whether the connection said anything at all."""
    messages: list[dict[str, Any]] = []
    answered = False
    message = await pubsub.get_message(timeout=1.0)
    while message is not None:
        answered = True
        if message["type"] in (b"pmessage", "pmessage"):
            messages.append(message)
            if len(messages) >= BATCH:
                break
        message = await pubsub.get_message(timeout=0)
    return messages, answered


async def _close_quietly(pubsub: Any) -> None:
    try:
        await pubsub.aclose()
    except Exception:  # noqa: BLE001 - closing a broken connection may fail; nothing to do
        pass
