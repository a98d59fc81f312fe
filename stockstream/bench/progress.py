"""The one-line progress display while a benchmark runs (on stderr)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

# Without a terminal every line stays in the log: show fewer of them.
PLAIN_INTERVAL_S = 5.0


class Progress:
    """Rewrites one line on a terminal; elsewhere (CI logs, pipes) prints plain lines."""

    def __init__(self, enabled: bool = True, stream: TextIO = sys.stderr) -> None:
        self.enabled = enabled
        self.stream = stream
        self.tty = stream.isatty()
        self._shown = 0  # length of the line on screen, to blank it out
        self._last_plain = 0.0

    def update(self, text: str) -> None:
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r" + text.ljust(self._shown))
            self._shown = len(text)
        else:
            now = time.monotonic()
            if now - self._last_plain < PLAIN_INTERVAL_S:
                return
            self._last_plain = now
            self.stream.write(text + "\n")
        self.stream.flush()

    def clear(self) -> None:
        if self.tty and self._shown:
            self.stream.write("\r" + " " * self._shown + "\r")
            self.stream.flush()
        self._shown = 0

    def log(self, text: str) -> None:
        """A line that stays (even with progress disabled)."""
        self.clear()
        self.stream.write(text + "\n")
        self.stream.flush()
