"""The cluster listener's wait for its shards: every shard read in turn until the awaited
messages are in, and a silence past the deadline is a lost connection (no Redis needed)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from stockstream.broker.redis.shards import ShardListener


class FakeShard:
    """A shard's pub/sub: hands out its queued messages, then None (nothing within the timeout)."""

    def __init__(self, *messages: dict[str, Any]) -> None:
        self.messages = list(messages)
        self.reads = 0

    async def get_message(self, timeout: float) -> dict[str, Any] | None:
        self.reads += 1
        return self.messages.pop(0) if self.messages else None


async def test_polling_reads_every_shard_until_nothing_is_pending() -> None:
    """Messages of all shards reach the handler in turn; polling stops once the handler emptied `pending`,
    even when one shard is silent throughout."""
    busy = FakeShard({"channel": "a"}, {"channel": "b"})
    quiet = FakeShard()
    pending = {"a", "b"}
    seen: list[str] = []

    def handle(message: dict[str, Any]) -> None:
        seen.append(message["channel"])
        pending.discard(message["channel"])

    await ShardListener._poll_shards({"n1": busy, "n2": quiet}, pending, handle, time.monotonic() + 10, "lost")
    assert seen == ["a", "b"] and not pending
    assert (busy.reads, quiet.reads) == (2, 2)


async def test_silent_shards_past_the_deadline_raise() -> None:
    """A round where no shard answers after the deadline raises ConnectionError with the given text."""
    with pytest.raises(ConnectionError, match="did not confirm"):
        await ShardListener._poll_shards(
            {"n1": FakeShard()}, {"x"}, lambda m: None, time.monotonic() - 1, "shards did not confirm"
        )
