"""Reads placed in the stream by their marker (broker/redis/markers.py), without Redis:
the marker goes last in the read's transaction, on the channel of its variant, and
a read answers its position once the listener meets the marker, or BackendUnavailable."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from stockstream.broker import BackendUnavailable
from stockstream.broker.keys import ClusterKeyLayout, KeyLayout
from stockstream.broker.redis.markers import ListenerMarkers, Markers, ShardMarkers


class FakePipeline:
    """Records the queued commands; EXEC answers one reply per command (or fails)."""

    def __init__(self, fail: bool) -> None:
        self.commands: list[tuple[str, tuple[Any, ...]]] = []
        self._fail = fail

    async def __aenter__(self) -> FakePipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        return lambda *args: self.commands.append((name, args))

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        if self._fail:
            raise RedisConnectionError("connection lost")
        return [f"reply-{n}" for n in range(len(self.commands))]


class FakeClient:
    def __init__(self, fail: bool = False) -> None:
        self.pipelines: list[FakePipeline] = []
        self._fail = fail

    def pipeline(self, transaction: bool) -> FakePipeline:
        assert transaction, "a read and its marker run in one MULTI/EXEC"
        self.pipelines.append(FakePipeline(self._fail))
        return self.pipelines[-1]


async def test_one_redis_marker_follows_the_read_on_the_listener_channel() -> None:
    """On one Redis the marker is a PUBLISH on the instance's listener channel,
    after the read's commands; the read's replies leave the marker's out, and
    the read stands at the position the listener reports when it meets the marker."""
    markers = ListenerMarkers(KeyLayout(), "i1")
    client = FakeClient()
    async with markers.reading() as tokens:
        replies = await markers.read(client, "AAPL", lambda pipe: pipe.get("stock:AAPL"), tokens)
    assert replies == ["reply-0"]
    commands = client.pipelines[0].commands
    assert commands == [("get", ("stock:AAPL",)), ("publish", ("stockstream:listener:i1", tokens[0]))]
    assert markers.listener_channels() == ["stockstream:listener:i1"]
    assert markers.is_marker(b"stockstream:listener:i1") and not markers.is_marker(b"stock:AAPL")
    waiting = asyncio.create_task(markers.position(tokens[0]))
    await asyncio.sleep(0)
    markers.meet(tokens[0], lambda: 41)
    assert await asyncio.wait_for(waiting, 5) == 41
    # Met and read: nothing is left pending.
    with pytest.raises(BackendUnavailable):
        await markers.position(tokens[0])


async def test_cluster_marker_lives_in_the_symbols_slot() -> None:
    """On a cluster the marker is an SPUBLISH on the symbol's own marker channel,
    which the listener subscribes before the symbol's channel."""
    keys = ClusterKeyLayout()
    markers = ShardMarkers(keys, "i1")
    client = FakeClient()
    async with markers.reading() as tokens:
        await markers.read(client, "MSFT", lambda pipe: pipe.get(keys.channel("MSFT")), tokens)
    assert client.pipelines[0].commands[-1] == ("spublish", (keys.marker("MSFT", "i1"), tokens[0]))
    assert markers.channels_of("MSFT") == [keys.marker("MSFT", "i1")]
    assert markers.listener_channels() == []
    assert markers.is_marker(keys.marker("MSFT", "i1").encode())


async def test_a_failed_read_forgets_its_markers_and_reports_unavailable() -> None:
    """A Redis failure during a read raises BackendUnavailable and leaves no
    marker pending (a listener meeting it later resolves nothing)."""
    markers: Markers = ListenerMarkers(KeyLayout(), "i1")
    sent: list[bytes] = []
    with pytest.raises(BackendUnavailable):
        async with markers.reading() as tokens:
            sent = tokens
            await markers.read(FakeClient(fail=True), "AAPL", lambda pipe: pipe.get("stock:AAPL"), tokens)
    assert len(sent) == 1
    with pytest.raises(BackendUnavailable):
        await markers.position(sent[0])


async def test_failing_a_symbols_reads_leaves_the_others_waiting() -> None:
    """A shard reader that restarts fails exactly the reads of its symbols; the
    others still get their position; failing everything fails the rest."""
    markers = ShardMarkers(ClusterKeyLayout(), "i1")
    tokens: dict[str, list[bytes]] = {"A": [], "B": [], "C": []}
    for symbol, sent in tokens.items():
        await markers.read(FakeClient(), symbol, lambda pipe: None, sent)
    a, b, c = (asyncio.create_task(markers.position(tokens[s][0])) for s in "ABC")
    await asyncio.sleep(0)
    markers.fail_symbols({"A"}, "shard reader restarted")
    markers.meet(tokens["B"][0], lambda: 7)
    assert await asyncio.wait_for(b, 5) == 7
    with pytest.raises(BackendUnavailable, match="shard reader restarted"):
        await a
    assert not c.done()
    markers.fail_all("listener disconnected")
    with pytest.raises(BackendUnavailable, match="listener disconnected"):
        await c
