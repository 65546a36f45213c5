"""The load generator against real servers: right replies count, wrong ones are errors.

Durations are short and nothing asserts on speed: machines are noisy.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from helpers import HOST, RunningServer, running_server
from socklab.bench.load import BenchError
from socklab.bench.runner import BenchResult, BenchSettings, run_bench, split
from socklab.bench.scenarios import ScenarioOptions, text_reply
from socklab.errors import DropConnection, InvalidRequest
from socklab.server.runtime import Limits
from socklab.services.base import ConnectionInfo, Service, Session
from socklab.services.exchange import ExchangeService
from socklab.services.numbers import NumbersService
from socklab.services.text import TextService
from socklab.wire.framing import Dialect

SHORT = {"duration_s": 0.4, "warmup_s": 0.1, "timeout_s": 5.0}
QUICK_LIMITS = Limits(shutdown_grace_s=0.5)


def bench(port: int, service: str = "text", **kwargs: Any) -> BenchResult:
    settings = BenchSettings(service=service, host=HOST, port=port, **{**SHORT, **kwargs})
    return run_bench(settings)


def assert_clean(result: BenchResult) -> None:
    assert result.errors == {}
    assert result.requests > 0
    assert result.requests == result.histogram.count
    assert 0 < result.latency_ms(0.5) <= result.latency_ms(0.99) <= result.histogram.max_ns / 1e6
    assert result.requests_per_s > 0


# -- the real services -------------------------------------------------------------------


@pytest.mark.parametrize("dialect", list(Dialect), ids=lambda d: d.value)
@pytest.mark.parametrize("pipeline", [1, 8])
def test_text_service_every_dialect(dialect: Dialect, pipeline: int) -> None:
    with running_server(TextService()) as server:
        result = bench(server.port, dialect=dialect, connections=4, pipeline=pipeline)
    assert_clean(result)


def test_batches_of_pipelined_requests() -> None:
    with running_server(TextService()) as server:
        result = bench(server.port, dialect=Dialect.JSON, connections=3, pipeline=8, batch=True)
    assert_clean(result)
    assert result.to_json()["batch"] is True


@pytest.mark.parametrize("dialect", list(Dialect), ids=lambda d: d.value)
@pytest.mark.parametrize(
    ("digits", "kind"),
    [(None, "mixed"), (400, "easy"), (40, "hard")],
    ids=["small", "400-digit-easy", "40-digit-hard"],
)
def test_numbers_service(dialect: Dialect, digits: int | None, kind: str) -> None:
    # Hard numbers above the service's offload size go to a process pool, whose start-up
    # on a busy machine could outlast a short run: these stay below it.
    with running_server(NumbersService()) as server:
        result = bench(
            server.port,
            "numbers",
            dialect=dialect,
            connections=3,
            options=ScenarioOptions(digits=digits, extra={"kind": kind}),
        )
    assert_clean(result)


@pytest.mark.parametrize("dialect", [Dialect.JSON, Dialect.LINE], ids=lambda d: d.value)
def test_exchange_service(dialect: Dialect) -> None:
    service = ExchangeService(on_out_of_range="reject")
    with running_server(service) as server:
        result = bench(server.port, "exchange", dialect=dialect, connections=3, pipeline=2)
    assert_clean(result)


def test_several_processes_merge_their_results() -> None:
    with running_server(TextService()) as server:
        result = bench(server.port, dialect=Dialect.LAB, connections=5, processes=2)
    assert_clean(result)
    assert len(result.cpu_s) == 2
    assert result.to_json()["processes"] == 2


def test_split_connections_between_processes() -> None:
    assert split(50, 3) == [17, 17, 16]
    assert split(2, 2) == [1, 1]
    assert sum(split(7, 4)) == 7


def test_nothing_listening_is_a_bench_error() -> None:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(BenchError, match="cannot connect"):
            bench(port, connections=2)


# -- servers that answer wrongly ---------------------------------------------------------

BAD = "hi"  # one of the text scenario's lines; every other line is answered right


class FaultySession(Session):
    """The text service, except for ``BAD``, which ``fault`` answers."""

    def __init__(self, fault: Callable[[str, str], Any]) -> None:
        self.fault = fault

    def handle_json(self, request: dict[str, Any]) -> Any:
        text = request["text"]
        if text == BAD:
            return self.fault(text, "json")
        return {"lower": text.lower(), "upper": text.upper()}

    def handle_line(self, line: str) -> Any:
        return self.fault(line, "line") if line == BAD else text_reply(line)


class FaultyService(Service):
    name = "text"

    def __init__(self, fault: Callable[[str, str], Any]) -> None:
        self.fault = fault

    def open_session(self, conn: ConnectionInfo) -> Session:
        return FaultySession(self.fault)


def wrong_case(text: str, dialect: str) -> Any:
    if dialect == "json":
        return {"lower": text.lower(), "upper": text.lower()}
    return f"[Lower Case] {text.lower()} [Upper Case] {text.lower()}"


def refuse(text: str, dialect: str) -> Any:
    raise InvalidRequest("no")


def drop(text: str, dialect: str) -> Any:
    raise DropConnection


class Late:
    """A fault whose replies wait until ``release()``: after the load generator is done."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()

    async def __call__(self, text: str, dialect: str) -> Any:
        await self.gate.wait()
        if dialect == "json":
            return {"lower": text.lower(), "upper": text.upper()}
        return text_reply(text)

    def release(self, server: RunningServer) -> None:
        server.loop.call_soon_threadsafe(self.gate.set)


