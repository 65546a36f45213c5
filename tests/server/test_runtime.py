"""The runtime over real sockets, with a small test service whose replies we control."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from typing import Any

import pytest

from helpers import RunningServer, recv_all, recv_until, running_server, wait_until
from socklab.errors import DropConnection, InvalidRequest
from socklab.server.runtime import Limits
from socklab.services.base import ConnectionInfo, JsonReply, Service, Session
from socklab.wire.framing import encode_lab_frame


class ProbeSession(Session):
    """json: op echo (sync), sleep (async, ``s`` seconds), hold (async, until the test
    releases it), fail, crash, drop, stop."""

    def __init__(self, service: ProbeService, conn: ConnectionInfo) -> None:
        self.service = service
        self.conn = conn

    def handle_json(self, request: dict[str, Any]) -> Any:
        op = request.get("op")
        if op == "echo":
            return {"value": request.get("value")}
        if op == "sleep":
            return self._sleep(float(request["s"]), request.get("value"))
        if op == "hold":
            return self._hold(request.get("value"))
        if op == "fail":
            raise InvalidRequest("asked to fail")
        if op == "crash":
            raise RuntimeError("a bug")
        if op == "drop":
            raise DropConnection
        if op == "stop":
            self.conn.request_stop()
            return {"stopping": True}
        raise InvalidRequest(f"unknown op {op!r}")

    async def _sleep(self, seconds: float, value: Any) -> JsonReply:
        await asyncio.sleep(seconds)
        return {"value": value}

    async def _hold(self, value: Any) -> JsonReply:
        self.service.holding.set()
        await self.service.gate.wait()
        return {"value": value}

    def handle_line(self, line: str) -> str:
        if line == "slow":
            return self._slow_line()  # type: ignore[return-value]
        return f"line:{line}"

    async def _slow_line(self) -> str:
        await asyncio.sleep(0.2)
        return "slow done"

    def handle_lab(self, payload: str) -> str:
        return f"lab:{payload}"

    def close(self) -> None:
        self.service.closed += 1


class ProbeService(Service):
    name = "probe"

    def __init__(self) -> None:
        self.closed = 0
        self.stopped = False
        self.holding = threading.Event()
        """Set when a ``hold`` request is being handled."""
        self.gate = asyncio.Event()
        """What ``hold`` requests wait for; ``release()`` sets it."""

    def release(self, server: RunningServer) -> None:
        """Let every ``hold`` request (now and later) answer."""
        server.loop.call_soon_threadsafe(self.gate.set)

    def open_session(self, conn: ConnectionInfo) -> Session:
        return ProbeSession(self, conn)

    async def stop(self) -> None:
        self.stopped = True


def send_json(sock: socket.socket, *messages: dict[str, Any]) -> None:
    sock.sendall(b"".join(json.dumps(m).encode() + b"\n" for m in messages))


def read_json(sock: socket.socket, count: int) -> list[dict[str, Any]]:
    data = b""
    while data.count(b"\n") < count:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {data!r}"
        data += chunk
    return [json.loads(line) for line in data.splitlines()]


def test_pipelined_replies_come_back_in_order_with_ids() -> None:
    with running_server(ProbeService()) as server, server.connect() as sock:
        send_json(
            sock,
            {"op": "sleep", "s": 0.2, "value": "slow", "id": 1},
            {"op": "echo", "value": "fast", "id": 2},
            {"op": "fail", "id": 3},
            {"op": "sleep", "s": 0.01, "value": "quick", "id": 4},
            {"op": "echo", "value": 5, "id": "five"},
        )
        replies = read_json(sock, 5)
    assert [r["id"] for r in replies] == [1, 2, 3, 4, "five"]
    assert replies[0] == {"id": 1, "ok": True, "value": "slow"}
    assert replies[2] == {
        "id": 3,
        "ok": False,
        "error": {"code": "invalid_request", "message": "asked to fail"},
    }


def test_bad_json_line_gets_an_error_and_the_connection_goes_on() -> None:
    with running_server(ProbeService()) as server, server.connect() as sock:
        sock.sendall(b'{"op": "echo", "value": 1}\n{broken\n{"op": "echo", "value": 2}\n')
        replies = read_json(sock, 3)
    assert replies[0]["value"] == 1
    assert replies[1]["ok"] is False and replies[1]["error"]["code"] == "bad_json"
    assert replies[2]["value"] == 2


def test_a_bug_in_a_service_is_an_internal_error_not_a_crash(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with running_server(ProbeService()) as server, server.connect() as sock:
        send_json(sock, {"op": "crash", "id": 1}, {"op": "echo", "value": "alive", "id": 2})
        replies = read_json(sock, 2)
    assert replies[0]["error"]["code"] == "internal_error"
    assert "a bug" not in json.dumps(replies[0])
    assert replies[1]["value"] == "alive"


def test_drop_connection_closes_without_a_reply() -> None:
    with running_server(ProbeService()) as server, server.connect() as sock:
        send_json(sock, {"op": "drop", "id": 1})
        assert recv_all(sock) == b""


@pytest.mark.parametrize(
    ("garbage", "code"),
    [
        pytest.param(
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 60,
            "tls_not_enabled",
            id="tls-hello",
        ),
        pytest.param(b"12" + b"\x00" * 62 + b"payload", "unknown_dialect", id="binary-header"),
        pytest.param(b"-12".ljust(64), "bad_header", id="negative-length"),
        pytest.param(b"twelve".ljust(64), "bad_header", id="word-length"),
        pytest.param(b"9999999".ljust(64), "too_large", id="oversize-length"),
    ],
)
def test_hostile_first_bytes_get_one_error_then_close(garbage: bytes, code: str) -> None:
    with running_server(ProbeService()) as server:
        with server.connect() as sock:
            sock.sendall(garbage)
            reply = recv_all(sock)
        assert reply.startswith(b"ERROR ") and code.encode() in reply and reply.count(b"\n") == 1
        with server.connect() as other:  # the server is unharmed
            send_json(other, {"op": "echo", "value": 1, "id": 1})
            assert read_json(other, 1)[0]["value"] == 1


def test_lab_header_split_in_pieces_and_frames_in_one_segment() -> None:
    with running_server(ProbeService()) as server, server.connect() as sock:
        frame = encode_lab_frame(b"hello")
        for piece in (frame[:1], frame[1:30], frame[30:64], frame[64:66], frame[66:]):
            sock.sendall(piece)
            time.sleep(0.01)
        assert recv_until(sock, b"lab:hello", 100) == b"lab:hello"
        sock.sendall(encode_lab_frame(b"a") + encode_lab_frame(b"b"))
        data = b""
        while len(data) < len(b"lab:alab:b"):
            data += sock.recv(100)
        assert data == b"lab:alab:b"


def test_lab_disconnect_gets_the_farewell_then_close() -> None:
    with running_server(ProbeService()) as server, server.connect() as sock:
        sock.sendall(encode_lab_frame(b"!DISCONNECT") + encode_lab_frame(b"ignored"))
        assert recv_all(sock) == b"[DISCONNECTED]"


def test_line_dialect_and_invalid_utf8() -> None:
    with running_server(ProbeService()) as server, server.connect() as sock:
        sock.sendall(b"hello\n\xff\xfe\nslow\nafter\n")
        data = b""
        while data.count(b"\n") < 4:
            data += sock.recv(1000)
    lines = data.decode().splitlines()
    assert lines[0] == "line:hello"
    assert lines[1].startswith("ERROR bad_encoding:")
    assert lines[2:] == ["slow done", "line:after"]


def test_oversize_message_is_refused_and_closed() -> None:
    limits = Limits(max_message_bytes=1024)
    with running_server(ProbeService(), limits) as server, server.connect() as sock:
        sock.sendall(b'{"op": "echo", "value": "' + b"x" * 5000)
        reply = recv_all(sock)
    assert json.loads(reply)["error"]["code"] == "too_large"


def test_a_partial_message_does_not_stall_other_connections() -> None:
    # The partial message's timeout is far beyond the socket timeout of the other
    # connection: if waiting for the rest of it held anybody up, their reads would time out.
    limits = Limits(partial_timeout_s=3600)
    with running_server(ProbeService(), limits) as server, server.connect() as slow:
        slow.sendall(b'{"op": "echo", "val')  # and never the rest
        with server.connect() as fast:
            for i in range(20):
                send_json(fast, {"op": "echo", "value": i, "id": i})
                assert read_json(fast, 1)[0]["value"] == i
        slow.setblocking(False)
        with pytest.raises(BlockingIOError):  # still waiting for the rest, unanswered
            slow.recv(100)


def test_a_partial_message_times_out() -> None:
    limits = Limits(partial_timeout_s=0.3)
    with running_server(ProbeService(), limits) as server, server.connect() as slow:
        slow.sendall(b'{"op": "echo", "val')  # and never the rest
        reply = recv_all(slow)  # the server answers, then closes
    assert json.loads(reply)["error"]["code"] == "timeout"


def test_slow_drip_lab_header_times_out() -> None:
    limits = Limits(partial_timeout_s=0.3)
    with running_server(ProbeService(), limits) as server, server.connect() as sock:
        sock.sendall(b"12")  # the start of a header, then silence
        assert b"ERROR timeout" in recv_all(sock)


def test_idle_connection_is_closed() -> None:
    limits = Limits(idle_timeout_s=0.2)
    with running_server(ProbeService(), limits) as server, server.connect() as sock:
        send_json(sock, {"op": "echo", "value": 1, "id": 1})
        assert read_json(sock, 1)[0]["ok"]
        assert recv_all(sock) == b""  # closed by the server after 0.2 s of silence


def test_connections_over_the_limit_are_refused() -> None:
    limits = Limits(max_connections=2)
    with running_server(ProbeService(), limits) as server:
        first, second = server.connect(), server.connect()
        send_json(first, {"op": "echo", "value": 1, "id": 1})
        send_json(second, {"op": "echo", "value": 2, "id": 1})
        assert read_json(first, 1)[0]["value"] == 1 and read_json(second, 1)[0]["value"] == 2
        with server.connect() as third:  # accepted by the kernel, then aborted by the server
            try:
                send_json(third, {"op": "echo", "value": 3, "id": 1})
                refused = recv_all(third)
            except ConnectionResetError:
                refused = b""
            assert refused == b""  # no reply: reset or closed
        first.close()
        wait_until(lambda: len(server.listener.connections) == 1, "the first connection closed")
        with server.connect() as fourth:
            send_json(fourth, {"op": "echo", "value": 4, "id": 1})
            assert read_json(fourth, 1)[0]["value"] == 4
        second.close()


def test_a_client_that_never_reads_does_not_hurt_others() -> None:
    with running_server(ProbeService()) as server:
        hog = server.connect()
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        big = b"".join(
            json.dumps({"op": "echo", "value": "x" * 1000, "id": i}).encode() + b"\n"
            for i in range(3000)
        )
        hog.settimeout(0.5)
        with contextlib.suppress(TimeoutError):
            hog.sendall(big)  # the server stops reading once its replies back up
        with server.connect() as other:
            send_json(other, {"op": "echo", "value": "fine", "id": 1})
            assert read_json(other, 1)[0]["value"] == "fine"
        hog.close()


def is_refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def test_graceful_stop_finishes_the_request_in_flight() -> None:
    service = ProbeService()
    with running_server(service) as server, server.connect() as sock:
        send_json(sock, {"op": "hold", "value": "finished", "id": 1})
        assert service.holding.wait(30), "the request never reached the service"
        stopping = asyncio.run_coroutine_threadsafe(server.listener.stop(), server.loop)
        wait_until(lambda: is_refused(server.port), "the listener stopped accepting")
        assert not stopping.done()  # it waits for the request in flight
        service.release(server)
        reply = recv_all(sock)
        stopping.result(30)
        assert json.loads(reply)["value"] == "finished"
        assert service.stopped
        assert server.listener.connections == set()


def test_request_stop_from_a_session_stops_the_listener() -> None:
    with running_server(ProbeService()) as server, server.connect() as sock:
        send_json(sock, {"op": "stop", "id": 1})
        assert read_json(sock, 1)[0]["stopping"] is True
        wait_until(server.listener.stopped.is_set, "the listener stopped")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.port), timeout=1)


def test_an_ipv6_listener_logs_its_address_in_brackets(caplog: pytest.LogCaptureFixture) -> None:
    from socklab.server.runtime import Listener
    from socklab.services.text import TextService

    async def scenario() -> int:
        listener = Listener(TextService(), "::1", 0)
        await listener.start()
        try:
            return listener.port
        finally:
            await listener.stop()

    with caplog.at_level("INFO"):
        port = asyncio.run(scenario())
    assert f"Text Server started and listening on [::1]:{port}" in caplog.text
