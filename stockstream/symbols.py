"""Symbol names: case-insensitive on input, uppercased on output."""

from __future__ import annotations

import re

SYMBOL_PATTERN = re.compile(r"[A-Z0-9^][A-Z0-9.\-_/:=^]{0,31}")


class SymbolError(ValueError):
    """Not a valid symbol."""


def normalize_symbol(raw: object) -> str:
    """Return the canonical (uppercased) symbol, or raise SymbolError."""
    if not isinstance(raw, str):
        raise SymbolError("a symbol is a string")
    symbol = raw.upper()
    if not SYMBOL_PATTERN.fullmatch(symbol):
        raise SymbolError(f"not a valid symbol: {raw[:40]!r}")
    return symbol
