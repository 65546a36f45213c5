"""``socklab check SERVICE [HOST:]PORT``: the conformance suite for a lab server."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click
from rich.console import Console

from socklab.check.cases import DIALECTS, SERVICES, select, suite
from socklab.check.driver import Target, run_cases
from socklab.check.model import is_success
from socklab.check.report import as_json, as_junit, print_table
from socklab.cli.common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, Failed, logging_options


def parse_address(text: str) -> tuple[str, int]:
    """``"5050"`` or ``"host:5050"`` -> ``(host, port)``; ``click.BadParameter`` if not."""
    host, _, port_text = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise click.BadParameter(f"{text!r} is not [HOST:]PORT with a port 1..65535")
    return host, int(port_text)


@click.command()
@click.argument("service", type=click.Choice(SERVICES))
@click.argument("address", metavar="[HOST:]PORT")
@click.option(
    "--dialect",
    type=click.Choice(["lab", "line", "json", "original"]),
    help="The dialect to check in (default: lab; the exchange: seed 000's original format).",
)
@click.option(
    "--case",
    "case_ids",
    multiple=True,
    metavar="ID",
    help="Run only this case, or every case under this prefix (e.g. lab/framing); repeatable.",
)
@click.option("--strict", is_flag=True, help="Warnings fail too.")
@click.option(
    "--timeout",
    type=click.FloatRange(0.05),
    default=3.0,
    show_default=True,
    help="Seconds each wait in a case (a connection, a reply, a close) may take.",
)
@click.option("--json", "json_out", is_flag=True, help="Print the results as JSON.")
@click.option(
    "--junit",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Also write a JUnit XML report to this file.",
)
@click.option(
    "--allow-terminate",
    is_flag=True,
    help="Run destructive cases (an out-of-range exchange number stops the server), last.",
)
@click.option(
    "--account",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Bank account the bank cases use (its balance changes).",
)
@click.option("--pin", default="1234", show_default=True, help="That account's 4-digit PIN.")
@logging_options
def check(
    service: str,
    address: str,
    dialect: str | None,
    case_ids: tuple[str, ...],
    strict: bool,
    timeout: float,
    json_out: bool,
    junit: Path | None,
    allow_terminate: bool,
    account: int,
    pin: str,
) -> int:
    """Check a server of SERVICE at [HOST:]PORT against the labs' protocols.

    Exit status 0 only when every required case passes (and, with --strict, none warns).
    """
    host, port = parse_address(address)
    chosen = dialect or DIALECTS[service][0]
    if not (len(pin) == 4 and pin.isascii() and pin.isdigit()):
        raise Failed("--pin must be 4 digits", EXIT_USAGE)
    try:
        cases = select(suite(service, chosen), case_ids)
    except ValueError as exc:
        raise Failed(str(exc), EXIT_USAGE) from exc
    target = Target(host, port, service, chosen, timeout_s=timeout, account=account, pin=pin)
    results = asyncio.run(run_cases(target, cases, allow_terminate=allow_terminate))
    name = f"{service} at {host}:{port} ({chosen})"
    if json_out:
        click.echo(
            as_json(
                {"service": service, "host": host, "port": port, "dialect": chosen},
                results,
                strict=strict,
            )
        )
    else:
        console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 110)
        print_table(console, name, results, strict=strict)
    if junit is not None:
        junit.write_text(as_junit(f"socklab-check.{service}", results, strict=strict), "utf-8")
    return EXIT_OK if is_success(results, strict=strict) else EXIT_FAILURE
