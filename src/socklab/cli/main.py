"""The ``socklab`` command: argv -> settings -> a server or a client. The only place that exits."""

from __future__ import annotations

import sys

import click

from socklab import __version__
from socklab.cli.atm import atm
from socklab.cli.bank import bank
from socklab.cli.bench import bench
from socklab.cli.check import check
from socklab.cli.common import forget_logging, options_anywhere, report_error
from socklab.cli.demo import demo
from socklab.cli.exchange import exchange
from socklab.cli.serve import serve
from socklab.cli.textnum import numbers, text


class SocklabGroup(click.Group):
    """The top-level group: hands each command its arguments in the order click needs
    (``options_anywhere``), so options may follow a subcommand and ``-5`` is a number."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        if command is not None:
            rest = options_anywhere(command, rest, ctx)
        return name, command, rest


@click.group(
    cls=SocklabGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="socklab")
def cli() -> None:
    """socklab: the socket-programming lab systems, as real software.

    Servers: exchange (port 8000), text (5050), numbers (5051), bank (5052).
    Start them all with `socklab serve`; talk to them with the client commands.
    """


cli.add_command(serve)
cli.add_command(exchange)
cli.add_command(text)
cli.add_command(numbers)
cli.add_command(bench)
cli.add_command(atm)
cli.add_command(bank)
cli.add_command(demo)
cli.add_command(check)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status instead of exiting.

    Every failure, a usage error included, is one ``[ERROR] [main]: ...`` line on stderr.
    """
    forget_logging()
    try:
        status = cli.main(args=argv, prog_name="socklab", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("", err=True)
        return 130
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        report_error("%s%s", exc.format_message().rstrip("."), hint)
        return exc.exit_code
    except click.ClickException as exc:
        report_error("%s", exc.format_message())
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    return status if isinstance(status, int) else 0


def entry_point() -> None:
    sys.exit(main())