@pytest.mark.parametrize("dialect", list(Dialect), ids=lambda d: d.value)
@pytest.mark.parametrize(
    ("fault", "kind"),
    [(wrong_case, "wrong_reply"), (refuse, "error_reply"), (drop, "disconnected")],
    ids=["wrong", "refused", "dropped"],
)
def test_wrong_replies_are_errors(dialect: Dialect, fault: Any, kind: str) -> None:
    with running_server(FaultyService(fault), QUICK_LIMITS) as server:
        result = bench(server.port, dialect=dialect, connections=3, pipeline=2)
    assert set(result.errors) == {kind}
    assert result.errors[kind] > 0
    # The other lines were right and counted; the connections carried on or reconnected.
    assert result.requests > 0


@pytest.mark.parametrize("dialect", list(Dialect), ids=lambda d: d.value)
def test_a_reply_that_never_comes_is_a_timeout(dialect: Dialect) -> None:
    late = Late()
    with running_server(FaultyService(late), QUICK_LIMITS) as server:
        try:
            result = bench(
                server.port, dialect=dialect, connections=2, duration_s=0.6, timeout_s=0.1
            )
        finally:
            late.release(server)  # so that the server stops at once
    assert set(result.errors) == {"timeout"}


def test_a_correct_json_reply_formatted_differently_is_not_an_error() -> None:
    def reordered(text: str, dialect: str) -> Any:
        if dialect == "json":
            return {"upper": text.upper(), "length": len(text), "lower": text.lower()}
        return text_reply(text)

    with running_server(FaultyService(reordered)) as server:
        result = bench(server.port, dialect=Dialect.JSON, connections=2, pipeline=4)
    assert_clean(result)


# -- a raw server that dribbles its replies ----------------------------------------------


@contextlib.contextmanager
def dribbling_lab_server() -> Iterator[int]:
    """A lab text server that sends every reply one byte at a time."""
    listener = socket.create_server((HOST, 0))
    stopping = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            buffer = b""
            while not stopping.is_set():
                try:
                    chunk = conn.recv(4096)
                except OSError:
                    return
                if not chunk:
                    return
                buffer += chunk
                while len(buffer) >= 64 and len(buffer) >= 64 + int(buffer[:64]):
                    size = int(buffer[:64])
                    text = buffer[64 : 64 + size].decode()
                    buffer = buffer[64 + size :]
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    for byte in text_reply(text).encode():
                        try:
                            conn.sendall(bytes([byte]))
                        except OSError:  # the load generator has finished and closed
                            return
                        time.sleep(0.0002)

    def accept() -> None:
        while not stopping.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stopping.set()
        listener.close()
        thread.join(5)


def test_lab_replies_split_into_single_bytes() -> None:
    with dribbling_lab_server() as port:
        result = bench(port, dialect=Dialect.LAB, connections=2, pipeline=2)
    assert_clean(result)
