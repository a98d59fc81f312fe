"""SIGTERM and SIGINT for a command that must stop cleanly whenever it is told to.

`asyncio`'s `loop.add_signal_handler` only exists once the event loop runs, and
`remove_signal_handler` puts back the default action (die at once): a signal
that arrives while the process is still importing and setting up, or while it
is closing its connections, would kill it without its last words. A
`StopSignals` catches both signals from the moment it is created until the
process exits; a stop asked for before anyone listens is remembered.
"""

from __future__ import annotations

import asyncio
import signal
from types import FrameType
from typing import Callable

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self._listener: Callable[[], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        for sig in SIGNALS:
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.received = signal.Signals(signum)
        if self._listener is not None and self._loop is not None and not self._loop.is_closed():
            # Python runs signal handlers between bytecodes of the main thread,
            # which may be the event loop's own code: hand the stop to the loop.
            self._loop.call_soon_threadsafe(self._listener)

    def listen(self, stop: Callable[[], None]) -> None:
        """Call `stop` (in the running event loop) on a signal; at once if one came already."""
        self._loop = asyncio.get_running_loop()
        self._listener = stop
        if self.received is not None:
            stop()

    def forget(self) -> None:
        """Stop calling the listener; later signals are still caught (and only remembered)."""
        self._listener = None
        self._loop = None
