"""TLS on every port, over real sockets: every service in every dialect, plain clients on a
TLS port and TLS clients on a plain port, and handshakes that fail or stall."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trustme

import tls_helpers
from helpers import HOST, captured_records
from socklab.client.json_client import JsonClient
from socklab.client.tls import TlsOptions, connect_tls
from socklab.errors import PeerProtocolError
from socklab.server.runtime import Limits, Listener, new_event_loop
from socklab.server.tls import (
    TLS_HANDSHAKE,
    TlsSetupError,
    first_byte_error,
    server_context,
)
from socklab.services.bank import BankService
from socklab.services.base import Service
from socklab.services.exchange import ExchangeService
from socklab.services.numbers import NumbersService
from socklab.services.text import TextService
from socklab.wire.framing import encode_lab_frame
from tls_helpers import WAIT_S, serving, thread_server

TLS_REQUIRED = b"ERROR tls_required: this port speaks TLS; connect with --tls\n"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    return tls_helpers.server_context(ca)


@pytest.fixture(scope="module")
def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": new_event_loop,  # uvloop when installed, as `socklab serve` runs
}


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Callable[[Awaitable[Any]], Any]:
    """Run a coroutine on a fresh loop of each kind: the TLS layer swaps the protocol of
    the loop's own transport, so both implementations must work."""

    def runner(coro: Awaitable[Any]) -> Any:
        with asyncio.Runner(loop_factory=LOOPS[request.param]) as loop_runner:
            return loop_runner.run(coro)  # type: ignore[arg-type]

    return runner


async def exchange_bytes(port: int, data: bytes, size: int, tls: ssl.SSLContext | None) -> bytes:
    """Send ``data`` and read exactly ``size`` bytes of reply, within ``WAIT_S``."""
    async with asyncio.timeout(WAIT_S):
        reader, writer = await asyncio.open_connection(
            HOST, port, ssl=tls, server_hostname=HOST if tls else None
        )
        try:
            writer.write(data)
            return await reader.readexactly(size)
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()


async def plain_transcript(port: int, data: bytes) -> bytes:
    """Everything a plain client is told after sending ``data`` and half-closing."""
    async with asyncio.timeout(WAIT_S):
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(data)
        writer.write_eof()
        reply = await reader.read()
        writer.close()
        return reply


def strict_client(port: int, tls: ssl.SSLContext) -> ssl.SSLSocket:
    """A blocking TLS client for which an end of stream without the server's close_notify
    is an error (``ssl.SSLEOFError``), not a quiet end."""
    sock = socket.create_connection((HOST, port), timeout=WAIT_S)
    return tls.wrap_socket(sock, server_hostname=HOST, suppress_ragged_eofs=False)


