"""TLS for every client: one place builds the context and explains what went wrong.

    tls = TlsOptions(cafile="lab-ca.pem")            # or TlsOptions() for the system's CAs
    sock = connect_tls(sock, "lab.example", 5050, tls, timeout_s=5)

The blocking clients (``JsonClient``, hence ``BankClient`` and the commands) call
``connect_tls``; the load generator passes ``client_context`` to ``create_connection`` and
``explain_tls_failure`` turns its errors into the same sentences. A server that does not
speak TLS, a certificate that is not trusted, and a plain server's refusal each become one
clear line.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass

from socklab.errors import LinkBroken, LinkTimeout, PeerProtocolError


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """How a client checks the server: against ``cafile`` (PEM), the system's CAs, or, with
    ``insecure``, not at all (encrypted, but anyone can pretend to be the server)."""

    cafile: str | None = None
    insecure: bool = False

    def __post_init__(self) -> None:
        if self.insecure and self.cafile is not None:
            raise ValueError("--insecure checks no certificate; it cannot go with --cafile")


class TlsConfigError(ValueError):
    """The client's TLS options cannot be used (an unreadable CA file)."""


def client_context(options: TlsOptions) -> ssl.SSLContext:
    """The context a client connects with. Raises ``TlsConfigError`` for a CA file that is
    missing or holds no certificate."""
    try:
        context = ssl.create_default_context(cafile=options.cafile)
    except FileNotFoundError:
        raise TlsConfigError(f"no such CA file: {options.cafile}") from None
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        reason = getattr(exc, "reason", None) or str(exc)
        raise TlsConfigError(f"cannot read the CA file {options.cafile}: {reason}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if options.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def explain_tls_failure(exc: BaseException, address: str) -> str:
    """One line saying why the TLS handshake with ``address`` failed."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = exc.verify_message or exc.reason or str(exc)
        return (
            f"the certificate of {address} is not trusted: {reason} "
            "(give its CA with --cafile, or --insecure to skip the check)"
        )
    if isinstance(exc, ssl.SSLError):
        return f"the server at {address} does not speak TLS (is it started with --tls-cert?)"
    if isinstance(exc, TimeoutError):
        return f"no TLS handshake with {address} within the timeout"
    return (
        f"the server at {address} closed the connection during the TLS handshake "
        "(does it speak TLS? is it started with --tls-cert?)"
    )


def connect_tls(
    sock: socket.socket, host: str, port: int, options: TlsOptions, *, timeout_s: float
) -> ssl.SSLSocket:
    """Wrap the connected ``sock`` in TLS and finish the handshake; ``sock`` is closed if it
    fails. Raises ``TlsConfigError``; ``PeerProtocolError`` when the server does not speak
    TLS or its certificate is not trusted (trying again would not help); ``LinkTimeout``;
    ``LinkBroken`` when the connection drops during the handshake."""
    address = f"{host}:{port}"
    try:
        context = client_context(options)
        sock.settimeout(timeout_s)
        return context.wrap_socket(sock, server_hostname=host)
    except TimeoutError as exc:
        sock.close()
        raise LinkTimeout(explain_tls_failure(exc, address)) from None
    except ssl.SSLError as exc:
        sock.close()
        code = "tls_untrusted" if isinstance(exc, ssl.SSLCertVerificationError) else "tls_failed"
        raise PeerProtocolError(code, explain_tls_failure(exc, address)) from None
    except OSError as exc:
        sock.close()
        raise LinkBroken(explain_tls_failure(exc, address)) from None
    except BaseException:
        sock.close()
        raise


def plain_refusal(data: bytes) -> str | None:
    """The server's one-line refusal at the start of a stream (``ERROR tls_required: ...``
    from a TLS port to a plain client), or ``None`` if ``data`` is not one."""
    if not data.startswith(b"ERROR "):
        return None
    line = data.split(b"\n", 1)[0].rstrip(b"\r")
    return line.decode("utf-8", "replace")[:300]
