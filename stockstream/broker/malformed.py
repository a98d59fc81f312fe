"""Counting and rate-limited logging of messages that are not valid updates."""

from __future__ import annotations

import logging
import time

LOG_EVERY = 10.0


class MalformedLog:
    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self.count = 0
        self._suppressed = 0
        self._last_logged = float("-inf")

    def record(self, channel: bytes, reason: Exception) -> None:
        """Count one dropped message; log at most one line per LOG_EVERY seconds."""
        self.count += 1
        now = time.monotonic()
        if now - self._last_logged < LOG_EVERY:
            self._suppressed += 1
            return
        shown = channel[:80].decode(errors="replace")
        extra = f" ({self._suppressed} more since the last report)" if self._suppressed else ""
        self._logger.warning("dropped a malformed message on %s: %s%s", shown, reason, extra)
        self._last_logged = now
        self._suppressed = 0
