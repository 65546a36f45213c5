"""What every command shares: logging options, error reporting, exit codes."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import click

from socklab.logs import configure_logging

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

log = logging.getLogger("socklab.cli")


def logging_options(func: F) -> F:
    """Add ``-v``, ``-q`` and ``--log-json`` to a command and configure logging from them."""

    @click.option("-v", "--verbose", is_flag=True, help="Also show DEBUG lines (the plumbing).")
    @click.option("-q", "--quiet", is_flag=True, help="Show only warnings and errors.")
    @click.option("--log-json", is_flag=True, help="Write log records as JSON lines.")
    @functools.wraps(func)
    def wrapper(*args: Any, verbose: bool, quiet: bool, log_json: bool, **kwargs: Any) -> Any:
        level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
        configure_logging(level, json_lines=log_json)
        return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


class Failed(click.ClickException):
    """A command failed for a reason already explained; ``exit_code`` says which."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click declares it on the class

    def show(self, file: Any = None) -> None:
        log.error("%s", self.message, extra={"function": "main"})
