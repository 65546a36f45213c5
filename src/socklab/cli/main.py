"""The ``socklab`` command: argv -> settings -> a server or a client. The only place that exits."""

from __future__ import annotations

import sys

import click

from socklab import __version__
from socklab.cli.atm import atm
from socklab.cli.bank import bank
from socklab.cli.bench import bench
from socklab.cli.check import check
from socklab.cli.demo import demo
from socklab.cli.exchange import exchange
from socklab.cli.serve import serve
from socklab.cli.textnum import numbers, text


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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
    """Run the command line; return the exit status instead of exiting."""
    try:
        status = cli.main(args=argv, prog_name="socklab", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    return status if isinstance(status, int) else 0


def entry_point() -> None:
    sys.exit(main())
