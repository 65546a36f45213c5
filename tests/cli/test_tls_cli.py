"""The TLS options of the commands: `serve --tls-cert/--tls-key` (and their environment
variables), `--tls/--cafile/--insecure` on every client and on `bench`, and the one-line
errors when one side speaks TLS and the other does not."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme

from helpers import HOST, socklab_command, start_server_process
from socklab.cli.main import main
from socklab.services.bank import BankService
from socklab.services.base import Service
from socklab.services.exchange import ExchangeService
from socklab.services.numbers import NumbersService
from socklab.services.text import TextService
from tls_helpers import CertFiles, server_context, thread_server, write_cert_files

REFUSED = "refused: ERROR tls_required: this port speaks TLS; connect with --tls"
NOT_TLS = "does not speak TLS (is it started with --tls-cert?)"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def certs(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return write_cert_files(ca, tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    return server_context(ca)


@pytest.fixture(autouse=True)
def pin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOCKLAB_PIN", "1234")


# -- serve -------------------------------------------------------------------------------


def test_serve_takes_the_certificate_from_the_environment(
    certs: CertFiles, capsys: pytest.CaptureFixture[str]
) -> None:
    server = start_server_process(
        "text",
        "--port",
        "0",
        env={"SOCKLAB_TLS_CERT": certs.cert, "SOCKLAB_TLS_KEY": certs.key},
    )
    try:
        port = str(server.port)
        assert main(["text", "--port", port, "--tls", "--cafile", certs.ca, "hello"]) == 0
        assert capsys.readouterr().out == "[Lower Case] hello [Upper Case] HELLO\n"
        assert main(["text", "--port", port, "hello"]) == 1
        assert REFUSED in capsys.readouterr().err
    finally:
        assert server.stop() == 0
    assert f"Text Server started and listening on {HOST}:{port} (TLS)" in server.text()
    assert "tls_required" in server.text()


def test_serve_with_workers_serves_tls_in_every_worker(
    certs: CertFiles, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--port", "0", "--tls-cert", certs.cert, "--tls-key", certs.key, "--workers", "2"]
    server = start_server_process("numbers", *args, listeners=2)
    try:
        assert server.ports[0] == server.ports[1]
        tls = ["--tls", "--cafile", certs.ca]
        for _ in range(4):  # the kernel spreads the connections over the workers
            assert main(["numbers", "--port", str(server.port), *tls, "121"]) == 0
        assert capsys.readouterr().out == "[Prime] False [Palindrome] True\n" * 4
    finally:
        assert server.stop() == 0
    assert server.text().count("(TLS)") == 2


@pytest.mark.parametrize(
    ("args", "env", "status", "message"),
    [
        pytest.param(["--tls-cert", "{cert}"], {}, 2, "TLS needs both", id="cert-only"),
        pytest.param([], {"SOCKLAB_TLS_KEY": "{key}"}, 2, "TLS needs both", id="key-only-from-env"),
        pytest.param(
            ["--tls-cert", "{missing}", "--tls-key", "{key}"],
            {},
            1,
            "cannot serve TLS: no such file: ",
            id="missing-file",
        ),
        pytest.param(
            ["--tls-cert", "{key}", "--tls-key", "{key}"],
            {},
            1,
            "cannot serve TLS: cannot use the certificate",
            id="key-as-cert",
        ),
    ],
)
def test_serve_refuses_unusable_tls_settings(
    args: list[str],
    env: dict[str, str],
    status: int,
    message: str,
    certs: CertFiles,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    names = {"cert": certs.cert, "key": certs.key, "missing": str(tmp_path / "none.pem")}
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(**names))
    argv = ["serve", "text", "--port", "0", *(arg.format(**names) for arg in args)]
    assert main(argv) == status
    assert message in capsys.readouterr().err


# -- the clients -------------------------------------------------------------------------

Client = tuple[Callable[[Path], Service], list[str], list[str], str, int]
CLIENTS: dict[str, Client] = {
    # service, options before the port, arguments after, what success prints, mismatch status
    "text": (lambda _: TextService(), ["text"], ["hello"], "[Upper Case] HELLO", 1),
    "numbers": (lambda _: NumbersService(), ["numbers"], ["121"], "[Palindrome] True", 1),
    "exchange": (
        lambda _: ExchangeService("S"),
        ["exchange"],
        ["5", "--name", "C"],
        "C | S",
        1,
    ),
    "atm": (
        lambda tmp: BankService(f"sqlite:///{tmp / 'bank.db'}"),
        ["atm"],
        ["--account", "1", "balance"],
        "Your balance is 10000.00",
        4,
    ),
}


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_every_client_speaks_tls(
    client: str,
    certs: CertFiles,
    server_tls: ssl.SSLContext,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    make, head, tail, success, _ = CLIENTS[client]
    with thread_server(make(tmp_path), server_tls) as port:
        assert main([*head, "--port", str(port), "--tls", "--cafile", certs.ca, *tail]) == 0
        captured = capsys.readouterr()
        assert success in captured.out + captured.err
        assert main([*head, "--port", str(port), "--tls", "--insecure", *tail]) == 0
        captured = capsys.readouterr()
        assert success in captured.out + captured.err


def client_lines(err: str) -> list[str]:
    """The client's log lines: the server in the test's thread logs to the same stream."""
    return [line for line in err.splitlines() if line.startswith("[") and SERVER not in line]


SERVER = "[handle_client]"


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_a_plain_client_on_a_tls_port_gets_one_line_at_once(
    client: str,
    server_tls: ssl.SSLContext,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    make, head, tail, _, status = CLIENTS[client]
    with thread_server(make(tmp_path), server_tls) as port:
        assert main([*head, "--port", str(port), *tail]) == status
    assert client_lines(capsys.readouterr().err) == [
        f"[ERROR] [main]: the server at {HOST}:{port} {REFUSED}"
    ]


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_a_tls_client_on_a_plain_port_gets_one_line_at_once(
    client: str,
    certs: CertFiles,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    make, head, tail, _, status = CLIENTS[client]
    with thread_server(make(tmp_path), None) as port:
        argv = [*head, "--port", str(port), "--tls", "--cafile", certs.ca, *tail]
        assert main(argv) == status
    assert client_lines(capsys.readouterr().err) == [
        f"[ERROR] [main]: the server at {HOST}:{port} {NOT_TLS}"
    ]


def test_an_untrusted_certificate_is_named(
    server_tls: ssl.SSLContext, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other_ca = write_cert_files(trustme.CA(), tmp_path)
    with thread_server(TextService(), server_tls) as port:
        argv = ["text", "--port", str(port), "--tls", "--cafile", other_ca.ca, "x"]
        assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"the certificate of {HOST}:{port} is not trusted" in err
    assert "--insecure" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--cafile", "{ca}"], "--cafile and --insecure go with --tls", id="no-tls"),
        pytest.param(["--insecure"], "--cafile and --insecure go with --tls", id="insecure"),
        pytest.param(
            ["--tls", "--insecure", "--cafile", "{ca}"], "cannot go with --cafile", id="both"
        ),
        pytest.param(["--tls", "--cafile", "{missing}"], "no such CA file: ", id="missing"),
        pytest.param(
            ["--tls", "--cafile", "{key}"], "cannot read the CA file", id="not-a-certificate"
        ),
    ],
)
@pytest.mark.parametrize("command", ["text", "numbers", "exchange", "atm", "bench"])
def test_client_tls_usage_errors(
    command: str,
    args: list[str],
    message: str,
    certs: CertFiles,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    names = {"ca": certs.ca, "key": certs.key, "missing": str(tmp_path / "none.pem")}
    options = [arg.format(**names) for arg in args]
    rest = {"atm": ["--account", "1", "balance"], "bench": ["text"]}.get(command, ["1"])
    head = [command, *options] if command != "bench" else [command]
    tail = rest if command != "bench" else [*rest, *options]
    assert main([*head, "--port", "9", *tail]) == 2
    assert message in capsys.readouterr().err


# -- bench -------------------------------------------------------------------------------

QUICK = ["--connections", "2", "--duration", "0.3", "--warmup", "0", "--json"]


@pytest.mark.parametrize(
    ("dialect", "processes"), [("json", "1"), ("lab", "2")], ids=["json", "lab-2-processes"]
)
def test_bench_over_tls(
    dialect: str,
    processes: str,
    certs: CertFiles,
    server_tls: ssl.SSLContext,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with thread_server(TextService(), server_tls) as port:
        argv = ["bench", "text", "--port", str(port), "--dialect", dialect, "-p", processes]
        assert main([*argv, *QUICK, "--tls", "--cafile", certs.ca]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["tls"] is True
    assert result["errors"] == 0
    assert result["requests"] > 0


def test_bench_plain_on_a_tls_port_stops_at_once(server_tls: ssl.SSLContext) -> None:
    """A 10-minute run ends with the refusal, well inside the subprocess bound."""
    with thread_server(TextService(), server_tls) as port:
        done = subprocess.run(
            socklab_command("bench", "text", "--port", str(port), "-c", "2", "-d", "600"),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert f"the server at {HOST}:{port} {REFUSED}" in done.stderr


def test_bench_tls_on_a_plain_port_says_so(
    certs: CertFiles, capsys: pytest.CaptureFixture[str]
) -> None:
    with thread_server(TextService(), None) as port:
        argv = ["bench", "text", "--port", str(port), *QUICK, "--tls", "--cafile", certs.ca]
        assert main(argv) == 1
    assert f"the server at {HOST}:{port} {NOT_TLS}" in capsys.readouterr().err


@pytest.mark.e2e
def test_the_benchmark_script_measures_tls_beside_plain(tmp_path: Path) -> None:
    """``benchmarks/run.py``'s TLS scenario, tiny: four real servers, real load, a table."""
    report = tmp_path / "tls.md"
    run = Path(__file__).resolve().parents[2] / "benchmarks" / "run.py"
    tiny = ["--runs", "1", "--duration", "0.3", "--warmup", "0", "--connections", "2"]
    skip = ["--skip", "text", "--skip", "numbers", "--skip", "bank"]
    done = subprocess.run(
        [sys.executable, str(run), *tiny, *skip, "--output", str(report)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    text = report.read_text()
    rows = [line for line in text.splitlines() if line.startswith(("| text over", "| bank dep"))]
    assert [row.split(" | ")[0] for row in rows] == [
        "| text over lab, plain",
        "| text over lab, TLS",
        "| bank deposits, plain",
        "| bank deposits, TLS",
    ]
    for row in rows:
        cells = row.split(" | ")
        assert int(cells[1].replace(",", "")) > 0  # requests/s
        assert cells[7] == "0"  # errors
    assert "--tls --cafile ca.pem`" in text
    assert str(tmp_path) not in text
