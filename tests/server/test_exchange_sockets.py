"""The exchange service of seed 000 over real sockets."""

from __future__ import annotations

import asyncio
import json
import logging
import select
import socket
from typing import Any

import pytest

from helpers import HOST, recv_all, recv_until, running_server, wait_until
from socklab.services.exchange import ExchangeService
from socklab.wire.framing import encode_lab_frame


def original_client(port: int, name: str, number: int) -> dict[str, Any] | None:
    """Behaves exactly like seed 000's client: one unframed object, one recv(1024)."""
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.send(json.dumps({"client_name": name, "client_number": number}).encode())
        if not 1 <= number <= 100:
            return None  # it sends and exits without reading
        data = sock.recv(1024)
    reply: dict[str, Any] = json.loads(data.decode())
    return reply


def exchange_json(sock: socket.socket, request: dict[str, Any] | bytes) -> dict[str, Any]:
    raw = request if isinstance(request, bytes) else json.dumps(request).encode() + b"\n"
    sock.sendall(raw)
    reply: dict[str, Any] = json.loads(recv_until(sock))
    return reply


def test_the_original_client_works_unchanged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="socklab")
    service = ExchangeService("Amirreza Yarahmadi Server", seed=7)
    with running_server(service) as server:
        reply = original_client(server.port, "Amirreza Yarahmadi Client", 25)
    assert reply is not None
    assert reply["server_name"] == "Amirreza Yarahmadi Server"
    assert 1 <= reply["server_number"] <= 100
    assert reply["sum"] == 25 + reply["server_number"]
    messages = [r.getMessage() for r in caplog.records]
    assert (
        "Client Name: Amirreza Yarahmadi Client | Server Name: Amirreza Yarahmadi Server"
        in messages
    )
    assert (
        f"Client Number: 25 | Server Number: {reply['server_number']} | Sum: {reply['sum']}"
        in messages
    )
    assert "Sending client response" in messages
    assert any(m.startswith("Connection accepted from ('127.0.0.1', ") for m in messages)


def test_seed_makes_the_server_numbers_reproducible() -> None:
    numbers = []
    for _ in range(2):
        with running_server(ExchangeService(seed=42)) as server:
            numbers.append(
                [original_client(server.port, "c", 5)["server_number"] for _ in range(5)]
            )  # type: ignore[index]
    assert numbers[0] == numbers[1]


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        pytest.param(
            {"client_name": "A", "client_number": "25"}, "invalid_request", id="number-as-text"
        ),
        pytest.param({"client_name": "A", "client_number": 2.5}, "invalid_request", id="float"),
        pytest.param({"client_name": "A", "client_number": True}, "invalid_request", id="bool"),
        pytest.param({"client_name": "A", "client_number": None}, "invalid_request", id="null"),
        pytest.param({"client_name": "A"}, "invalid_request", id="missing-number"),
        pytest.param({"client_number": 5}, "invalid_request", id="missing-name"),
        pytest.param({"client_name": "", "client_number": 5}, "invalid_request", id="empty-name"),
        pytest.param(
            {"client_name": "x" * 101, "client_number": 5}, "invalid_request", id="long-name"
        ),
        pytest.param(
            {"client_name": 42, "client_number": 5}, "invalid_request", id="name-not-text"
        ),
        pytest.param(
            {"client_name": "a\x00b", "client_number": 5}, "invalid_request", id="control-char"
        ),
        pytest.param(
            {"op": "nope", "client_name": "A", "client_number": 5}, "unknown_op", id="unknown-op"
        ),
        pytest.param(
            b'{"client_name": "A", "client_number": 1e999}\n', "bad_json", id="huge-float"
        ),
        pytest.param(b'{"client_name": "A", "client_number": 25\n', "bad_json", id="invalid-json"),
        pytest.param(
            b'{"client_name": "\xff", "client_number": 25}\n', "bad_encoding", id="invalid-utf8"
        ),
        pytest.param(
            b'{"client_name": "A", "client_number": ' + b"9" * 5000 + b"}\n",
            "bad_json",
            id="huge-int",
        ),
    ],
)
def test_bad_requests_get_a_clear_error_and_the_server_goes_on(
    request_: dict[str, Any] | bytes, code: str, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        running_server(ExchangeService(on_out_of_range="reject")) as server,
        server.connect() as sock,
    ):
        reply = exchange_json(sock, request_)
        assert reply["ok"] is False and reply["error"]["code"] == code
        assert reply["error"]["message"]
        assert any(r.levelno == logging.WARNING for r in caplog.records)
        good = exchange_json(sock, {"client_name": "A", "client_number": 5, "id": 9})
        assert good["ok"] is True and good["id"] == 9


