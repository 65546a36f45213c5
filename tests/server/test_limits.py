"""Per-address connection limits, what keeps a connection from its idle timeout, and the
bound on the input bytes a service buffers; over real sockets."""

from __future__ import annotations

import json
import socket
import time

import pytest

from helpers import recv_all, recv_until, running_server
from socklab.server import runtime
from socklab.server.runtime import Limits
from socklab.services.base import ConnectionInfo, Service, Session


class EchoSession(Session):
    def handle_line(self, line: str) -> str:
        return f"line:{line}"

    def handle_json(self, request: dict[str, object]) -> dict[str, object]:
        return {"value": request.get("value")}

    def handle_lab(self, payload: str) -> str:
        return f"lab:{payload}"


class EchoService(Service):
    name = "echo"

    def open_session(self, conn: ConnectionInfo) -> Session:
        return EchoSession()


def is_refused(sock: socket.socket) -> bool:
    """Whether the server closed ``sock`` without answering a request."""
    try:
        sock.sendall(b"hello\n")
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


# -- per address -------------------------------------------------------------------------


def test_connections_from_one_address_past_its_limit_are_refused() -> None:
    limits = Limits(max_connections=100, max_connections_per_ip=2)
    with running_server(EchoService(), limits) as server:
        first, second = server.connect(), server.connect()
        for sock in (first, second):
            sock.sendall(b"hi\n")
            assert recv_until(sock) == b"line:hi\n"
        with server.connect() as third:
            assert is_refused(third)
        assert server.listener.per_address == {"127.0.0.1": 2}
        first.close()
        server.wait_until(lambda: server.listener.per_address.get("127.0.0.1") == 1)
        with server.connect() as fourth:
            fourth.sendall(b"again\n")
            assert recv_until(fourth) == b"line:again\n"
        second.close()
        server.wait_until(lambda: not server.listener.per_address)


def test_the_defaults_suit_a_lab_behind_one_address() -> None:
    limits = Limits()
    assert 256 <= limits.max_connections_per_ip < limits.max_connections


# -- idle timeout ------------------------------------------------------------------------


def test_blank_lines_do_not_keep_a_connection_open() -> None:
    limits = Limits(idle_timeout_s=0.5)
    with running_server(EchoService(), limits) as server, server.connect() as sock:
        sock.sendall(b"real\n")
        assert recv_until(sock) == b"line:real\n"
        sock.settimeout(0.1)
        deadline = time.monotonic() + 20
        closed = False
        while not closed:
            assert time.monotonic() < deadline, "blank lines kept the connection open"
            try:
                sock.sendall(b"\n")  # answered, but not activity
                while chunk := sock.recv(100):
                    assert chunk.strip(b"line:\n") == b""
                closed = True
            except TimeoutError:
                continue
            except (ConnectionResetError, BrokenPipeError):
                closed = True


def test_real_requests_keep_a_connection_open() -> None:
    # Wall-clock by nature (the idle timeout is one), so with a wide margin: each pause
    # is an eighth of the timeout, and together they last 1.5 times it.
    limits = Limits(idle_timeout_s=2.0)
    with running_server(EchoService(), limits) as server, server.connect() as sock:
        for i in range(12):  # 3 s in all, a request every 0.25 s
            sock.sendall(f"r{i}\n".encode())
            assert recv_until(sock) == f"line:r{i}\n".encode()
            time.sleep(0.25)


# -- buffered input ----------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["line", "json"])
def test_over_the_buffered_bound_the_largest_partial_message_is_closed(dialect: str) -> None:
    limits = Limits(max_message_bytes=1024, max_buffered_bytes=4096)
    sizes = [1000, 900, 700, 600]  # 3,200 bytes: under the bound
    start = b"x" if dialect == "line" else b'{"value": "'
    with running_server(EchoService(), limits) as server:
        socks = [server.connect() for _ in sizes]
        for sock, size in zip(socks, sizes, strict=True):
            sock.sendall(start + b"y" * (size - len(start)))
        server.wait_until(lambda: server.listener.buffered_bytes == sum(sizes))
        with server.connect() as late:
            late.sendall(start + b"z" * (950 - len(start)))  # 4,150 bytes: over the bound
            reply = recv_all(socks[0])  # the largest: 1,000 bytes
            server.wait_until(lambda: server.listener.buffered_bytes == sum(sizes[1:]) + 950)
            end = b"\n" if dialect == "line" else b'"}\n'
            for sock in [*socks[1:], late]:  # the others go on
                sock.sendall(end)
                answer = recv_until(sock)
                assert answer.startswith(b"line:x" if dialect == "line" else b'{"ok":true')
        for sock in socks:
            sock.close()
        server.wait_until(lambda: server.listener.buffered_bytes == 0)
    if dialect == "line":
        assert reply.startswith(b"ERROR server_busy: the server's input buffers are full")
    else:
        assert json.loads(reply)["error"]["code"] == "server_busy"


def test_a_buffered_bound_smaller_than_two_messages_is_refused() -> None:
    with pytest.raises(ValueError, match="at least twice"):
        Limits(max_message_bytes=1024, max_buffered_bytes=2000)


def test_memory_is_handed_back_after_a_burst_of_half_messages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trims: list[int] = []
    monkeypatch.setattr(runtime, "_malloc_trim", lambda pad: trims.append(pad) or 1)
    half = b"x" * 60_000
    count = runtime.TRIM_AFTER_BYTES // len(half) + 10
    with running_server(EchoService()) as server:
        socks = [server.connect() for _ in range(count)]
        for sock in socks:
            sock.sendall(half)
        server.wait_until(lambda: server.listener.buffered_bytes == count * len(half))
        assert trims == []  # growing never trims
        for sock in socks:
            sock.close()
        server.wait_until(lambda: server.listener.buffered_bytes == 0)
        server.wait_until(lambda: trims == [0])  # one trim for the whole burst
