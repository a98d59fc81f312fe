"""The command-line front ends of the features.

`stockstream.cli` builds the parser and dispatches; each module here turns
arguments into calls of a feature module (auth, kafka_bridge, ...), which never
imports the command line itself.
"""
