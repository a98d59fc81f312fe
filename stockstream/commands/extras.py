"""Optional dependencies: a command that needs an extra says how to install it.

The server needs none of them; `pip install "stockstream[kafka]"` adds aiokafka
(the Kafka bridge and `--kafka` producers), `pip install "stockstream[bench]"`
adds psutil (the benchmark).
"""

from __future__ import annotations

import importlib


class MissingExtra(RuntimeError):
    """A command's optional dependency is not installed."""


def require(module: str, extra: str, what: str) -> None:
    """Import `module`, or raise MissingExtra naming the extra that installs it."""
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(
            f"{what} needs {module}, which is not installed here: "
            f'pip install "stockstream[{extra}]" (from a checkout: pip install ".[{extra}]")'
        ) from exc
