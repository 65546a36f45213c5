"""A reply that cannot be produced or encoded is an error reply, and its connection goes on.

A failure on the way to the socket (a service returning what JSON or UTF-8 cannot carry,
an id that cannot be echoed) must never leave a connection busy for ever: that leaked a
connection slot per request, ignored the client's close and the idle timeout, and dropped
the requests pipelined behind it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import (
    RunningServer,
    captured_records,
    recv_all,
    running_server,
    start_server_process,
)
from socklab.errors import InvalidRequest
from socklab.server.runtime import Connection, Limits
from socklab.services.bank import BankService
from socklab.services.base import ConnectionInfo, JsonReply, Service, Session
from socklab.services.numbers import NumbersService
from socklab.services.text import TextService
from socklab.wire.framing import encode_lab_frame

LONE = "\udc80"
UNSENDABLE: dict[str, Any] = {
    "surrogate": {"value": LONE},
    "nan": {"value": float("nan")},
    "object": {"value": object()},
    "huge-int": {"value": 10**5000},
}


class FaultySession(Session):
    """Replies built on the server that cannot be sent, at once or after an await."""

    def handle_json(self, request: dict[str, Any]) -> Any:
        op = str(request.get("op"))
        if op == "echo":
            return {"value": request.get("value")}
        if op == "rejected":
            raise InvalidRequest(f"refused {LONE}")  # an error message that cannot be sent
        if op.startswith("later-"):
            return self._later(UNSENDABLE[op.removeprefix("later-")])
        return UNSENDABLE[op]

    async def _later(self, reply: JsonReply) -> JsonReply:
        await asyncio.sleep(0)
        return reply

    def handle_line(self, line: str) -> Any:
        if line == "bad":
            return LONE
        if line == "later-bad":
            return self._later_line()
        return f"line:{line}"

    async def _later_line(self) -> str:
        await asyncio.sleep(0)
        return LONE


class FaultyService(Service):
    name = "faulty"

    def open_session(self, conn: ConnectionInfo) -> Session:
        return FaultySession()


def strict_json(line: bytes) -> dict[str, Any]:
    """Parse a reply as JSON proper: NaN and Infinity are not JSON."""

    def refuse(name: str) -> None:
        raise AssertionError(f"{name} in a reply: {line!r}")

    value = json.loads(line.decode("utf-8"), parse_constant=refuse)
    assert isinstance(value, dict)
    return value


def read_lines(sock: socket.socket, count: int) -> list[bytes]:
    data = b""
    while data.count(b"\n") < count:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {data!r}"
        data += chunk
    return data.splitlines()


async def _count(server: RunningServer) -> int:
    return len(server.listener.connections)


def errors_logged(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return [r for r in records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("op", [*UNSENDABLE, *(f"later-{k}" for k in UNSENDABLE), "rejected"])
def test_unsendable_json_reply_is_an_internal_error_and_the_pipeline_goes_on(op: str) -> None:
    with (
        captured_records("socklab") as records,
        running_server(FaultyService()) as server,
        server.connect() as sock,
    ):
        sock.sendall(
            json.dumps({"op": op, "id": 1}).encode()
            + b"\n"
            + json.dumps({"op": "echo", "value": "after", "id": 2}).encode()
            + b"\n"
        )
        first, second = (strict_json(line) for line in read_lines(sock, 2))
    assert first["ok"] is False and first["error"]["code"] == "internal_error"
    assert first["id"] == 1
    assert second == {"id": 2, "ok": True, "value": "after"}
    assert len(errors_logged(records)) == 1  # logged once, with its traceback
    assert errors_logged(records)[0].exc_info is not None


@pytest.mark.parametrize("line", [b"bad", b"later-bad"])
def test_unsendable_line_reply_is_an_internal_error_and_the_pipeline_goes_on(line: bytes) -> None:
    with running_server(FaultyService()) as server, server.connect() as sock:
        sock.sendall(line + b"\nafter\n")
        lines = read_lines(sock, 2)
    assert lines[0].startswith(b"ERROR internal_error: ")
    assert lines[1] == b"line:after"


def test_unsendable_lab_reply_is_an_internal_error() -> None:
    with running_server(FaultyService()) as server, server.connect() as sock:
        sock.sendall(encode_lab_frame(b"later-bad") + encode_lab_frame(b"after"))
        data = b""
        while not data.endswith(b"line:after"):
            chunk = sock.recv(1000)
            assert chunk, data
            data += chunk
    assert data.startswith(b"ERROR internal_error: ")


@pytest.mark.parametrize("op", ["surrogate", "later-surrogate"])
def test_after_a_failed_reply_the_clients_close_frees_the_slot(op: str) -> None:
    with running_server(FaultyService()) as server:
        for _ in range(3):
            with server.connect() as sock:
                sock.sendall(json.dumps({"op": op, "id": 1}).encode() + b"\n")
                sock.shutdown(socket.SHUT_WR)  # what `nc -q0` does
                reply = recv_all(sock)  # the server answers, then closes
            assert strict_json(reply)["error"]["code"] == "internal_error"
        server.wait_until(lambda: not server.listener.connections, "every slot is free")


def test_after_a_failed_awaited_reply_the_idle_timeout_still_fires() -> None:
    limits = Limits(idle_timeout_s=0.2)
    with running_server(FaultyService(), limits) as server, server.connect() as sock:
        sock.sendall(json.dumps({"op": "later-surrogate", "id": 1}).encode() + b"\n")
        reply = recv_all(sock)  # the reply, then the close of an idle connection
        assert strict_json(reply)["error"]["code"] == "internal_error"
        server.wait_until(lambda: not server.listener.connections, "every slot is free")


def test_a_bug_while_writing_an_awaited_reply_cuts_the_connection_not_the_slot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Defence in depth: whatever escapes the reply task, the connection is not left busy."""
    flush = Connection._flush

    def broken_flush(self: Connection, out: list[bytes]) -> None:
        if any(b"boom" in chunk for chunk in out):
            raise RuntimeError("a bug in the runtime")
        flush(self, out)

    monkeypatch.setattr(Connection, "_flush", broken_flush)
    unhandled: list[dict[str, Any]] = []
    with captured_records("socklab") as records, running_server(FaultyService()) as server:
        server.loop.call_soon_threadsafe(
            server.loop.set_exception_handler, lambda loop, context: unhandled.append(context)
        )
        with server.connect() as sock:
            sock.sendall(
                json.dumps({"op": "later-surrogate", "id": 1}).encode()
                + b"\n"
                + json.dumps({"op": "echo", "value": "boom", "id": 2}).encode()
                + b"\n"
            )
            data = recv_all(sock)  # cut by the server, not left hanging
        server.wait_until(lambda: not server.listener.connections, "every slot is free")
        with server.connect() as other:  # and the server still serves
            other.sendall(json.dumps({"op": "echo", "value": 3}).encode() + b"\n")
            assert strict_json(read_lines(other, 1)[0])["value"] == 3
    assert strict_json(data.splitlines()[0])["error"]["code"] == "internal_error"
    assert unhandled == []  # no "Task exception was never retrieved"
    assert [r.getMessage() for r in errors_logged(records)][-1].startswith(
        "Internal error while answering"
    )


