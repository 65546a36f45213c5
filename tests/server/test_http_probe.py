"""A browser on a TCP service port gets a short HTTP/1.1 page and the connection closes;
the three dialects are detected as before."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import recv_all, recv_until, running_server
from socklab.server.http_probe import is_http_request
from socklab.services.bank import BankService
from socklab.services.text import TextService
from socklab.wire.framing import encode_lab_frame


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1:5050\r\nUser-Agent: curl/8\r\n\r\n",
        b"GET /favicon.ico HTTP/1.0\r\n\r\n",
        b"POST /api HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
        b"GET /" + b"a" * 200 + b" HTTP/1.1\r\n\r\n",
    ],
    ids=["curl", "http-1.0", "post", "long-path"],
)
def test_a_browser_gets_an_http_page_and_the_connection_closes(request_bytes: bytes) -> None:
    with running_server(TextService()) as server, server.connect() as sock:
        sock.sendall(request_bytes)
        reply = recv_all(sock)  # EOF: the server closed
        head, _, body = reply.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        assert lines[0] == b"HTTP/1.1 200 OK"
        headers = dict(line.split(b": ", 1) for line in lines[1:])
        assert int(headers[b"Content-Length"]) == len(body)
        assert headers[b"Connection"] == b"close"
        text = body.decode()
        assert f"nc 127.0.0.1 {server.port}" in text
        assert "upper hello" in text
        assert "http://127.0.0.1:8080/" in text


def test_head_gets_the_headers_only() -> None:
    with running_server(TextService()) as server, server.connect() as sock:
        sock.sendall(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = recv_all(sock)
        assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and reply.endswith(b"\r\n\r\n")
        assert b"Content-Length: " in reply and b"nc " not in reply


def test_a_bank_port_names_its_example(tmp_path: Path) -> None:
    with running_server(BankService(f"sqlite:///{tmp_path / 'b.db'}")) as server:
        with server.connect() as sock:
            sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
            text = recv_all(sock).decode()
        assert "socklab's bank service" in text and "  help\n" in text


@pytest.mark.parametrize(
    "line, expected",
    [
        (b"GET hello\n", b"[Lower Case] get hello [Upper Case] GET HELLO\n"),
        (b"get / http/1.1\n", b"[Lower Case] get / http/1.1 [Upper Case] GET / HTTP/1.1\n"),
        (b"POST\n", b"[Lower Case] post [Upper Case] POST\n"),
    ],
    ids=["get-word", "lower-case", "bare-post"],
)
def test_lines_that_merely_start_like_http_stay_lines(line: bytes, expected: bytes) -> None:
    with running_server(TextService()) as server, server.connect() as sock:
        sock.sendall(line)
        assert recv_until(sock) == expected


def test_json_and_lab_are_detected_as_before() -> None:
    with running_server(TextService()) as server:
        with server.connect() as sock:
            sock.sendall(b'{"op": "upper", "text": "get / http/1.1"}\n')
            assert json.loads(recv_until(sock))["upper"] == "GET / HTTP/1.1"
        with server.connect() as sock:
            sock.sendall(encode_lab_frame(b"GET / HTTP/1.1"))
            reply = sock.recv(2048)
            assert b"GET / HTTP/1.1" in reply and not reply.startswith(b"HTTP/")


@pytest.mark.parametrize(
    "prefix, expected",
    [
        (b"GET / HTTP/1.1\r\n", True),
        (b"HEAD /x HTTP/1.0\n", True),
        (b"GET / HTTP/1.1", False),  # not yet: wait for the newline
        (b"GET / HTTP/2\r\n", False),
        (b"GET hello\n", False),
        (b"get / HTTP/1.1\r\n", False),
        (b"GET /" + b"x" * 70, True),
        (b"GET " + b"x" * 70, False),
        (b"PUT / HTTP/1.1\r\n", False),
    ],
)
def test_is_http_request(prefix: bytes, expected: bool) -> None:
    assert is_http_request(prefix) is expected
