"""Key and channel names of a symbol, for one Redis and for a Redis Cluster.

On one Redis a symbol's keys are `stock:AAPL`, `stock:AAPL:seq`,
`stock:AAPL:history` (the original layout). In a cluster every key and
channel of a symbol carries the symbol as its hash tag (`stock:{AAPL}`,
`stock:{AAPL}:seq`, ...), so the publish script's keys share one slot and
the symbol's sharded channel lives on the shard that owns its data.
"""
from __future__ import annotations

from ..symbols import CHANNEL_PREFIX


class KeyLayout:
    """The single-Redis layout."""

    cluster = False

    def channel(self, symbol: str) -> str:
        """The snapshot key, which is also the pub/sub channel."""
        return CHANNEL_PREFIX + symbol

    def seq(self, symbol: str) -> str:
        return self.channel(symbol) + ":seq"

    def history(self, symbol: str) -> str:
        return self.channel(symbol) + ":history"

    def dedupe(self, symbol: str, stream: str) -> str:
        """The last offset published from one partition of a source."""
        return f"stockstream:dedupe:{stream}"

    def every_channel(self) -> str:
        """The glob matching every symbol's snapshot key and channel (for
        PSUBSCRIBE and SCAN; it also matches other keys of a symbol, which
        `symbol_of` + the symbol pattern tell apart)."""
        return CHANNEL_PREFIX + "*"

    def new_symbols(self) -> str:
        """The channel (on a cluster a plain, cluster-wide one) on which stockstream's
        publishers announce a symbol's first update, for `*` subscriptions."""
        return "stockstream:new-symbols"

    def symbol_of(self, channel: bytes) -> str:
        """The symbol a channel name carries (raises UnicodeDecodeError)."""
        return channel[len(CHANNEL_PREFIX):].decode()


class ClusterKeyLayout(KeyLayout):
    """The cluster layout: the symbol in braces is each key's hash tag."""

    cluster = True

    def channel(self, symbol: str) -> str:
        return CHANNEL_PREFIX + "{" + symbol + "}"

    def every_channel(self) -> str:
        return CHANNEL_PREFIX + "{*}"

    def dedupe(self, symbol: str, stream: str) -> str:
        # Per symbol, so the check runs on the symbol's shard inside its script.
        return f"{self.channel(symbol)}:dedupe:{stream}"

    def marker(self, symbol: str, instance: str) -> str:
        """An instance's marker channel for reads of a symbol: in the
        symbol's slot, so the marker travels on the shard connection that
        carries the symbol's updates, in order with them."""
        return f"{self.channel(symbol)}:marker:{instance}"

    def symbol_of(self, channel: bytes) -> str:
        inner = channel[len(CHANNEL_PREFIX):]
        if not (inner.startswith(b"{") and inner.endswith(b"}")):
            raise UnicodeDecodeError("utf-8", channel, 0, len(channel), "not a stock:{SYMBOL} channel")
        return inner[1:-1].decode()


def layout_for(cluster: bool) -> KeyLayout:
    return ClusterKeyLayout() if cluster else KeyLayout()