# -- what a client may send as an id -------------------------------------------------------

BAD_IDS = [
    pytest.param(b'"\\ud800"', "bad_encoding", id="lone-high-surrogate"),
    pytest.param(b'"\\uDC80x"', "bad_encoding", id="lone-low-surrogate"),
    pytest.param(b"NaN", "bad_json", id="nan"),
    pytest.param(b"Infinity", "bad_json", id="infinity"),
    pytest.param(b"-Infinity", "bad_json", id="minus-infinity"),
    pytest.param(b"1e400", "bad_json", id="overflowing-float"),
    pytest.param(b'"' + b"x" * 129 + b'"', "bad_request", id="129-chars"),
    pytest.param(b"true", "bad_request", id="boolean"),
    pytest.param(b"1.5", "bad_request", id="float"),
    pytest.param(b"[1]", "bad_request", id="list"),
    pytest.param(b'{"a": 1}', "bad_request", id="object"),
]


@pytest.mark.parametrize(("raw_id", "code"), BAD_IDS)
def test_a_bad_id_is_refused_without_echoing_it(raw_id: bytes, code: str) -> None:
    with running_server(FaultyService()) as server, server.connect() as sock:
        sock.sendall(
            b'{"op": "echo", "value": 1, "id": ' + raw_id + b'}\n{"op": "echo", "id": 2}\n'
        )
        first, second = (strict_json(line) for line in read_lines(sock, 2))
    assert first["ok"] is False and first["error"]["code"] == code
    assert "id" not in first
    assert second == {"id": 2, "ok": True, "value": None}


