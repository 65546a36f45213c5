"""The TLS options of the commands, defined once: ``--tls-cert``/``--tls-key`` for ``serve``,
``--tls``/``--cafile``/``--insecure`` for every client and ``bench``."""

from __future__ import annotations

import functools
import ssl
from collections.abc import Callable
from typing import Any, TypeVar

import click

from socklab.cli.common import EXIT_USAGE, Failed
from socklab.client.tls import TlsConfigError, TlsOptions, client_context
from socklab.server.tls import TlsSetupError, server_context

F = TypeVar("F", bound=Callable[..., Any])

CERT_ENV = "SOCKLAB_TLS_CERT"
KEY_ENV = "SOCKLAB_TLS_KEY"


def tls_server_options(func: F) -> F:
    """Add ``--tls-cert`` and ``--tls-key``; the command receives ``tls``: the server's
    ``ssl.SSLContext``, or ``None`` for plain TCP."""

    @click.option(
        "--tls-cert",
        type=click.Path(dir_okay=False),
        envvar=CERT_ENV,
        metavar="FILE",
        show_envvar=True,
        help="Serve TLS on every port with this certificate (PEM, chain included).",
    )
    @click.option(
        "--tls-key",
        type=click.Path(dir_okay=False),
        envvar=KEY_ENV,
        metavar="FILE",
        show_envvar=True,
        help="The certificate's private key (PEM, unencrypted).",
    )
    @functools.wraps(func)
    def wrapper(*args: Any, tls_cert: str | None, tls_key: str | None, **kwargs: Any) -> Any:
        return func(*args, tls=load_server_tls(tls_cert, tls_key), **kwargs)

    return wrapper  # type: ignore[return-value]


def load_server_tls(cert_file: str | None, key_file: str | None) -> ssl.SSLContext | None:
    """The server's context from the two files, or ``None`` if neither is given. Raises
    ``Failed`` when only one is given or they cannot be used."""
    if cert_file is None and key_file is None:
        return None
    if cert_file is None or key_file is None:
        raise Failed("TLS needs both --tls-cert and --tls-key", EXIT_USAGE)
    try:
        return server_context(cert_file, key_file)
    except TlsSetupError as exc:
        raise Failed(f"cannot serve TLS: {exc}") from None


def tls_client_options(func: F) -> F:
    """Add ``--tls``, ``--cafile`` and ``--insecure``; the command receives ``tls``: the
    ``TlsOptions`` to connect with, or ``None`` for plain TCP."""

    @click.option("--tls", "use_tls", is_flag=True, help="Connect over TLS.")
    @click.option(
        "--cafile",
        type=click.Path(dir_okay=False),
        metavar="FILE",
        help="With --tls: trust the CA certificates in FILE (PEM) instead of the system's.",
    )
    @click.option(
        "--insecure",
        is_flag=True,
        help="With --tls: do not check the server's certificate (testing only).",
    )
    @functools.wraps(func)
    def wrapper(
        *args: Any, use_tls: bool, cafile: str | None, insecure: bool, **kwargs: Any
    ) -> Any:
        return func(*args, tls=client_tls(use_tls, cafile, insecure), **kwargs)

    return wrapper  # type: ignore[return-value]


def client_tls(use_tls: bool, cafile: str | None, insecure: bool) -> TlsOptions | None:
    """The client's TLS options, checked now (a bad CA file is a usage error, before any
    connection). Raises ``Failed``."""
    if not use_tls:
        if cafile is not None or insecure:
            raise Failed("--cafile and --insecure go with --tls", EXIT_USAGE)
        return None
    try:
        options = TlsOptions(cafile=cafile, insecure=insecure)
        client_context(options)
    except (TlsConfigError, ValueError) as exc:
        raise Failed(str(exc), EXIT_USAGE) from None
    return options
