"""Logging set-up: readable text, or one JSON object per line."""

from __future__ import annotations

import logging
import sys
import time

import orjson

LIBRARY_LOGGERS = ("socketio.server", "engineio.server")


# What every LogRecord carries; anything else came as `extra=` and is kept.
STANDARD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and any extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in STANDARD_ATTRIBUTES and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # A value JSON cannot hold is logged as its text rather than lost.
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str, fmt: str) -> None:
    """Everything to stderr at `level`, as text or (fmt="json") one JSON object per line."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log is one line per HTTP request; keep it out of INFO.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # python-socketio and python-engineio give their loggers a plain-text
    # handler of their own unless a level is already set: set the one they
    # would choose, so their errors come out once, in this format.
    for name in LIBRARY_LOGGERS:
        library = logging.getLogger(name)
        if library.level == logging.NOTSET:
            library.setLevel(logging.ERROR)
    # Python's warnings (deprecations, unclosed resources) in the same stream and format.
    logging.captureWarnings(True)
