"""A small blocking client for the json dialect, used by the command-line clients.

    with JsonClient.connect("127.0.0.1", 5050, timeout_s=5) as client:
        reply = client.request("convert", text="hello")

Requests and replies are built and read by ``socklab.protocol.envelope``: error replies
become ``RequestRejected`` subclasses (via the ``errors.py`` table); a broken
or silent connection becomes a ``LinkError``; a reply that is not the json dialect becomes a
``PeerProtocolError``, and so does a server's one-line refusal (``ERROR tls_required: ...``
from a TLS port) and a failed TLS handshake. ``tls=TlsOptions(...)`` connects over TLS.
The client never retries by itself: retrying is only safe for requests that carry an
idempotency key, and that decision belongs to the caller.
"""

from __future__ import annotations

import itertools
import socket
from types import TracebackType
from typing import Any, Self

from socklab.client.tls import TlsOptions, connect_tls, plain_refusal
from socklab.errors import LinkBroken, LinkClosed, LinkTimeout, PeerProtocolError
from socklab.protocol import envelope
from socklab.wire.framing import JsonDecoder, encode_json

RECV_BYTES = 64 * 1024


class JsonClient:
    """One connection speaking the json dialect, one request at a time."""

    def __init__(self, sock: socket.socket, address: str, *, timeout_s: float) -> None:
        self.sock = sock
        self.address = address
        self.timeout_s = timeout_s
        self._decoder = JsonDecoder(max_message_bytes=16 * 1024 * 1024)
        self._ids = itertools.count(1)
        self._closed = False
        self._is_first_reply = True

    @classmethod
    def connect(
        cls, host: str, port: int, *, timeout_s: float = 5.0, tls: TlsOptions | None = None
    ) -> Self:
        """Open a connection (over TLS with ``tls``). Raises ``LinkBroken`` (refused,
        unreachable), ``LinkTimeout``, and with ``tls`` what ``connect_tls`` raises."""
        address = f"{host}:{port}"
        try:
            sock = socket.create_connection((host, port), timeout=timeout_s)
        except TimeoutError:
            raise LinkTimeout(f"no answer from {address} within {timeout_s:g} s") from None
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise LinkBroken(f"cannot connect to {address}: {reason}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            sock = connect_tls(sock, host, port, tls, timeout_s=timeout_s)
        return cls(sock, address, timeout_s=timeout_s)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.sock.close()

    def send(self, message: dict[str, Any]) -> None:
        """Send one message without waiting for the reply."""
        if self._closed:
            raise LinkClosed("the connection is closed")
        try:
            self.sock.sendall(encode_json(message))
        except TimeoutError:
            raise LinkTimeout(f"{self.address} did not take the request in time") from None
        except OSError as exc:
            self.close()
            raise LinkBroken(
                f"lost the connection to {self.address}: {exc.strerror or exc}"
            ) from None

    def receive(self) -> dict[str, Any]:
        """The next reply, as sent (``ok`` true or false)."""
        while True:
            try:
                message = self._decoder.next_frame()
            except PeerProtocolError as exc:
                self.close()
                raise PeerProtocolError(
                    exc.code, f"the server at {self.address} sent an invalid reply: {exc.message}"
                ) from None
            if message is not None:
                return message
            try:
                data = self.sock.recv(RECV_BYTES)
            except TimeoutError:
                self.close()
                raise LinkTimeout(
                    f"no reply from {self.address} within {self.timeout_s:g} s"
                ) from None
            except OSError as exc:
                self.close()
                raise LinkBroken(
                    f"lost the connection to {self.address}: {exc.strerror or exc}"
                ) from None
            if not data:
                self.close()
                raise LinkBroken(f"the server at {self.address} closed the connection")
            if self._is_first_reply:
                self._is_first_reply = False
                refusal = plain_refusal(data)
                if refusal is not None:
                    self.close()
                    raise PeerProtocolError(
                        "refused", f"the server at {self.address} refused: {refusal}"
                    )
            self._decoder.feed(data)

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send ``{"op": op, "id": n, **fields}`` and return the successful reply's fields
        (without ``id`` and ``ok``).

        Raises a ``RequestRejected`` subclass for an error reply, ``LinkError`` for a
        transport failure and ``PeerProtocolError`` for a reply that makes no sense.
        """
        request_id = next(self._ids)
        self.send(envelope.request(op, request_id, fields))
        return envelope.unwrap(self.receive(), request_id, self.address)
