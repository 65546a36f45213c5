"""End to end: `socklab serve exchange` and `socklab exchange` as real processes."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading

from helpers import HOST, port_is_free, socklab_command, start_server_process, wait_until


def run_client(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        socklab_command("exchange", *args), input=stdin, capture_output=True, text=True, timeout=30
    )


def test_serve_and_client_log_the_seed_lines() -> None:
    server = start_server_process("exchange", "--port", "0", "--name", "Lab Server", "-v")
    try:
        client = run_client("25", "--name", "Lab Client", "--port", str(server.port), "-v")
        assert client.returncode == 0, client.stderr
        lines = client.stderr.splitlines()
        assert lines[0] == f"[DEBUG] [send_message]: Connected to server at 127.0.0.1:{server.port}"
        assert lines[1] == "[INFO] [send_message]: Lab Client | Lab Server"
        assert lines[2].startswith("[INFO] [send_message]: Client Number: 25 | Server Number: ")
        client_numbers = lines[2].split(": ", 1)[1]
    finally:
        assert server.stop() == 0
    log = server.text()
    assert (
        f"[INFO] [start_server]: Lab Server started and listening on 127.0.0.1:{server.port}" in log
    )
    assert "[DEBUG] [start_server]: Connection accepted from ('127.0.0.1', " in log
    assert "[DEBUG] [handle_client]: Message received from client" in log
    assert "[INFO] [handle_client]: Client Name: Lab Client | Server Name: Lab Server" in log
    assert f"[INFO] [handle_client]: {client_numbers}" in log  # both sides logged the same sum
    assert "[DEBUG] [handle_client]: Sending client response" in log
    assert "[DEBUG] [handle_client]: Client connection closed" in log
    assert "Received SIGTERM, shutting down" in log
    assert port_is_free(server.port)


def test_prompt_asks_again_on_non_integer_input() -> None:
    server = start_server_process("exchange", "--port", "0")
    try:
        client = run_client("--port", str(server.port), stdin="abc\n2.5\n42\n")
    finally:
        server.stop()
    assert client.returncode == 0, client.stderr
    assert client.stdout.count("Enter an integer between 1 and 100: ") == 3
    assert "Client Number: 42 | Server Number: " in client.stderr


def test_out_of_range_terminates_the_server_process_with_status_0() -> None:
    server = start_server_process("exchange", "--port", "0")
    client = run_client("0", "--port", str(server.port))
    assert client.returncode == 0
    assert (
        "[WARNING] [send_message]: The integer input out of range. Terminating the server"
        in client.stderr
    )
    assert server.wait(20) == 0
    assert (
        "[WARNING] [handle_client]: Client int out of range: 0. Terminating the server."
        in server.text()
    )
    assert port_is_free(server.port)


def test_unreachable_server_is_one_clear_error() -> None:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        client = run_client("25", "--port", str(port))
    assert client.returncode != 0
    assert client.stderr.startswith("[ERROR] [main]: cannot connect to 127.0.0.1:")
    assert "Traceback" not in client.stderr and client.stderr.count("\n") == 1


def test_sigterm_during_load_loses_no_in_flight_reply() -> None:
    server = start_server_process("exchange", "--port", "0", "-v", "--shutdown-grace", "10")
    received = 0
    lock = threading.Lock()
    stop = threading.Event()

    def client(index: int) -> None:
        nonlocal received
        try:
            sock = socket.create_connection((HOST, server.port), timeout=10)
        except OSError:
            return
        reader = sock.makefile("rb")
        with sock, reader:
            while not stop.is_set():
                request = {"client_name": f"c{index}", "client_number": 7}
                try:
                    sock.sendall(json.dumps(request).encode() + b"\n")
                    line = reader.readline()
                except OSError:
                    return
                if not line:
                    return  # closed by the server between requests: nothing was lost
                reply = json.loads(line)
                assert reply["ok"] and reply["sum"] == 7 + reply["server_number"]
                with lock:
                    received += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    # Under load: the clients keep sending while the server stops.
    wait_until(lambda: received > 100, "100 replies")
    server.proc.send_signal(signal.SIGTERM)
    assert server.wait(30) == 0
    stop.set()
    for thread in threads:
        thread.join(10)
    sent_by_server = server.text().count("Sending client response")
    assert received > 100
    assert sent_by_server == received  # every reply the server produced reached its client
    assert port_is_free(server.port)
