"""TLS for the server: the certificate, the first-byte check, and the encrypting layer.

How this works: a TLS listener accepts plain TCP like any other, and the connection's very
first byte decides. ``0x16`` is a TLS handshake record (a ClientHello): the connection is
upgraded in place (``start_server_tls``) and the dialect is detected later, on the first
decrypted bytes. Anything else gets one plain line, ``ERROR tls_required: ...``, and is
closed; on a plain listener a ClientHello gets ``ERROR tls_not_enabled: ...`` instead
(``first_byte_error``).

``loop.start_tls`` cannot be used for the upgrade: the ClientHello has already been read
to look at its first byte, and ``start_tls`` would wait for it forever. So ``TlsLayer``
drives an ``ssl.SSLObject`` over two memory buffers itself: it becomes the protocol of the
raw transport, decrypts what arrives into the connection's ``data_received``, and hands the
connection a ``TlsTransport`` whose ``write`` encrypts. The connection code is the same
for both. A handshake must finish, and a TLS record must arrive whole, within the
partial-message timeout; a failed handshake is logged once and closed. Neither can crash
the server or hold up other connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from typing import Any

from socklab.errors import PeerProtocolError
from socklab.logs import fn

log = logging.getLogger(__name__)

TLS_HANDSHAKE = 0x16
"""The first byte of a TLS handshake record: every TLS client starts with one."""

READ_BYTES = 256 * 1024
RECORD_HEADER_BYTES = 5


class TlsSetupError(ValueError):
    """The certificate or the key cannot be used."""


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A server context for ``cert_file`` (PEM, chain included) and ``key_file`` (PEM).

    Raises ``TlsSetupError`` when a file is missing or unreadable, the key is encrypted,
    or the key does not match the certificate.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_RENEGOTIATION  # TLS 1.2 renegotiation: a CPU-cost lever

    def no_password() -> str:
        raise TlsSetupError(f"the key {key_file} is encrypted; give an unencrypted key")

    for path in (cert_file, key_file):
        if not os.path.isfile(path):
            raise TlsSetupError(f"no such file: {path}")
    try:
        context.load_cert_chain(cert_file, key_file, password=no_password)
    except TlsSetupError:
        raise
    except OSError as exc:
        # ssl.SSLError is an OSError too: a file that is not PEM, or a key for another cert.
        reason = getattr(exc, "reason", None) or exc.strerror or str(exc)
        raise TlsSetupError(
            f"cannot use the certificate {cert_file} with the key {key_file}: {reason}"
        ) from None
    return context


def first_byte_error(first: int, *, is_tls_port: bool) -> PeerProtocolError | None:
    """What a connection whose first byte is ``first`` is told, or ``None`` if it may go on:
    a plain client on a TLS port, or a TLS client on a plain port."""
    is_hello = first == TLS_HANDSHAKE
    if is_tls_port and not is_hello:
        return PeerProtocolError(
            "tls_required", "this port speaks TLS; connect with --tls", fatal=True
        )
    if is_hello and not is_tls_port:
        return PeerProtocolError(
            "tls_not_enabled",
            "a TLS handshake on a port that does not speak TLS; connect without --tls "
            "(or start the server with --tls-cert and --tls-key)",
            fatal=True,
        )
    return None


def start_server_tls(
    app: asyncio.Protocol,
    raw: asyncio.Transport,
    context: ssl.SSLContext,
    first_bytes: bytes,
    *,
    timeout_s: float,
    peer: str,
) -> asyncio.Transport:
    """Upgrade ``raw`` to TLS, ``first_bytes`` being the start of the ClientHello already
    read. Returns the transport ``app`` writes to from now on; ``app`` receives decrypted
    bytes and ``connection_lost`` as before."""
    layer = TlsLayer(app, raw, context, timeout_s=timeout_s, peer=peer)
    raw.set_protocol(layer)
    layer.data_received(first_bytes)
    return layer.transport


class TlsLayer(asyncio.Protocol):
    """The raw transport's protocol once a connection is TLS: bytes in, plaintext out."""

    def __init__(
        self,
        app: asyncio.Protocol,
        raw: asyncio.Transport,
        context: ssl.SSLContext,
        *,
        timeout_s: float,
        peer: str,
    ) -> None:
        self.app = app
        self.raw = raw
        self.peer = peer
        self.timeout_s = timeout_s
        self.loop = asyncio.get_running_loop()
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self.ssl = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self.transport = TlsTransport(self)
        self.is_handshaken = False
        self.is_closing = False
        self.is_reading_paused = False
        self._early_writes: list[bytes] = []
        self._eof_delivered = False
        self._record_header = b""
        self._record_left = 0
        self._deadline: asyncio.TimerHandle | None = None
        self._arm_deadline()  # the whole handshake has the partial-message timeout

    # -- the raw transport's callbacks ------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.is_closing:
            return
        self._scan_records(data)
        self._incoming.write(data)
        if not self.is_handshaken and not self._handshake():
            return
        plain: list[bytes] = []
        peer_closed = False
        while True:
            try:
                chunk = self.ssl.read(READ_BYTES)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                peer_closed = True
                break
            except ssl.SSLError as exc:
                self._fail("bad TLS data", exc)
                return
            if not chunk:  # the peer's close_notify
                peer_closed = True
                break
            plain.append(chunk)
        self._send_pending()
        self._watch_partial_record()
        if plain:
            self.app.data_received(plain[0] if len(plain) == 1 else b"".join(plain))
        if peer_closed and not self.is_closing and not self._deliver_eof():
            self.transport.close()

    def eof_received(self) -> bool | None:
        if not self.is_handshaken:
            log.debug("TLS client %s left during the handshake", self.peer, extra=fn("tls"))
            return False
        return self._deliver_eof()

    def _deliver_eof(self) -> bool:
        """Tell the connection once that the peer has finished sending (close_notify, FIN or
        both); whether the transport stays open for the last replies."""
        if self._eof_delivered:
            return True
        self._eof_delivered = True
        return bool(self.app.eof_received())

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        self.app.connection_lost(exc)

    def pause_writing(self) -> None:
        self.app.pause_writing()

    def resume_writing(self) -> None:
        self.app.resume_writing()

    # -- handshake, deadlines -----------------------------------------------------------------

    def _handshake(self) -> bool:
        """Go on with the handshake; whether it is done."""
        try:
            self.ssl.do_handshake()
        except ssl.SSLWantReadError:
            self._send_pending()
            return False
        except (ssl.SSLError, ValueError) as exc:
            self._fail("TLS handshake failed", exc)
            return False
        self.is_handshaken = True
        self._cancel_deadline()
        log.debug(
            "TLS with %s: %s, %s",
            self.peer,
            self.ssl.version(),
            (self.ssl.cipher() or ("?",))[0],
            extra=fn("tls"),
        )
        self._send_pending()
        early, self._early_writes = self._early_writes, []
        for data in early:
            self.transport.write(data)
        return True

    def _fail(self, what: str, exc: Exception) -> None:
        reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
        log.warning("%s with %s: %s", what, self.peer, reason, extra=fn("tls"))
        self._send_pending()  # the alert, if OpenSSL wrote one
        self.is_closing = True
        self._cancel_deadline()
        self.raw.close()

    def _scan_records(self, data: bytes) -> None:
        """Follow the TLS record boundaries (a 5-byte header holding the body's length), to
        know whether a record is half-received: OpenSSL takes partial records in silently."""
        pos, end = 0, len(data)
        while pos < end:
            if self._record_left:
                taken = min(self._record_left, end - pos)
                self._record_left -= taken
                pos += taken
                continue
            wanted = RECORD_HEADER_BYTES - len(self._record_header)
            self._record_header += data[pos : pos + wanted]
            pos += wanted
            if len(self._record_header) == RECORD_HEADER_BYTES:
                self._record_left = int.from_bytes(self._record_header[3:], "big")
                self._record_header = b""

    def _watch_partial_record(self) -> None:
        """A record begun must arrive whole in time: a client trickling one byte at a time
        would otherwise hold the connection until the idle timeout."""
        if not self.is_handshaken:
            return  # the handshake's own deadline runs
        if (self._record_left or self._record_header) and not self.is_reading_paused:
            if self._deadline is None:
                self._arm_deadline()
        else:
            self._cancel_deadline()

    def _arm_deadline(self) -> None:
        self._deadline = self.loop.call_later(self.timeout_s, self._timed_out)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        what = "TLS record" if self.is_handshaken else "TLS handshake"
        log.warning(
            "Incomplete %s from %s for over %g s; closing",
            what,
            self.peer,
            self.timeout_s,
            extra=fn("tls"),
        )
        self.is_closing = True
        self.raw.abort()

    # -- writing ----------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.is_closing or not data:
            return
        if not self.is_handshaken:
            self._early_writes.append(bytes(data))
            return
        view = memoryview(data)
        try:
            while view:
                written = self.ssl.write(view)
                view = view[written:]
        except ssl.SSLError as exc:
            self._fail("TLS write failed", exc)
            return
        self._send_pending()

    def _send_pending(self) -> None:
        if self._outgoing.pending:
            self.raw.write(self._outgoing.read())

    def close(self) -> None:
        if self.is_closing:
            return
        self.is_closing = True
        self._cancel_deadline()
        if self.is_handshaken:
            with contextlib.suppress(ssl.SSLError):
                self.ssl.unwrap()  # writes our close_notify; the peer's is not waited for
            self._send_pending()
        self.raw.close()

    def set_reading_paused(self, paused: bool) -> None:
        self.is_reading_paused = paused
        if paused:
            self.raw.pause_reading()
        else:
            self.raw.resume_reading()
        self._watch_partial_record()


