"""``socklab serve``: run one, several or all of the services in this process."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import logging
import signal
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import click

from socklab.cli.common import EXIT_USAGE, Failed, db_option, ledger_url, logging_options, to_cents
from socklab.cli.tls import tls_server_options
from socklab.errors import StorageError
from socklab.ledger import LedgerSettings
from socklab.logs import fn
from socklab.money import format_cents
from socklab.protocol import DEFAULT_PORTS
from socklab.server.runtime import Limits, Listener, run, serve_until
from socklab.server.workers import Supervisor, reserve_port
from socklab.services.registry import (
    DEFAULT_LOGIN_BURST,
    DEFAULT_LOGIN_RATE_PER_S,
    SERVICES,
    BankOptions,
    ExchangeOptions,
    NumbersOptions,
    Registry,
    ServiceOptions,
)

log = logging.getLogger("socklab.cli")
DEFAULT_LIMITS = Limits()
DEFAULT_LEDGER = LedgerSettings()
SERVE_NAMES = (*SERVICES.names, "web")
"""The TCP services, then ``web`` (the HTTP side, which drives the others in-process)."""


@dataclass(frozen=True, slots=True)
class ServeSettings:
    """Everything `socklab serve` was told, each option defined once (on the command)."""

    services: tuple[str, ...]
    host: str
    ports: Mapping[str, int]
    limits: Limits
    options: Mapping[str, ServiceOptions]
    """Each chosen service's typed options (a service missing here gets its defaults)."""
    reuse_port: bool = False
    tls: ssl.SSLContext | None = None
    registry: Registry = SERVICES


def listeners(settings: ServeSettings) -> list[Listener]:
    """One listener per chosen service, built by the registry. Raises what ``build`` raises."""
    tcp = tuple(name for name in settings.services if name != "web")
    services = settings.registry.build_all(tcp, settings.options)
    return [
        Listener(
            service,
            settings.host,
            settings.ports[service_name],
            settings.limits,
            reuse_port=settings.reuse_port,
            tls=settings.tls,
        )
        for service_name, service in zip(tcp, services, strict=True)
    ]


