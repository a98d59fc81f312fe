"""Every Redis key and channel name stockstream uses, for one Redis and for a Redis Cluster.

On one Redis a symbol's keys are `stock:AAPL`, `stock:AAPL:seq`,
`stock:AAPL:history` (the original layout). In a cluster every key and
channel of a symbol carries the symbol as its hash tag (`stock:{AAPL}`,
`stock:{AAPL}:seq`, ...), so the publish script's keys share one slot and
the symbol's sharded channel lives on the shard that owns its data.

The instance-wide names (recovery sessions, the history recorder's election,
listener marker channels, new-symbol announcements) live under
`stockstream:`. This module is the only one that spells these names
(tests/test_key_names.py checks it).
"""

from __future__ import annotations

# The original design's prefix of a symbol's snapshot key and channel.
CHANNEL_PREFIX = "stock:"
# stockstream's own keys and channels.
OWN_PREFIX = "stockstream:"


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
        return f"{OWN_PREFIX}dedupe:{stream}"

    def every_channel(self) -> str:
        """The glob matching every symbol's snapshot key and channel (for
        PSUBSCRIBE and SCAN; it also matches other keys of a symbol, which
        `symbol_of` + the symbol pattern tell apart)."""
        return CHANNEL_PREFIX + "*"

    def new_symbols(self) -> str:
        """The channel (on a cluster a plain, cluster-wide one) on which stockstream's
        publishers announce a symbol's first update, for `*` subscriptions."""
        return OWN_PREFIX + "new-symbols"

    def symbol_of(self, channel: bytes) -> str:
        """The symbol a channel name carries (raises UnicodeDecodeError)."""
        return channel[len(CHANNEL_PREFIX) :].decode()

    def recorded_symbol(self, channel: bytes) -> str:
        """The symbol of a channel the history recorder heard, undecodable
        bytes replaced (parsing the update then rejects it)."""
        return channel[len(CHANNEL_PREFIX) :].decode(errors="replace")

    def nothing(self) -> str:
        """A key no update is stored under: what a read of no symbols reads,
        so its transaction still has a command before its marker."""
        return CHANNEL_PREFIX

    # -- one instance's listener -----------------------------------------------

    def listener_channel(self, instance: str) -> str:
        """An instance's own channel, subscribed even with no symbols (see
        broker/redis/listener.py): read markers on one Redis travel on it."""
        return f"{OWN_PREFIX}listener:{instance}"

    # -- recoverable sessions ----------------------------------------------------

    def session(self, pid: str) -> str:
        """A disconnected Socket.IO session's saved state."""
        return f"{OWN_PREFIX}session:{pid}"

    # -- the history recorder's election (broker/redis/recorder.py) ------------

    def recorder_lock(self) -> str:
        return OWN_PREFIX + "recorder"

    def recorder_handoff(self) -> str:
        """A stopping leader's request for a successor."""
        return OWN_PREFIX + "recorder:handoff"

    def recorder_standby(self) -> str:
        """The mark that a standby is polling."""
        return OWN_PREFIX + "recorder:standby"

    def recorder_epoch(self) -> str:
        return OWN_PREFIX + "recorder:epoch"


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

    def marker_suffix(self, instance: str) -> bytes:
        """How every marker channel of `instance` ends."""
        return f":marker:{instance}".encode()

    def symbol_of_any(self, channel: str) -> str:
        """The symbol of one of its channels, its marker channel included."""
        return self.symbol_of(channel.split(":marker:", 1)[0].encode())

    def symbol_of(self, channel: bytes) -> str:
        inner = channel[len(CHANNEL_PREFIX) :]
        if not (inner.startswith(b"{") and inner.endswith(b"}")):
            raise UnicodeDecodeError("utf-8", channel, 0, len(channel), "not a stock:{SYMBOL} channel")
        return inner[1:-1].decode()


def layout_for(cluster: bool) -> KeyLayout:
    return ClusterKeyLayout() if cluster else KeyLayout()