class TlsTransport(asyncio.Transport):
    """What the connection writes to once it is TLS: plaintext in, records out."""

    def __init__(self, layer: TlsLayer) -> None:
        super().__init__()
        self._layer = layer

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._layer.write(bytes(data) if not isinstance(data, bytes) else data)

    def close(self) -> None:
        self._layer.close()

    def abort(self) -> None:
        self._layer.is_closing = True
        self._layer.raw.abort()

    def is_closing(self) -> bool:
        return self._layer.is_closing or self._layer.raw.is_closing()

    def pause_reading(self) -> None:
        self._layer.set_reading_paused(True)

    def resume_reading(self) -> None:
        self._layer.set_reading_paused(False)

    def is_reading(self) -> bool:
        return not self._layer.is_reading_paused and not self.is_closing()

    def can_write_eof(self) -> bool:
        return False  # TLS has close_notify instead: see close()

    def get_write_buffer_size(self) -> int:
        return self._layer.raw.get_write_buffer_size()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._layer.raw.set_write_buffer_limits(high, low)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)
        self._layer.app = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._layer.app

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        sslobj = self._layer.ssl
        if name == "ssl_object":
            return sslobj
        if name == "cipher":
            return sslobj.cipher()
        if name == "peercert":
            return sslobj.getpeercert()
        return self._layer.raw.get_extra_info(name, default)
