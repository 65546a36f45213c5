"""What every command shares: logging options, the ledger option, error reporting, exit
codes, and the argument order every command accepts (options anywhere)."""

from __future__ import annotations

import functools
import itertools
import logging
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from socklab.errors import RequestRejected
from socklab.logs import configure_logging, fn
from socklab.money import parse_amount
from socklab.services.registry import default_ledger_path, resolve_ledger_url

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

DB_ENV = "SOCKLAB_DB"

log = logging.getLogger("socklab.cli")

_logging_configured = False
"""Whether a command configured logging in this run (``main`` resets it)."""


def logging_options(func: F) -> F:
    """Add ``-v``, ``-q`` and ``--log-json`` to a command and configure logging from them."""

    @click.option("-v", "--verbose", is_flag=True, help="Also show DEBUG lines (the plumbing).")
    @click.option("-q", "--quiet", is_flag=True, help="Show only warnings and errors.")
    @click.option("--log-json", is_flag=True, help="Write log records as JSON lines.")
    @functools.wraps(func)
    def wrapper(*args: Any, verbose: bool, quiet: bool, log_json: bool, **kwargs: Any) -> Any:
        global _logging_configured
        level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
        configure_logging(level, json_lines=log_json)
        _logging_configured = True
        return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


# -- errors: one format for every command ----------------------------------------------


def forget_logging() -> None:
    """A new run of the command line: logging is not configured by it yet."""
    global _logging_configured
    _logging_configured = False


def report_error(message: str, *args: object, function: str = "main") -> None:
    """Say what went wrong, the way every command does: one ``[ERROR] [main]: ...`` line on
    stderr, a log record (JSON with ``--log-json``). Works before the command has
    configured logging (a usage error): then with the default format."""
    if not _logging_configured:
        configure_logging(logging.INFO)
    log.error(message, *args, extra=fn(function))


def refusal(exc: RequestRejected) -> str:
    """A refused request, as every client prints it: ``message (code)``."""
    return f"{exc.message} ({exc.code})"


class Failed(click.ClickException):
    """A command failed for a reason already explained; ``exit_code`` says which."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click declares it on the class

    def show(self, file: Any = None) -> None:
        report_error("%s", self.message)


# -- options shared by commands -----------------------------------------------------------


def db_option(func: F) -> F:
    """``--db URL`` (env ``SOCKLAB_DB``) as ``db``; ``None`` when not given (see
    ``ledger_url``)."""
    return click.option(
        "--db",
        envvar=DB_ENV,
        metavar="URL",
        help="The ledger: sqlite:///path.db or postgresql://user@host/db "
        f"[default: {default_ledger_path()}; env {DB_ENV}]",
    )(func)


def ledger_url(db: str | None) -> str:
    """The ledger URL ``--db`` names, or the default SQLite file's. Raises ``Failed`` if
    the default file's directory cannot be created."""
    try:
        return resolve_ledger_url(db)
    except OSError as exc:
        where = default_ledger_path().parent
        raise Failed(f"cannot create {where}: {exc.strerror or exc}") from None


def to_cents(ctx: click.Context, param: click.Parameter, value: Any) -> int:
    """Option callback: an amount like ``12.50`` to cents (``click.BadParameter`` if not)."""
    if isinstance(value, int):
        return value
    try:
        return parse_amount(str(value))
    except RequestRejected as exc:
        raise click.BadParameter(exc.message, ctx=ctx, param=param) from None


def is_terminal() -> bool:
    """Whether stdout is a terminal (rich tables, colours) rather than a pipe."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


# -- options anywhere ---------------------------------------------------------------------

NEGATIVE_NUMBER = re.compile(r"-[0-9][0-9.,]*")
"""What looks like an option to click but is a number: ``-5``, ``-12.50``."""


def _options_by_name(command: click.Command, ctx: click.Context) -> dict[str, click.Option]:
    return {
        name: param
        for param in command.get_params(ctx)
        if isinstance(param, click.Option)
        for name in (*param.opts, *param.secondary_opts)
    }


def _takes_value(option: click.Option) -> bool:
    return not (option.is_flag or option.count)


def _split(
    args: Sequence[str], options: dict[str, click.Option], *, stop_at_positional: bool
) -> tuple[list[str], list[str]]:
    """``args`` as (option tokens with their values, the rest), in their order."""
    taken: list[str] = []
    rest: list[str] = []
    tokens = iter(enumerate(args))
    for n, token in tokens:
        if token == "--":
            rest.extend(args[n:])
            break
        option = options.get(token.partition("=")[0]) if token.startswith("-") else None
        if option is None:
            if stop_at_positional and not token.startswith("-"):
                rest.extend(args[n:])
                break
            rest.append(token)
            continue
        taken.append(token)
        if _takes_value(option) and "=" not in token:
            taken.extend(value for _, value in itertools.islice(tokens, max(option.nargs, 1)))
    return taken, rest


def options_anywhere(command: click.Command, args: list[str], ctx: click.Context) -> list[str]:
    """``args`` of ``command`` reordered so that click reads them as a user means them.

    - A group's options may follow its subcommand (``atm balance --port 5052``): they are
      moved before it, unless the subcommand has an option of that name.
    - A negative number is an argument, not an option (``atm deposit -5``): the
      arguments go after ``--`` so that the command can refuse the amount clearly.
    """
    if isinstance(command, click.Group):
        group_options = _options_by_name(command, ctx)
        head, rest = _split(args, group_options, stop_at_positional=True)
        if not rest or rest[0] == "--" or rest[0].startswith("-"):
            return args
        name, sub_args = rest[0], rest[1:]
        sub = command.get_command(ctx, name)
        if sub is None:
            return args
        own = _options_by_name(sub, ctx)
        hoistable = {
            k: v
            for k, v in group_options.items()
            if k not in own and k not in ctx.help_option_names
        }
        moved, sub_rest = _split(sub_args, hoistable, stop_at_positional=False)
        return [*head, *moved, name, *_negatives_as_arguments(sub, sub_rest, ctx)]
    return _negatives_as_arguments(command, args, ctx)


def _negatives_as_arguments(
    command: click.Command, args: list[str], ctx: click.Context
) -> list[str]:
    if isinstance(command, click.Group) or "--" in args:
        return args
    options = _options_by_name(command, ctx)
    taken: list[str] = []
    positional: list[str] = []
    negative = False
    tokens = iter(args)
    for token in tokens:
        option = options.get(token.partition("=")[0]) if token.startswith("-") else None
        if option is not None:
            taken.append(token)
            if _takes_value(option) and "=" not in token:
                taken.extend(itertools.islice(tokens, max(option.nargs, 1)))
        elif NEGATIVE_NUMBER.fullmatch(token):
            negative = True
            positional.append(token)
        elif token.startswith("-"):
            taken.append(token)  # an unknown option: click names it
        else:
            positional.append(token)
    if not negative:
        return args
    return [*taken, "--", *positional]
