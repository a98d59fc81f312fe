"""Redis key and channel names: the two layouts, and that no module but
stockstream/broker/keys.py spells one."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from redis.crc import key_slot

import stockstream
from stockstream.broker.keys import ClusterKeyLayout, KeyLayout

PACKAGE = Path(stockstream.__file__).parent
# A Redis name: `stock:` or `stockstream:` followed by a name (not a message's "stockstream: ...").
NAME = re.compile(r"stock(stream)?:(?! )")


def test_single_redis_layout_is_the_original_one() -> None:
    """One Redis keeps the original design's names (`stock:SYM` is the snapshot
    key and the channel) and stockstream's own keys under `stockstream:`."""
    keys = KeyLayout()
    assert keys.channel("AAPL") == "stock:AAPL"
    assert keys.seq("AAPL") == "stock:AAPL:seq"
    assert keys.history("BRK.B") == "stock:BRK.B:history"
    assert keys.every_channel() == "stock:*"
    assert keys.symbol_of(b"stock:^GSPC") == "^GSPC"
    assert keys.session("p1") == "stockstream:session:p1"
    assert keys.listener_channel("i1") == "stockstream:listener:i1"
    assert keys.recorder_lock() == "stockstream:recorder"
    assert {keys.recorder_handoff(), keys.recorder_standby(), keys.recorder_epoch()} == {
        "stockstream:recorder:handoff",
        "stockstream:recorder:standby",
        "stockstream:recorder:epoch",
    }
    assert keys.dedupe("AAPL", "prices:0") == "stockstream:dedupe:prices:0"
    # A read of no symbols reads a key that never holds an update.
    assert keys.nothing() not in {keys.channel(s) for s in ("A", "AAPL")}


def test_cluster_layout_keeps_a_symbols_names_in_one_slot() -> None:
    """On a cluster every name of a symbol (its marker channel included)
    hashes to the symbol's slot, and the symbol is read back from any of its
    channels; a channel without the hash tag is refused."""
    keys = ClusterKeyLayout()
    for symbol in ("AAPL", "BRK.B", "^GSPC", "BTC-USD"):
        names = [
            keys.channel(symbol),
            keys.seq(symbol),
            keys.history(symbol),
            keys.dedupe(symbol, "prices:3"),
            keys.marker(symbol, "i1"),
        ]
        assert len({key_slot(n.encode()) for n in names}) == 1, names
        assert keys.symbol_of(keys.channel(symbol).encode()) == symbol
        assert keys.symbol_of_any(keys.marker(symbol, "i1")) == symbol
        assert keys.marker(symbol, "i1").encode().endswith(keys.marker_suffix("i1"))
    assert keys.every_channel() == "stock:{*}"
    with pytest.raises(UnicodeDecodeError):
        keys.symbol_of(b"stock:AAPL")


def _names_built_in(path: Path) -> list[str]:
    """String constants of a module that look like Redis names, docstrings left out."""
    tree = ast.parse(path.read_text(), str(path))
    docstrings = {
        id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
        and NAME.match(node.value)
    ]


def test_only_the_key_module_spells_redis_names() -> None:
    """No module outside broker/keys.py builds a `stock:`/`stockstream:` name
    itself, so the two layouts cannot drift apart from what the code uses."""
    keys_module = PACKAGE / "broker" / "keys.py"
    found = {
        str(p.relative_to(PACKAGE)): names
        for p in sorted(PACKAGE.rglob("*.py"))
        if p != keys_module and (names := _names_built_in(p))
    }
    assert found == {}
    # The check itself finds such a literal.
    assert _names_built_in(keys_module)
