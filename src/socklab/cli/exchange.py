"""``socklab exchange``: the client of seed 000, which checks everything the server says."""

from __future__ import annotations

import logging

import click

from socklab.cli.common import EXIT_FAILURE, Failed, logging_options
from socklab.cli.tls import tls_client_options
from socklab.client.exchange import check_server_reply
from socklab.client.json_client import JsonClient
from socklab.client.tls import TlsOptions
from socklab.errors import LinkError, PeerProtocolError, RequestRejected
from socklab.protocol import DEFAULT_PORTS, envelope
from socklab.services.exchange import MAX_NUMBER, MIN_NUMBER, parse_number_text, validate_name

log = logging.getLogger("socklab.client")
SEND = {"function": "send_message"}
PROMPT = f"Enter an integer between {MIN_NUMBER} and {MAX_NUMBER}: "


def ask_number() -> int:
    """Prompt until the user types an integer (in range or not: that is the server's call)."""
    while True:
        text = input(PROMPT)
        try:
            return parse_number_text(text)
        except RequestRejected:
            click.echo(f"{text.strip()[:30]!r} is not an integer; try again.", err=True)


@click.command()
@click.argument("number", required=False)
@click.option("--name", default="Socklab Client", show_default=True, help="This client's name.")
@click.option("--host", default="127.0.0.1", show_default=True, envvar="SOCKLAB_HOST")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=DEFAULT_PORTS["exchange"], show_default=True
)
@click.option(
    "--timeout",
    type=click.FloatRange(0.01),
    default=5.0,
    show_default=True,
    help="Seconds to wait for the server.",
)
@tls_client_options
@logging_options
def exchange(
    number: str | None, name: str, host: str, port: int, timeout: float, tls: TlsOptions | None
) -> int:
    """Send NAME and NUMBER to the exchange server and check its answer.

    Without NUMBER, asks for one. A number outside 1..100 is still sent: that is how the
    exchange server is told to terminate.
    """
    try:
        client_name = validate_name(name)
        client_number = ask_number() if number is None else parse_number_text(number)
    except RequestRejected as exc:
        raise Failed(exc.message) from None
    except EOFError:
        raise Failed("no number given") from None
    try:
        with JsonClient.connect(host, port, timeout_s=timeout, tls=tls) as client:
            log.debug("Connected to server at %s:%s", host, port, extra=SEND)
            fields = {"client_name": client_name, "client_number": client_number}
            if not MIN_NUMBER <= client_number <= MAX_NUMBER:
                client.send(envelope.request("exchange", None, fields))
                log.warning("The integer input out of range. Terminating the server", extra=SEND)
                return 0
            reply = client.request("exchange", **fields)
    except RequestRejected as exc:
        raise Failed(f"the server refused: {exc.message} ({exc.code})") from None
    except (LinkError, PeerProtocolError) as exc:
        raise Failed(str(exc)) from None
    try:
        answer = check_server_reply(reply, client_number)
    except ValueError as exc:
        raise Failed(f"invalid reply from the server: {exc}", EXIT_FAILURE) from None
    log.info("%s | %s", client_name, answer.server_name, extra=SEND)
    log.info(
        "Client Number: %d | Server Number: %d | Sum: %d",
        client_number,
        answer.server_number,
        answer.total,
        extra=SEND,
    )
    return 0
