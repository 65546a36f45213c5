"""Logging in the seeds' format: ``[LEVEL] [function]: message``.

One configuration for every command, built on the standard ``logging`` module. INFO is the
conversation, DEBUG the plumbing (``-v``), WARNING and ERROR problems. Colour only when the
stream is a terminal; ``json_lines=True`` writes one JSON object per record instead.

A log call may name the function the line belongs to with ``extra=fn("start_server")``;
otherwise the name of the calling Python function is used.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, TextIO

_COLOURS = {
    logging.DEBUG: "\x1b[2m",
    logging.INFO: "\x1b[32m",
    logging.WARNING: "\x1b[33m",
    logging.ERROR: "\x1b[31m",
    logging.CRITICAL: "\x1b[1;31m",
}
_RESET = "\x1b[0m"


def fn(name: str) -> dict[str, str]:
    """``extra=`` for a log call that speaks for the function ``name``."""
    return {"function": name}


def host_port(host: str, port: int | str) -> str:
    """``127.0.0.1:5050``; an IPv6 address in brackets, ``[::1]:5050``, so the port reads apart."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _function(record: logging.LogRecord) -> str:
    return str(getattr(record, "function", record.funcName))


class SeedFormatter(logging.Formatter):
    """``[INFO] [handle_client]: Client Number: 25 | Server Number: 10 | Sum: 35``."""

    def __init__(self, *, colour: bool = False) -> None:
        super().__init__()
        self.colour = colour

    def format(self, record: logging.LogRecord) -> str:
        level = f"[{record.levelname}]"
        if self.colour:
            level = f"{_COLOURS.get(record.levelno, '')}{level}{_RESET}"
        line = f"{level} [{_function(record)}]: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, function, message."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": record.created,
            "level": record.levelname,
            "logger": record.name,
            "function": _function(record),
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(
    level: int = logging.INFO, *, json_lines: bool = False, stream: TextIO | None = None
) -> None:
    """Send socklab's log records to ``stream`` (stderr by default), replacing older handlers."""
    stream = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(stream)
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(SeedFormatter(colour=_is_terminal(stream)))
    root = logging.getLogger("socklab")
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
