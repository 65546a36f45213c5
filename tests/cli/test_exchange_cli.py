"""The exchange client checks what the server says (seed 000's main purpose)."""

from __future__ import annotations

import json
import socket
import threading

import pytest

from helpers import HOST, running_server
from socklab.cli.main import main
from socklab.services.exchange import ExchangeService


def serve_once(reply: bytes) -> int:
    listener = socket.create_server((HOST, 0))

    def serve() -> None:
        with listener:
            conn, _ = listener.accept()
            with conn:
                conn.recv(1024)
                conn.sendall(reply)

    threading.Thread(target=serve, daemon=True).start()
    port: int = listener.getsockname()[1]
    return port


def test_a_good_exchange(capsys: pytest.CaptureFixture[str]) -> None:
    with running_server(ExchangeService("S")) as server:
        assert main(["exchange", "30", "--name", "C", "--port", str(server.port)]) == 0
    err = capsys.readouterr().err
    assert "[INFO] [send_message]: C | S\n" in err
    assert "[INFO] [send_message]: Client Number: 30 | Server Number: " in err


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        pytest.param(
            {"server_name": "S", "server_number": 10, "sum": 41},
            "sum 41 is not 30 + 10",
            id="wrong-sum",
        ),
        pytest.param(
            {"server_name": "S", "server_number": 0, "sum": 30},
            "not in 1..100",
            id="number-out-of-range",
        ),
        pytest.param(
            {"server_name": "S", "server_number": "10", "sum": 40},
            "must be an integer",
            id="number-as-text",
        ),
        pytest.param(
            {"server_name": "S", "server_number": True, "sum": 31}, "must be an integer", id="bool"
        ),
        pytest.param(
            {"server_name": "", "server_number": 10, "sum": 40}, "non-empty string", id="empty-name"
        ),
        pytest.param({"server_number": 10, "sum": 40}, "non-empty string", id="no-name"),
    ],
)
def test_an_invalid_answer_is_an_error(
    reply: dict[str, object], problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    port = serve_once(json.dumps({"id": 1, "ok": True, **reply}).encode() + b"\n")
    assert main(["exchange", "30", "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("[ERROR] [main]: invalid reply from the server: ")
    assert problem in err


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        pytest.param(b"HTTP/1.1 400 Bad Request\r\n\r\n", "invalid reply", id="garbage"),
        pytest.param(b"", "closed the connection", id="closed"),
        pytest.param(
            b'{"id": 1, "ok": false, "error": {"code": "out_of_range", "message": "no"}}\n',
            "the server refused: no (out_of_range)",
            id="error-reply",
        ),
    ],
)
def test_garbage_or_silence_is_one_clear_error(
    reply: bytes, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    port = serve_once(reply)
    assert main(["exchange", "30", "--port", str(port), "--timeout", "2"]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_timeout_is_one_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.create_server((HOST, 0)) as silent:  # accepts (backlog) but never answers
        port = silent.getsockname()[1]
        assert main(["exchange", "30", "--port", str(port), "--timeout", "0.3"]) == 1
    assert "no reply from 127.0.0.1" in capsys.readouterr().err


def test_bad_name_is_refused_before_connecting(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["exchange", "30", "--name", " ", "--port", "1"]) == 1
    assert "client_name must not be empty" in capsys.readouterr().err
