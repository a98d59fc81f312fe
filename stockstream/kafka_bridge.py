"""Kafka ingest bridge (under construction)."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap")
    parser.add_argument("--topic")
    parser.add_argument("--group")


def main(args, settings) -> int:
    raise RuntimeError("not yet available")