@pytest.mark.parametrize(
    "good_id",
    ["x" * 128, "", "straße 😀", 0, -7, 10**40],
    ids=["128-chars", "empty", "unicode", "zero", "negative", "big-integer"],
)
def test_a_good_id_is_echoed(good_id: Any) -> None:
    with running_server(FaultyService()) as server, server.connect() as sock:
        sock.sendall(json.dumps({"op": "echo", "value": 1, "id": good_id}).encode() + b"\n")
        assert strict_json(read_lines(sock, 1)[0]) == {"id": good_id, "ok": True, "value": 1}


# -- the real services: the reports' reproducers ---------------------------------------------


def send_and_close(server: RunningServer, data: bytes) -> bytes:
    """``printf DATA | nc -q0 HOST PORT``: send, close our side, read until the server closes."""
    with server.connect() as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        return recv_all(sock)


@pytest.fixture
def bank(tmp_path: Path) -> Iterator[RunningServer]:
    service = BankService(f"sqlite:///{tmp_path / 'bank.db'}")
    with running_server(service, Limits(max_connections=5)) as server:
        yield server


def test_bank_stats_with_a_lone_surrogate_id_does_not_leak_slots(bank: RunningServer) -> None:
    for _ in range(20):  # four times the connection limit
        reply = send_and_close(bank, b'{"op":"stats","id":"\\ud800"}\n')
        assert strict_json(reply)["error"]["code"] == "bad_encoding"
    reply = send_and_close(bank, b'{"op":"stats","id":1}\n')
    assert strict_json(reply)["ok"] is True
    bank.wait_until(lambda: not bank.listener.connections, "every slot is free")


def test_text_convert_of_a_lone_surrogate_then_a_second_request() -> None:
    with running_server(TextService()) as server, server.connect() as sock:
        sock.sendall(
            b'{"op":"convert","text":"\\udc80","id":1}\n{"op":"convert","text":"Ab","id":2}\n'
        )
        first, second = (strict_json(line) for line in read_lines(sock, 2))
    assert first["error"]["code"] == "bad_encoding"
    assert second == {"id": 2, "ok": True, "lower": "ab", "upper": "AB"}


BIG_PRIME = "170141183460469231731687303715884105727"  # 2**127 - 1: pooled past 20 digits


@pytest.mark.parametrize(("raw_id", "code"), BAD_IDS)
def test_pooled_numbers_check_with_a_bad_id(raw_id: bytes, code: str) -> None:
    service = NumbersService(offload_digits=20, workers=1)
    with running_server(service, Limits(max_connections=2)) as server:
        for _ in range(3):  # past the connection limit: no slot may leak
            with server.connect() as sock:
                sock.sendall(
                    b'{"op":"check","number":"' + BIG_PRIME.encode() + b'","id":' + raw_id + b"}\n"
                    b'{"op":"prime","number":"' + BIG_PRIME.encode() + b'","id":2}\n'
                )
                sock.shutdown(socket.SHUT_WR)
                first, second = (strict_json(line) for line in recv_all(sock).splitlines())
            assert first["error"]["code"] == code
            assert second == {"id": 2, "ok": True, "prime": True}
        server.wait_until(lambda: not server.listener.connections, "every slot is free")


# -- a real process under --log-json -----------------------------------------------------------


@pytest.mark.e2e
def test_log_json_stays_json_lines_under_bad_requests(tmp_path: Path) -> None:
    server = start_server_process(
        "bank",
        "--port",
        "0",
        "--log-json",
        "--max-connections",
        "3",
        "--db",
        f"sqlite:///{tmp_path / 'bank.db'}",
    )
    try:
        for _ in range(10):
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                sock.sendall(b'{"op":"stats","id":"\\ud800"}\n{"op":"stats","id":NaN}\n')
                sock.shutdown(socket.SHUT_WR)
                replies = [strict_json(line) for line in recv_all(sock).splitlines()]
            assert [r["error"]["code"] for r in replies] == ["bad_encoding", "bad_json"]
    finally:
        assert server.stop() == 0
    lines = server.text().splitlines()
    entries = [json.loads(line) for line in lines]  # every line of stderr is one JSON object
    warnings = [e for e in entries if e["level"] == "WARNING"]
    assert len(warnings) == 20  # one per bad request
    assert not [e for e in entries if e["level"] in ("ERROR", "CRITICAL")]
    assert "Task exception was never retrieved" not in server.text()
