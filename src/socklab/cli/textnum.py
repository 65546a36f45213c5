"""``socklab text`` and ``socklab numbers``: the lab's two clients of Problem A, made robust.

With arguments, one request each; without, the lab's loop: ``Enter message: `` until
``!DISCONNECT``, end of input or Ctrl-C. Output mirrors the lab's server replies;
``--json`` prints each reply as a JSON line instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import click

from socklab.cli.common import EXIT_FAILURE, Failed, logging_options, refusal, report_error
from socklab.cli.tls import tls_client_options
from socklab.client.json_client import JsonClient
from socklab.client.tls import TlsOptions
from socklab.errors import LinkError, PeerProtocolError, RequestRejected
from socklab.protocol import DEFAULT_PORTS, envelope
from socklab.services.base import DISCONNECT_MESSAGE

PROMPT = "Enter message: "
NUMBER_OPS = ("check", "prime", "palindrome")

Request = tuple[str, dict[str, Any]]


def text_request(message: str) -> Request:
    return "convert", {"text": message}


def text_output(reply: dict[str, Any]) -> str:
    return f"[Lower Case] {reply['lower']} [Upper Case] {reply['upper']}"


def numbers_request(message: str) -> Request:
    """``121`` checks both; ``prime 97`` or ``palindrome 121`` just one (the lab's op names)."""
    words = message.split()
    if len(words) == 2 and words[0].lower() in NUMBER_OPS:
        return words[0].lower(), {"number": words[1]}
    return "check", {"number": message.strip()}


def numbers_output(reply: dict[str, Any]) -> str:
    parts = []
    if "prime" in reply:
        parts.append(f"[Prime] {reply['prime']}")
    if "palindrome" in reply:
        parts.append(f"[Palindrome] {reply['palindrome']}")
    return " ".join(parts)


def interactive_messages() -> Iterator[str]:
    """Lines typed at the lab's prompt, until ``!DISCONNECT``, end of input or Ctrl-C."""
    while True:
        try:
            message = input(PROMPT)
        except (EOFError, KeyboardInterrupt):
            click.echo()
            return
        if message == DISCONNECT_MESSAGE:
            return
        yield message


def converse(
    host: str,
    port: int,
    timeout: float,
    messages: Iterable[str],
    to_request: Callable[[str], Request],
    to_output: Callable[[dict[str, Any]], str],
    as_json: bool,
    tls: TlsOptions | None = None,
) -> int:
    """Send each message, print each answer; the exit status (1 if any was refused)."""
    status = 0
    try:
        with JsonClient.connect(host, port, timeout_s=timeout, tls=tls) as client:
            for message in messages:
                op, fields = to_request(message)
                try:
                    reply = client.request(op, **fields)
                except RequestRejected as exc:
                    status = EXIT_FAILURE
                    if as_json:
                        click.echo(json.dumps(envelope.error_reply(None, exc.code, exc.message)))
                    else:
                        report_error("%s", refusal(exc))
                    continue
                if as_json:
                    click.echo(json.dumps(envelope.ok_reply(None, reply), ensure_ascii=False))
                else:
                    click.echo(to_output(reply))
    except (LinkError, PeerProtocolError) as exc:
        raise Failed(str(exc)) from None
    return status


def _client_options(default_port: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        func = click.option("--json", "as_json", is_flag=True, help="Print replies as JSON lines.")(
            func
        )
        func = click.option(
            "--timeout",
            type=click.FloatRange(0.01),
            default=10.0,
            show_default=True,
            help="Seconds to wait for the server.",
        )(func)
        func = click.option(
            "--port", type=click.IntRange(1, 65535), default=default_port, show_default=True
        )(func)
        func = click.option(
            "--host", default="127.0.0.1", show_default=True, envvar="SOCKLAB_HOST"
        )(func)
        return logging_options(tls_client_options(func))

    return decorate


@click.command()
@click.argument("texts", nargs=-1)
@_client_options(DEFAULT_PORTS["text"])
def text(
    texts: tuple[str, ...],
    host: str,
    port: int,
    timeout: float,
    as_json: bool,
    tls: TlsOptions | None,
) -> int:
    """Lower- and upper-case each TEXT (or each line typed at the prompt)."""
    messages = texts or interactive_messages()
    return converse(host, port, timeout, messages, text_request, text_output, as_json, tls)


@click.command()
@click.argument("numbers", nargs=-1)
@_client_options(DEFAULT_PORTS["numbers"])
def numbers(
    numbers: tuple[str, ...],
    host: str,
    port: int,
    timeout: float,
    as_json: bool,
    tls: TlsOptions | None,
) -> int:
    """Is each N prime, is it a palindrome? At the prompt, `prime 97` asks just one."""
    messages = numbers or interactive_messages()
    return converse(host, port, timeout, messages, numbers_request, numbers_output, as_json, tls)