def test_out_of_range_with_reject_keeps_serving(caplog: pytest.LogCaptureFixture) -> None:
    with (
        running_server(ExchangeService(on_out_of_range="reject")) as server,
        server.connect() as sock,
    ):
        for number in (0, 101, -5, 10**40):
            reply = exchange_json(sock, {"client_name": "A", "client_number": number})
            assert reply["error"]["code"] == "out_of_range"
        assert exchange_json(sock, {"client_name": "A", "client_number": 100})["ok"] is True
        assert not server.listener.stopped.is_set()
    assert "Client int out of range: 0. Rejected." in caplog.text


def test_out_of_range_terminates_after_others_in_flight_replies(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with running_server(ExchangeService()) as server:
        # Another client has sent its request but not yet read the answer.
        other = server.connect()
        other.sendall(json.dumps({"client_name": "B", "client_number": 50}).encode() + b"\n")
        readable, _, _ = select.select([other], [], [], 30)  # answered, not yet read
        assert readable == [other]
        assert original_client(server.port, "Terminator", 0) is None
        assert json.loads(recv_until(other))["ok"] is True
        assert recv_all(other) == b""  # then the server closed it
        other.close()
        wait_until(server.listener.stopped.is_set, "the listener stopped")
    assert "Client int out of range: 0. Terminating the server." in caplog.text


def test_nc_style_line_gets_a_readable_answer() -> None:
    with running_server(ExchangeService("S", seed=1)) as server, server.connect() as sock:
        sock.sendall(b"Alice 25\n")
        line = recv_until(sock).decode()
        assert line.startswith(
            "Client Name: Alice | Server Name: S | Client Number: 25 | Server Number: "
        )
        server_number = int(line.split("Server Number: ")[1].split(" |")[0])
        assert line.endswith(f"Sum: {25 + server_number}\n")
        sock.sendall(b"Amirreza Yarahmadi Client 7\nBob seven\n")
        lines = sock.makefile("rb")
        assert "Client Name: Amirreza Yarahmadi Client" in lines.readline().decode()
        assert (
            lines.readline().decode().startswith("ERROR invalid_request: 'seven' is not an integer")
        )


def test_lab_framing_works_too() -> None:
    with running_server(ExchangeService("S")) as server, server.connect() as sock:
        sock.sendall(encode_lab_frame(b"Alice 3"))
        assert sock.recv(2048).startswith(b"Client Name: Alice | Server Name: S | Client Number: 3")


def test_500_concurrent_clients_all_sums_check_out() -> None:
    async def one(port: int, i: int) -> tuple[int, dict[str, Any]]:
        reader, writer = await asyncio.open_connection(HOST, port)
        number = i % 100 + 1
        writer.write(
            json.dumps({"client_name": f"client {i}", "client_number": number, "id": i}).encode()
            + b"\n"
        )
        line = await reader.readline()
        writer.close()
        await writer.wait_closed()
        return number, json.loads(line)

    async def many(port: int) -> list[tuple[int, dict[str, Any]]]:
        async with asyncio.timeout(60):
            return await asyncio.gather(*(one(port, i) for i in range(500)))

    with running_server(ExchangeService()) as server:
        results = asyncio.run(many(server.port))
    assert len(results) == 500
    for number, reply in results:
        assert reply["ok"] is True
        assert reply["client_number"] == number
        assert reply["sum"] == number + reply["server_number"]
        assert 1 <= reply["server_number"] <= 100
