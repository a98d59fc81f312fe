"""`python -m stockstream token`: mint a development JWT with the configured key.

The JWT library is loaded when a token is minted, not when the command line is built."""

from __future__ import annotations

import argparse
import math
import sys

from ..config import Settings, SettingsError
from ..symbols import SymbolError, normalize_symbol


def _sub_argument(raw: str) -> str:
    if not raw.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return raw


def _symbols_argument(raw: str) -> list[str]:
    from ..auth import ALL_SYMBOLS

    parts = [p.strip() for p in raw.split(",") if p.strip()]
    if not parts:
        raise argparse.ArgumentTypeError("expected comma-separated symbols or *")
    try:
        return [p if p == ALL_SYMBOLS else normalize_symbol(p) for p in parts]
    except SymbolError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _ttl_argument(raw: str) -> float:
    try:
        ttl = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a number of seconds") from None
    if not math.isfinite(ttl) or ttl < 0:
        raise argparse.ArgumentTypeError("expected a number of seconds, 0 or more")
    return ttl


def add_token_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `python -m stockstream token`."""
    parser.add_argument("--sub", required=True, type=_sub_argument, help="user name (the sub claim)")
    parser.add_argument(
        "--symbols",
        type=_symbols_argument,
        help="comma-separated symbols the token may subscribe to, or * (default: all)",
    )
    parser.add_argument(
        "--ttl",
        type=_ttl_argument,
        default=3600.0,
        help="seconds until the token expires; 0 for never (default: 3600)",
    )
    parser.add_argument(
        "--publish",
        nargs="?",
        const=True,
        type=_symbols_argument,
        metavar="SYMBOLS",
        help="let the token publish prices (POST /api/publish): alone or * for every symbol,"
        " or comma-separated symbols (default: no publishing)",
    )
    parser.add_argument("--aud", help="audience claim (default: JWT_AUDIENCE)")
    parser.add_argument("--iss", help="issuer claim (default: JWT_ISSUER)")


def token_command(args: argparse.Namespace, settings: Settings) -> int:
    """Print a development token signed with the configured key."""
    from ..auth import mint_token

    try:
        token = mint_token(
            settings,
            args.sub,
            symbols=args.symbols,
            ttl=args.ttl if args.ttl > 0 else None,
            audience=args.aud,
            issuer=args.iss,
            publish=args.publish,
        )
    except SettingsError as exc:
        print(f"stockstream token: {exc}", file=sys.stderr)
        return 1
    print(token)
    return 0
