"""The baseline: a thread-per-connection lab server, designed the way seed 003 designs it.

One thread per client, each doing blocking ``recv`` of the 64-byte header and then of the
payload, and one ``sendall`` of the raw reply. Two things differ from the seed's code, both
in the baseline's favour, so the comparison is with the lab's *design*, not its bugs:

- partial reads are handled: ``recv_exactly`` loops until it has every byte (the seed's
  single ``recv(64)`` can return part of a header under load and then misparse);
- ``TCP_NODELAY`` is set on each connection, as asyncio does for socklab's.

The replies are byte for byte socklab's: text ``[Lower Case] x [Upper Case] X``, numbers
``[Prime] False [Palindrome] True`` (same primality code as socklab when it is installed,
run inline, as the lab did); ``!DISCONNECT`` is answered like any text, then the
connection is closed.

    python benchmarks/baselines/thread_server.py --port 0 [--service text|numbers]

prints ``listening on HOST:PORT`` once it accepts connections; stops on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import math
import signal
import socket
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

HEADER = 64
FORMAT = "utf-8"
DISCONNECT_MESSAGE = "!DISCONNECT"
MAX_MESSAGE_BYTES = 64 * 1024


def recv_exactly(conn: socket.socket, size: int) -> bytes | None:
    """Exactly ``size`` bytes; ``None`` if the peer closed before sending any of them.

    Raises ``EOFError`` if it closed part-way through.
    """
    data = conn.recv(size)
    if len(data) == size:
        return data
    if not data:
        return None
    chunks = [data]
    missing = size - len(data)
    while missing:
        chunk = conn.recv(missing)
        if not chunk:
            raise EOFError(f"connection closed {missing} bytes short of a message")
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


def text_reply(message: str) -> str:
    return f"[Lower Case] {message.lower()} [Upper Case] {message.upper()}"


def _is_prime(n: Any) -> bool:
    try:
        from socklab.services.primality import is_prime
    except ImportError:  # pragma: no cover - standalone: the lab's trial division
        return n >= 2 and all(n % d for d in range(2, math.isqrt(n) + 1))
    return bool(is_prime(n))


def numbers_reply(message: str) -> str:
    text = message.strip()
    sign = text[:1] if text[:1] in ("+", "-") else ""
    digits = text[len(sign) :].lstrip("0") or "0"
    if not (digits.isascii() and digits.isdigit()):
        return f"ERROR invalid_request: {text[:30]!r} is not an integer\n"
    negative = sign == "-" and digits != "0"
    palindrome = not negative and digits == digits[::-1]
    try:
        import gmpy2  # no 4,300-digit limit on converting text to a number

        magnitude: Any = gmpy2.mpz(digits)
    except ImportError:  # pragma: no cover
        magnitude = int(digits)
    prime = not negative and _is_prime(magnitude)
    return f"[Prime] {prime} [Palindrome] {palindrome}"


REPLIES: dict[str, Callable[[str], str]] = {"text": text_reply, "numbers": numbers_reply}


def handle_client(conn: socket.socket, reply: Callable[[str], str]) -> None:
    """Serve one client until it disconnects: header, payload, reply, again."""
    with conn:
        try:
            while True:
                header = recv_exactly(conn, HEADER)
                if header is None:
                    return
                try:
                    length = int(header.decode("ascii").strip())
                except ValueError:
                    conn.sendall(b"ERROR bad_header: expected a 64-byte length header\n")
                    return
                if not 0 <= length <= MAX_MESSAGE_BYTES:
                    conn.sendall(b"ERROR too_large: message too large\n")
                    return
                payload = recv_exactly(conn, length) if length else b""
                if payload is None:
                    return
                message = payload.decode(FORMAT, errors="replace")
                conn.sendall(reply(message).encode(FORMAT))
                if message == DISCONNECT_MESSAGE:
                    return
        except (EOFError, OSError):
            return


def serve(host: str, port: int, service: str, ready: Callable[[int], None] | None = None) -> None:
    """Accept forever, one thread per connection."""
    reply = REPLIES[service]
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((host, port))
    server.listen(1024)
    if ready is not None:
        ready(server.getsockname()[1])
    with server:
        while True:
            conn, _ = server.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=handle_client, args=(conn, reply), daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5050, help="0 picks a free port")
    parser.add_argument("--service", choices=sorted(REPLIES), default="text")
    args = parser.parse_args(argv)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)

    def ready(bound: int) -> None:
        print(f"listening on {args.host}:{bound}", flush=True)

    try:
        serve(args.host, args.port, args.service, ready)
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