def read_to_end(sock: ssl.SSLSocket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def lab(*payloads: str) -> bytes:
    return b"".join(encode_lab_frame(p.encode()) for p in payloads)


def jsons(*messages: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(m).encode() + b"\n" for m in messages)


# (service factory, request bytes, a piece of the expected reply)
CASES: dict[str, tuple[Callable[[Path], Service], bytes, bytes]] = {
    "text-json": (
        lambda _: TextService(),
        jsons({"op": "convert", "text": "Hello", "id": 1}),
        b'"upper":"HELLO"',
    ),
    "text-line": (lambda _: TextService(), b"upper Hello\nlower Hello\n", b"HELLO\nhello\n"),
    "text-lab": (lambda _: TextService(), lab("Hello"), b"[Lower Case] hello [Upper Case] HELLO"),
    "numbers-json": (
        lambda _: NumbersService(),
        jsons({"op": "check", "number": "121", "id": 1}),
        b'"palindrome":true',
    ),
    "numbers-line": (lambda _: NumbersService(), b"prime 97\n121\n", b"True"),
    "numbers-lab": (lambda _: NumbersService(), lab("121"), b"[Prime] False [Palindrome] True"),
    "exchange-json": (
        lambda _: ExchangeService("S", seed=7),
        b'{"client_name": "C", "client_number": 5}',  # seed 000's unframed request
        b'"server_name":"S"',
    ),
    "exchange-line": (lambda _: ExchangeService("S", seed=7), b"C 5\n", b"S"),
    "bank-json": (
        lambda tmp: BankService(f"sqlite:///{tmp / 'bank.db'}"),
        jsons({"op": "login", "account": 1, "pin": "1234", "id": 1}, {"op": "balance", "id": 2}),
        b'"balance":"10000.00"',
    ),
    "bank-line": (
        lambda tmp: BankService(f"sqlite:///{tmp / 'bank.db'}"),
        b"login 1 1234\nbalance\n",
        b"10000.00",
    ),
    "bank-lab": (
        lambda tmp: BankService(f"sqlite:///{tmp / 'bank.db'}"),
        lab("11234", "112341"),
        b"10000.00",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_service_answers_over_tls_as_it_does_in_plain(
    case: str,
    tmp_path: Path,
    server_tls: ssl.SSLContext,
    client_tls: ssl.SSLContext,
    run: Callable[[Awaitable[Any]], Any],
) -> None:
    make, request, expected = CASES[case]
    (tmp_path / "plain").mkdir()
    (tmp_path / "tls").mkdir()

    async def main() -> tuple[bytes, bytes]:
        async with serving(make(tmp_path / "plain"), None) as plain:
            want = await plain_transcript(plain.port, request)
        async with serving(make(tmp_path / "tls"), server_tls) as secure:
            got = await exchange_bytes(secure.port, request, len(want), client_tls)
        return want, got

    want, got = run(main())
    assert expected in want
    assert got == want


def test_pipelined_requests_and_big_messages_cross_many_records(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext, run: Callable[[Awaitable[Any]], Any]
) -> None:
    big = "x" * 60_000  # past one TLS record (16 KiB)
    requests = [{"op": "convert", "text": f"m{i}", "id": i} for i in range(500)]
    requests.append({"op": "convert", "text": big, "id": "big"})

    async def main() -> list[dict[str, Any]]:
        async with serving(TextService(), server_tls) as listener, asyncio.timeout(WAIT_S):
            reader, writer = await asyncio.open_connection(
                HOST, listener.port, ssl=client_tls, server_hostname=HOST, limit=1 << 20
            )
            writer.write(jsons(*requests))
            replies = [json.loads(await reader.readline()) for _ in requests]
            writer.close()
            return replies

    replies = run(main())
    assert [r["id"] for r in replies] == [r["id"] for r in requests]
    assert replies[7]["upper"] == "M7"
    assert replies[-1]["upper"] == big.upper()


def test_the_server_ends_a_tls_session_cleanly(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext, run: Callable[[Awaitable[Any]], Any]
) -> None:
    """``!DISCONNECT`` closes with a close_notify: the client reads a clean end of stream."""

    async def main() -> bytes:
        async with serving(TextService(), server_tls) as listener, asyncio.timeout(WAIT_S):
            client = await asyncio.to_thread(strict_client, listener.port, client_tls)
            with client:
                client.sendall(lab("Hi", "!DISCONNECT"))
                return await asyncio.to_thread(read_to_end, client)

    assert run(main()).endswith(b"[Upper Case] !DISCONNECT")


@pytest.mark.parametrize(
    "first",
    [
        pytest.param(b'{"op": "convert", "text": "a"}\n', id="json"),
        pytest.param(b'{"client_name": "C", "client_number": 5}', id="seed-000-unframed"),
        pytest.param(b"upper a\n", id="line"),
        pytest.param(encode_lab_frame(b"abc"), id="lab"),
        pytest.param(b"G", id="one-byte"),
    ],
)
def test_a_plain_client_on_a_tls_port_is_told_at_once(
    first: bytes, server_tls: ssl.SSLContext, run: Callable[[Awaitable[Any]], Any]
) -> None:
    async def main() -> bytes:
        async with serving(TextService(), server_tls) as listener, asyncio.timeout(WAIT_S):
            reader, writer = await asyncio.open_connection(HOST, listener.port)
            writer.write(first)
            reply = await reader.read()  # the line, then the end of the stream
            writer.close()
            return reply

    with captured_records("socklab.server.runtime") as records:
        assert run(main()) == TLS_REQUIRED
    assert any("tls_required" in r.getMessage() for r in records)


def test_a_tls_client_on_a_plain_port_fails_the_handshake_at_once(
    client_tls: ssl.SSLContext, run: Callable[[Awaitable[Any]], Any]
) -> None:
    async def main() -> BaseException | None:
        async with serving(TextService(), None) as listener, asyncio.timeout(WAIT_S):
            try:
                _, writer = await asyncio.open_connection(
                    HOST, listener.port, ssl=client_tls, server_hostname=HOST
                )
            except (ssl.SSLError, ConnectionError) as exc:
                return exc
            writer.close()
            return None

    with captured_records("socklab.server.runtime") as records:
        assert isinstance(run(main()), ssl.SSLError)
    messages = [r.getMessage() for r in records]
    assert any("TLS handshake on a port that does not speak TLS" in m for m in messages)


def test_the_blocking_client_explains_both_mismatches(
    server_tls: ssl.SSLContext, ca_file: str
) -> None:
    tls = TlsOptions(cafile=ca_file)
    with thread_server(TextService(), server_tls) as port:
        with JsonClient.connect(HOST, port, tls=tls) as client:
            assert client.request("convert", text="a")["upper"] == "A"
        with JsonClient.connect(HOST, port) as client, pytest.raises(PeerProtocolError) as refused:
            client.request("convert", text="a")
        with pytest.raises(PeerProtocolError) as untrusted:
            JsonClient.connect(HOST, port, tls=TlsOptions())  # the system's CAs only
    assert str(refused.value) == (
        f"the server at {HOST}:{port} refused: "
        "ERROR tls_required: this port speaks TLS; connect with --tls"
    )
    assert untrusted.value.code == "tls_untrusted"
    assert str(untrusted.value).startswith(f"the certificate of {HOST}:{port} is not trusted")
    with thread_server(TextService(), None) as port, pytest.raises(PeerProtocolError) as plain:
        JsonClient.connect(HOST, port, tls=tls)
    assert str(plain.value) == (
        f"the server at {HOST}:{port} does not speak TLS (is it started with --tls-cert?)"
    )


def test_insecure_skips_the_certificate_check(server_tls: ssl.SSLContext) -> None:
    with (
        thread_server(TextService(), server_tls) as port,
        JsonClient.connect(HOST, port, tls=TlsOptions(insecure=True)) as client,
    ):
        assert client.request("convert", text="b")["lower"] == "b"


def test_a_stalled_handshake_is_closed_after_the_partial_timeout(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext, run: Callable[[Awaitable[Any]], Any]
) -> None:
    """Half a ClientHello, then silence: closed by the partial-message timeout, while
    another client is served meanwhile."""
    limits = Limits(partial_timeout_s=1.0, idle_timeout_s=60)

    async def main() -> tuple[bytes, bytes]:
        async with serving(TextService(), server_tls, limits) as listener:
            async with asyncio.timeout(WAIT_S):
                reader, writer = await asyncio.open_connection(HOST, listener.port)
                writer.write(bytes([TLS_HANDSHAKE, 3, 1, 0, 200]) + b"\x01" * 20)
                other = await exchange_bytes(listener.port, b"upper ok\n", len(b"OK\n"), client_tls)
                stalled = await reader.read()
                writer.close()
            return stalled, other

    with captured_records("socklab.server.tls") as records:
        stalled, other = run(main())
    assert stalled == b""
    assert other == b"OK\n"
    assert [r.getMessage() for r in records if "Incomplete TLS handshake" in r.getMessage()]


def test_a_trickled_tls_record_is_closed_after_the_partial_timeout(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext, run: Callable[[Awaitable[Any]], Any]
) -> None:
    """After the handshake, the start of a record and nothing more (OpenSSL would wait
    silently): closed by the partial-message timeout, not the idle timeout."""
    limits = Limits(partial_timeout_s=1.0, idle_timeout_s=60)

    async def main() -> tuple[bytes, bytes]:
        async with serving(TextService(), server_tls, limits) as listener:
            async with asyncio.timeout(WAIT_S):
                reader, writer = await asyncio.open_connection(HOST, listener.port)
                incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
                tls = client_tls.wrap_bio(incoming, outgoing, server_hostname=HOST)
                while True:  # the handshake, by hand
                    try:
                        tls.do_handshake()
                        break
                    except ssl.SSLWantReadError:
                        writer.write(outgoing.read())
                        incoming.write(await reader.read(65536))
                writer.write(outgoing.read())
                tls.write(b"upper one\n")
                writer.write(outgoing.read())  # one whole record: answered
                answer = await reader.read(65536)
                incoming.write(answer)
                first = tls.read(100)
                tls.write(b"upper two\n")
                record = outgoing.read()
                writer.write(record[:-3])  # all but its last bytes
                rest = b""
                while chunk := await reader.read(65536):
                    rest += chunk
                writer.close()
                return first, rest

    with captured_records("socklab.server.tls") as records:
        first, rest = run(main())
    assert first == b"ONE\n"
    assert rest == b""  # closed; "two" never answered
    assert any("Incomplete TLS record" in r.getMessage() for r in records)


@pytest.mark.parametrize(
    "hello",
    [
        pytest.param(bytes([TLS_HANDSHAKE, 3, 1, 0, 5]) + b"\x00" * 5, id="garbage-record"),
        pytest.param(bytes([TLS_HANDSHAKE]) + b"\xff" * 4000, id="huge-length"),
    ],
)
def test_a_failed_handshake_is_logged_and_closed_and_the_server_goes_on(
    hello: bytes,
    server_tls: ssl.SSLContext,
    client_tls: ssl.SSLContext,
    run: Callable[[Awaitable[Any]], Any],
) -> None:
    async def main() -> tuple[bytes, bytes]:
        async with serving(TextService(), server_tls) as listener, asyncio.timeout(WAIT_S):
            reader, writer = await asyncio.open_connection(HOST, listener.port)
            writer.write(hello)
            with contextlib.suppress(ConnectionResetError):
                bad = await reader.read()  # an alert at most, then the end
            writer.close()
            good = await exchange_bytes(listener.port, b"upper ok\n", 3, client_tls)
            return bad, good

    with captured_records("socklab.server.tls") as records:
        bad, good = run(main())
    assert good == b"OK\n"
    assert not bad.startswith(b"ERROR")
    assert any("TLS handshake failed" in r.getMessage() for r in records)


def test_a_client_that_refuses_the_certificate_costs_the_server_nothing(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext, run: Callable[[Awaitable[Any]], Any]
) -> None:
    untrusting = ssl.create_default_context()  # does not know the test CA

    async def main() -> tuple[bool, bytes, int]:
        async with serving(TextService(), server_tls) as listener, asyncio.timeout(WAIT_S):
            refused = False
            try:
                await asyncio.open_connection(
                    HOST, listener.port, ssl=untrusting, server_hostname=HOST
                )
            except ssl.SSLCertVerificationError:
                refused = True
            good = await exchange_bytes(listener.port, b"upper ok\n", 3, client_tls)
            # The refused connection is forgotten (a condition, polled under the timeout).
            while listener.connections:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            return refused, good, len(listener.connections)

    assert run(main()) == (True, b"OK\n", 0)


def test_connect_tls_closes_the_socket_when_the_handshake_fails(ca_file: str) -> None:
    with thread_server(TextService(), None) as port:
        sock = socket.create_connection((HOST, port), timeout=WAIT_S)
        with pytest.raises(PeerProtocolError):
            connect_tls(sock, HOST, port, TlsOptions(cafile=ca_file), timeout_s=WAIT_S)
        assert sock.fileno() == -1


# -- the first byte and the certificate ------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "is_tls_port", "code"),
    [
        (TLS_HANDSHAKE, True, None),
        (ord("{"), True, "tls_required"),
        (ord("5"), True, "tls_required"),
        (TLS_HANDSHAKE, False, "tls_not_enabled"),
        (ord("{"), False, None),
        (ord("u"), False, None),
    ],
)
def test_the_first_byte_decides(first: int, is_tls_port: bool, code: str | None) -> None:
    error = first_byte_error(first, is_tls_port=is_tls_port)
    assert (error.code if error else None) == code
    assert error is None or error.fatal


def test_server_context_says_what_is_wrong(ca: trustme.CA, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    cert = ca.issue_cert(HOST)
    other = ca.issue_cert("other.example")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    other_key = tmp_path / "other-key.pem"
    other.private_key_pem.write_to_path(str(other_key))
    key = serialization.load_pem_private_key(cert.private_key_pem.bytes(), password=None)
    locked = tmp_path / "locked-key.pem"
    locked.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    assert server_context(str(cert_file), str(key_file)).verify_mode == ssl.CERT_NONE
    with pytest.raises(TlsSetupError, match=r"no such file: .*missing\.pem"):
        server_context(str(tmp_path / "missing.pem"), str(key_file))
    with pytest.raises(TlsSetupError, match="cannot use the certificate"):
        server_context(str(cert_file), str(other_key))
    with pytest.raises(TlsSetupError, match="cannot use the certificate"):
        server_context(str(key_file), str(key_file))
    with pytest.raises(TlsSetupError, match="is encrypted"):
        server_context(str(cert_file), str(locked))


def test_shutdown_closes_tls_connections_with_a_close_notify(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext, run: Callable[[Awaitable[Any]], Any]
) -> None:
    """An idle TLS connection and one stuck in its handshake do not hold up a graceful stop
    (the grace period is longer than the test's bound); the idle one ends cleanly."""
    limits = Limits(shutdown_grace_s=60, partial_timeout_s=60)

    async def main() -> bytes:
        listener = Listener(TextService(), HOST, 0, limits, tls=server_tls)
        await listener.start()
        async with asyncio.timeout(WAIT_S):
            client = await asyncio.to_thread(strict_client, listener.port, client_tls)
            client.sendall(b"upper a\n")
            assert await asyncio.to_thread(client.recv, 100) == b"A\n"
            _, stuck = await asyncio.open_connection(HOST, listener.port)
            stuck.write(bytes([TLS_HANDSHAKE, 3, 1]))
            await stuck.drain()
            await listener.stop()
            with client:
                rest = await asyncio.to_thread(read_to_end, client)
            stuck.close()
            return rest

    with captured_records("socklab.server.runtime") as records:
        assert run(main()) == b""
    assert not [r for r in records if "Aborting" in r.getMessage()]


def test_a_tls_client_that_does_not_read_is_paused_not_buffered_forever(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext, run: Callable[[Awaitable[Any]], Any]
) -> None:
    """Thousands of pipelined requests and no reading: the server stops reading that client
    (backpressure through the TLS layer: its replies outgrow every buffer), answers another
    one meanwhile, and catches up once the first reads, every reply in order."""
    text = "y" * 1000
    count = 10_000  # about 20 MB of replies: far past the socket and stream buffers

    async def main() -> tuple[bytes, list[int]]:
        async with serving(TextService(), server_tls) as listener, asyncio.timeout(WAIT_S * 3):
            reader, writer = await asyncio.open_connection(
                HOST, listener.port, ssl=client_tls, server_hostname=HOST
            )
            requests = [{"op": "convert", "text": text, "id": i} for i in range(count)]
            writer.write(jsons(*requests))
            other = await exchange_bytes(listener.port, b"upper ok\n", 3, client_tls)
            ids = [json.loads(await reader.readline())["id"] for _ in range(count)]
            writer.close()
            return other, ids

    other, ids = run(main())
    assert other == b"OK\n"
    assert ids == list(range(count))


def test_tls_1_2_clients_are_served(
    ca: trustme.CA, server_tls: ssl.SSLContext, run: Callable[[Awaitable[Any]], Any]
) -> None:
    old = ssl.create_default_context()
    ca.configure_trust(old)
    old.maximum_version = ssl.TLSVersion.TLSv1_2

    async def main() -> tuple[str, bytes]:
        async with serving(TextService(), server_tls) as listener, asyncio.timeout(WAIT_S):
            client = await asyncio.to_thread(strict_client, listener.port, old)
            with client:
                client.sendall(lab("Old", "!DISCONNECT"))
                return str(client.version()), await asyncio.to_thread(read_to_end, client)

    version, replies = run(main())
    assert version == "TLSv1.2"
    assert replies.startswith(b"[Lower Case] old [Upper Case] OLD")
