"""The thread-per-connection baseline speaks the lab protocol correctly, splits and all."""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from helpers import HOST
from socklab.bench.runner import BenchSettings, run_bench
from socklab.bench.scenarios import TEXT_LINES, ScenarioOptions, text_reply
from socklab.services.base import ConnectionInfo, Session
from socklab.services.numbers import NumbersService
from socklab.services.text import TextService
from socklab.wire.framing import Dialect, encode_lab_frame

BASELINE = Path(__file__).resolve().parents[2] / "benchmarks" / "baselines" / "thread_server.py"


def load_baseline() -> ModuleType:
    spec = importlib.util.spec_from_file_location("thread_server", BASELINE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


baseline = load_baseline()
INFO = ConnectionInfo(peer="test")


@contextlib.contextmanager
def baseline_server(service: str = "text") -> Iterator[int]:
    ports: list[int] = []
    ready = threading.Event()

    def on_ready(port: int) -> None:
        ports.append(port)
        ready.set()

    thread = threading.Thread(target=baseline.serve, args=(HOST, 0, service, on_ready), daemon=True)
    thread.start()
    assert ready.wait(5)
    yield ports[0]  # the daemon thread dies with the test process


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"closed after {data!r}"
        data += chunk
    return data


def lab_session_reply(session: Session, text: str) -> bytes:
    reply = session.handle_lab(text)
    assert isinstance(reply, str)
    return reply.encode()


def test_replies_are_socklabs_bytes() -> None:
    text_session = TextService().open_session(INFO)
    numbers_session = NumbersService().open_session(INFO)
    for text in TEXT_LINES:
        assert baseline.text_reply(text).encode() == lab_session_reply(text_session, text)
        assert text_reply(text).encode() == lab_session_reply(text_session, text)
    for number in ("121", "10", "97", "7919", "12321", "0", "1", "2", "0110", "-121", " 7 "):
        assert baseline.numbers_reply(number).encode() == lab_session_reply(numbers_session, number)


def test_header_and_payload_split_across_segments() -> None:
    frame = encode_lab_frame(b"Hello World")
    with baseline_server() as port, socket.create_connection((HOST, port), timeout=5) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for piece in (frame[:10], frame[10:63], frame[63:66], frame[66:]):
            sock.sendall(piece)
            time.sleep(0.05)  # separate segments: the server sees partial reads
        expected = text_reply("Hello World").encode()
        assert recv_exactly(sock, len(expected)) == expected


def test_byte_by_byte_and_several_frames_in_one_segment() -> None:
    texts = ["one", "Two", "ÜBER straße"]
    with baseline_server() as port, socket.create_connection((HOST, port), timeout=5) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for byte in encode_lab_frame(b"abc"):
            sock.sendall(bytes([byte]))
        expected = text_reply("abc").encode()
        assert recv_exactly(sock, len(expected)) == expected
        sock.sendall(b"".join(encode_lab_frame(t.encode()) for t in texts))
        expected = b"".join(text_reply(t).encode() for t in texts)
        assert recv_exactly(sock, len(expected)) == expected


def test_disconnect_is_answered_then_closed() -> None:
    with baseline_server() as port, socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(encode_lab_frame(b"!DISCONNECT"))
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    assert data == TextService().open_session(INFO).farewell().encode()


def test_a_bad_header_closes_the_connection() -> None:
    with baseline_server() as port, socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(b"hello".ljust(64))
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    assert data.startswith(b"ERROR bad_header")


def test_numbers_baseline_over_the_socket() -> None:
    with baseline_server("numbers") as port:
        result = run_bench(
            BenchSettings(
                service="numbers",
                port=port,
                dialect=Dialect.LAB,
                connections=3,
                duration_s=0.3,
                warmup_s=0.1,
                options=ScenarioOptions(),
            )
        )
    assert result.errors == {}
    assert result.requests > 0


def test_runs_as_a_script_and_reports_its_port() -> None:
    with subprocess.Popen(
        [sys.executable, str(BASELINE), "--port", "0"], stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("listening on 127.0.0.1:")
            port = int(line.rsplit(":", 1)[1])
            with socket.create_connection((HOST, port), timeout=5) as sock:
                sock.sendall(encode_lab_frame(b"hi"))
                expected = text_reply("hi").encode()
                assert recv_exactly(sock, len(expected)) == expected
        finally:
            proc.terminate()
        assert proc.wait(10) == 0


@pytest.mark.parametrize("size", [0, 1, 64, 5000])
def test_recv_exactly_over_a_socket_pair(size: int) -> None:
    left, right = socket.socketpair()
    with left, right:
        payload = bytes(range(256)) * (size // 256 + 1)
        payload = payload[:size]

        def send() -> None:
            for i in range(0, size, 7):
                right.sendall(payload[i : i + 7])

        sender = threading.Thread(target=send)
        sender.start()
        got = baseline.recv_exactly(left, size) if size else b""
        sender.join()
        assert got == payload
        right.close()
        assert baseline.recv_exactly(left, 1) is None
