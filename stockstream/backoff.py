"""Capped exponential backoff with jitter, for loops that must never die."""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, initial: float = 0.1, cap: float = 10.0, factor: float = 2.0) -> None:
        self._initial = initial
        self._cap = cap
        self._factor = factor
        self._current = initial

    def next(self) -> float:
        """The next delay: doubles up to the cap; jitter keeps instances apart."""
        delay = self._current
        self._current = min(self._cap, self._current * self._factor)
        return delay * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self._current = self._initial
