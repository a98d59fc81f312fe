"""`python -m stockstream bench`: the benchmark, loaded only when its command runs.

The benchmark (`stockstream.bench`) is no part of the server: nothing else
imports it, and its measuring needs psutil, the `bench` extra. The command line
lists `bench` among the commands without loading it; `bench_arguments` declares
its options once the command is chosen.
"""

from __future__ import annotations

import argparse

from .extras import require

HELP = "load-test a server (or compare with the Node.js reference)"


def bench_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the benchmark's options on `parser` (this loads the benchmark)."""
    require("psutil", "bench", "the benchmark")
    from .. import bench

    bench.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from .. import bench

    return bench.main(args)