async def serve_forever(settings: ServeSettings) -> None:
    """Serve until SIGINT/SIGTERM, or until every service has stopped by itself."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(signum: int) -> None:
        log.info("Received %s, shutting down", signal.Signals(signum).name, extra=fn("serve"))
        stop.set()

    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        if "web" in settings.services:
            from socklab.web.serve import serve_with_web

            await serve_with_web(
                listeners(settings),
                stop,
                host=settings.host,
                port=settings.ports["web"],
                tls=settings.tls,
                reuse_port=settings.reuse_port,
            )
        else:
            await serve_until(listeners(settings), stop)
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)


@click.command()
@click.argument("services", nargs=-1, type=click.Choice(SERVE_NAMES))
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    envvar="SOCKLAB_HOST",
    help="Address to listen on (0.0.0.0 serves a lab network).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    envvar="SOCKLAB_PORT",
    help="Port, with exactly one service (0 picks a free one). Default: the service's.",
)
@click.option(
    "--port-base",
    type=click.IntRange(1, 65535),
    envvar="SOCKLAB_PORT_BASE",
    metavar="N",
    help="Shift every port, for a shared machine: exchange N, text N+1, numbers N+2, "
    "bank N+3, web N+4 (whichever services run).",
)
@click.option(
    "--web-port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORTS["web"],
    show_default=True,
    envvar="SOCKLAB_WEB_PORT",
    help="web: the port of the ATM page, dashboard and /metrics (HTTP).",
)
@click.option(
    "--name", default="Socklab Server", show_default=True, help="exchange: the server's name."
)
@click.option("--seed", type=int, help="exchange: seed of the random numbers (reproducible runs).")
@click.option(
    "--on-out-of-range",
    type=click.Choice(["terminate", "reject"]),
    default="terminate",
    show_default=True,
    help="exchange: what a number outside 1..100 does.",
)
@click.option(
    "--max-digits",
    type=click.IntRange(1),
    default=10_000,
    show_default=True,
    help="numbers: the largest number of digits checked.",
)
@db_option
@click.option(
    "--fail-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="bank: share of money requests that fail on purpose (the seed's random failures).",
)
@click.option(
    "--fail-mode",
    type=click.Choice(["reject", "lose-reply"]),
    default="reject",
    show_default=True,
    help="bank: reject (nothing applied, client told) or lose-reply (applied, then the "
    "connection drops before the reply).",
)
@click.option("--fail-seed", type=int, help="bank: seed of the injected failures.")
@click.option(
    "--max-amount",
    callback=to_cents,
    metavar="AMOUNT",
    default=format_cents(DEFAULT_LEDGER.max_amount_cents),
    show_default=True,
    help="bank: the largest amount of one deposit, withdrawal or transfer.",
)
@click.option(
    "--max-failed-logins",
    type=click.IntRange(1),
    default=DEFAULT_LEDGER.max_failed_logins,
    show_default=True,
    help="bank: wrong PINs from one address that lock an account for that address.",
)
@click.option(
    "--max-account-failed-logins",
    type=click.IntRange(1),
    default=DEFAULT_LEDGER.max_account_failed_logins,
    show_default=True,
    help="bank: wrong PINs from all addresses together that lock an account for everyone "
    "(the backstop against guessing from many addresses).",
)
@click.option(
    "--lockout",
    type=click.FloatRange(0),
    default=DEFAULT_LEDGER.lockout_s,
    show_default=True,
    help="bank: seconds an account stays locked (for one address, or for all).",
)
@click.option(
    "--login-rate",
    type=click.FloatRange(0, min_open=True),
    default=DEFAULT_LOGIN_RATE_PER_S,
    show_default=True,
    help="bank: logins per second from one client address, once its burst is spent.",
)
@click.option(
    "--login-burst",
    type=click.IntRange(1),
    default=DEFAULT_LOGIN_BURST,
    show_default=True,
    help="bank: logins one client address may make at once.",
)
@click.option(
    "--no-group-commit",
    is_flag=True,
    help="bank: one database transaction per posting (for benchmarks; slower).",
)
@click.option(
    "--max-message-bytes",
    type=click.IntRange(64),
    default=DEFAULT_LIMITS.max_message_bytes,
    show_default=True,
    help="Largest message accepted.",
)
@click.option(
    "--idle-timeout",
    type=click.FloatRange(0.01),
    default=DEFAULT_LIMITS.idle_timeout_s,
    show_default=True,
    help="Seconds before a silent connection is closed.",
)
@click.option(
    "--partial-timeout",
    type=click.FloatRange(0.01),
    default=DEFAULT_LIMITS.partial_timeout_s,
    show_default=True,
    help="Seconds a message may take to arrive completely.",
)
@click.option(
    "--max-connections",
    type=click.IntRange(1),
    default=DEFAULT_LIMITS.max_connections,
    show_default=True,
    help="Connections per service; more are refused.",
)
@click.option(
    "--max-connections-per-ip",
    type=click.IntRange(1),
    default=DEFAULT_LIMITS.max_connections_per_ip,
    show_default=True,
    help="Connections per service from one client address (a lab behind one NAT shares one).",
)
@click.option(
    "--max-buffered-bytes",
    type=click.IntRange(128),
    default=DEFAULT_LIMITS.max_buffered_bytes,
    show_default=True,
    help="Unanswered input bytes one service holds for all its connections; past it, the "
    "connection holding the most is closed (server_busy).",
)
@click.option(
    "--shutdown-grace",
    type=click.FloatRange(0),
    default=DEFAULT_LIMITS.shutdown_grace_s,
    show_default=True,
    help="Seconds in-flight requests get to finish at shutdown.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    help="Worker processes sharing each port (SO_REUSEPORT), under a supervisor.",
)
@logging_options
@tls_server_options
def serve(
    services: tuple[str, ...],
    host: str,
    port: int | None,
    port_base: int | None,
    max_message_bytes: int,
    idle_timeout: float,
    partial_timeout: float,
    max_connections: int,
    max_connections_per_ip: int,
    max_buffered_bytes: int,
    shutdown_grace: float,
    workers: int,
    tls: ssl.SSLContext | None,
    web_port: int,
    **options: Any,
) -> int:
    """Serve SERVICES (default: all five) until SIGINT or SIGTERM.

    \b
    exchange  8000  name and number exchange (seed 000)
    text      5050  lower and upper case of a line of text
    numbers   5051  prime and palindrome checks
    bank      5052  the ATM's bank, on a durable ledger
    web       8080  ATM page, playground, dashboard, /metrics (HTTP)
    """
    chosen = tuple(dict.fromkeys(services)) or SERVE_NAMES
    if "web" in chosen and importlib.util.find_spec("aiohttp") is None:
        if services:
            raise Failed("the web service needs aiohttp: pip install 'socklab[web]'", EXIT_USAGE)
        chosen = SERVICES.names  # all by default: all that is installed
    if "web" in chosen and workers > 1:  # browser sessions live in one process
        if services:
            raise Failed("the web service runs in one process: use --workers 1", EXIT_USAGE)
        chosen = SERVICES.names
    tcp = tuple(name for name in chosen if name != "web")
    only_web = not tcp
    try:
        ports = SERVICES.ports(tcp, port=None if only_web else port, port_base=port_base)
    except ValueError as exc:
        raise Failed(str(exc), EXIT_USAGE) from None
    if "web" in chosen:
        if port is not None and not only_web:
            raise Failed(
                "--port needs exactly one service; each service has its own port", EXIT_USAGE
            )
        if only_web and port is not None:
            ports["web"] = port
        elif port_base is not None:  # web after the TCP services: N+4
            ports["web"] = port_base + len(SERVICES.names)
        else:
            ports["web"] = web_port
    try:
        limits = Limits(
            max_message_bytes=max_message_bytes,
            idle_timeout_s=idle_timeout,
            partial_timeout_s=partial_timeout,
            max_connections=max_connections,
            shutdown_grace_s=shutdown_grace,
            max_connections_per_ip=max_connections_per_ip,
            max_buffered_bytes=max_buffered_bytes,
        )
    except ValueError as exc:
        raise Failed(f"--max-buffered-bytes: {exc}", EXIT_USAGE) from None
    settings = ServeSettings(
        services=chosen,
        host=host,
        ports=ports,
        limits=limits,
        options=service_options(chosen, options),
        tls=tls,
    )
    try:
        if workers > 1:
            return serve_with_workers(settings, workers)
        run(lambda: serve_forever(settings))
    except OSError as exc:
        raise Failed(f"cannot listen on {host}: {exc.strerror or exc}") from None
    except (ValueError, StorageError) as exc:
        raise Failed(f"cannot open the ledger: {exc}") from None
    return 0


def service_options(chosen: tuple[str, ...], given: dict[str, Any]) -> dict[str, ServiceOptions]:
    """The typed options of the chosen services, from the command's values. Raises
    ``Failed`` (usage) for values the options refuse."""
    options: dict[str, ServiceOptions] = {}
    try:
        if "exchange" in chosen:
            out_of_range: Literal["terminate", "reject"] = given["on_out_of_range"]
            options["exchange"] = ExchangeOptions(given["name"], given["seed"], out_of_range)
        if "numbers" in chosen:
            options["numbers"] = NumbersOptions(given["max_digits"])
        if "bank" in chosen:
            options["bank"] = BankOptions(
                db=ledger_url(given["db"]),
                ledger=LedgerSettings(
                    max_amount_cents=given["max_amount"],
                    max_failed_logins=given["max_failed_logins"],
                    max_account_failed_logins=given["max_account_failed_logins"],
                    lockout_s=given["lockout"],
                    group_commit=not given["no_group_commit"],
                ),
                fail_rate=given["fail_rate"],
                fail_mode=given["fail_mode"],
                fail_seed=given["fail_seed"],
                login_rate_per_s=given["login_rate"],
                login_burst=given["login_burst"],
            )
    except ValueError as exc:
        raise Failed(str(exc), EXIT_USAGE) from None
    return options


def serve_with_workers(settings: ServeSettings, workers: int) -> int:
    """Fork ``workers`` processes that share each port, and supervise them."""
    for name in settings.services:
        options = settings.options.get(name)
        reason = options.one_process_reason() if options is not None else None
        if reason:
            raise Failed(reason, EXIT_USAGE)
    reserved = [reserve_port(settings.host, settings.ports[name]) for name in settings.services]
    try:
        ports = {
            name: sock.getsockname()[1]
            for name, sock in zip(settings.services, reserved, strict=True)
        }
        shared = dataclasses.replace(settings, ports=ports, reuse_port=True)
        supervisor = Supervisor(
            workers,
            lambda: run(lambda: serve_forever(shared)),
            grace_s=settings.limits.shutdown_grace_s,
        )
        return supervisor.run()
    finally:
        for sock in reserved:
            sock.close()
