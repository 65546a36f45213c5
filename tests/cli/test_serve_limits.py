"""``socklab serve``'s per-address and buffered-input options, on a real process."""

from __future__ import annotations

import socket
import time

import pytest

from helpers import HOST, recv_until, start_server_process
from socklab.cli.common import EXIT_USAGE
from socklab.cli.main import main


def test_a_buffered_bound_under_two_messages_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["serve", "text", "--port", "0", "--max-message-bytes", "1024"]
    assert main([*argv, "--max-buffered-bytes", "2000"]) == EXIT_USAGE
    assert "must be at least twice the largest message (1024 bytes)" in capsys.readouterr().err


def _refused(sock: socket.socket) -> bool:
    try:
        sock.sendall(b"hello\n")
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


def test_max_connections_per_ip_refuses_the_next_connection_from_that_address() -> None:
    server = start_server_process(
        "text", "--port", "0", "--max-connections-per-ip", "1", "--max-buffered-bytes", "200000"
    )
    try:
        with socket.create_connection((HOST, server.port), timeout=10) as first:
            first.sendall(b"Hi\n")
            assert recv_until(first) == b"[Lower Case] hi [Upper Case] HI\n"
            with socket.create_connection((HOST, server.port), timeout=10) as second:
                assert _refused(second)
        # Once the first has gone, the address has its slot back (its close may take a
        # moment to reach the server: retry, bounded).
        deadline = time.monotonic() + 10
        while True:
            with socket.create_connection((HOST, server.port), timeout=10) as third:
                if not _refused(third):
                    break
            assert time.monotonic() < deadline, "the slot was never given back"
            time.sleep(0.02)
    finally:
        assert server.stop() == 0
    assert "1 connections from 127.0.0.1 is the limit per address" in server.text()
