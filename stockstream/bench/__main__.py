"""`python -m stockstream.bench`: the benchmark without the rest of the command line."""

import argparse
import sys

from . import add_arguments, main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m stockstream.bench")
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
