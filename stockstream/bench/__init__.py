"""`python -m stockstream bench`: a load generator and benchmark for stockstream deployments.

The command line calls `add_arguments(parser)` to declare the options and
`main(args)` to run; see cli.py.
"""

from .cli import add_arguments, main

__all__ = ["add_arguments", "main"]
