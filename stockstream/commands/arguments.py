"""Arguments several commands share."""

from __future__ import annotations

import argparse
from typing import Any, Callable

from ..config import SettingsError, parse_setting


def setting_type(name: str) -> Callable[[str], Any]:
    """argparse type that parses like the environment variable does."""

    def parse(raw: str) -> Any:
        try:
            return parse_setting(name, raw)
        except SettingsError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def add_flag(parser: argparse.ArgumentParser, option: str, help: str) -> None:
    """A switch that turns its setting on; left out, the environment decides."""
    parser.add_argument(option, action="store_const", const=True, default=None, help=help)


def add_redis_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--redis-url",
        type=setting_type("redis_url"),
        help="Redis URL (REDIS_URL); without it and REDIS_HOST: the embedded backend",
    )
    add_flag(parser, "--redis-cluster", "the Redis URL names a node of a Redis Cluster (REDIS_CLUSTER)")
