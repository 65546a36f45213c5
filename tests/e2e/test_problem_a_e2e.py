"""Problem A end to end: the lab's own clients, socklab's clients, and 1,000 connections at once."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import HOST, socklab_command, start_server_process
from socklab.wire.framing import encode_lab_frame

LAB_CLIENT = Path(__file__).parent / "lab_clients" / "problem_a_client.py"


def run_lab_client(port: int, typed: str) -> str:
    done = subprocess.run(
        [sys.executable, str(LAB_CLIENT), str(port)],
        input=typed,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_lab_text_client_works_unchanged() -> None:
    server = start_server_process("text", "--port", "0")
    try:
        out = run_lab_client(server.port, "hello world\nStraße\n\n!DISCONNECT\n")
    finally:
        assert server.stop() == 0
    assert out.split("Enter message: ")[1:] == [
        "[Lower Case] hello world [Upper Case] HELLO WORLD\n",
        "[Lower Case] straße [Upper Case] STRASSE\n",
        "[Lower Case]  [Upper Case] \n",
        "[Lower Case] !disconnect [Upper Case] !DISCONNECT\n",
    ]
    assert "Message received: hello world" in server.text()


def test_the_lab_number_client_works_unchanged() -> None:
    server = start_server_process("numbers", "--port", "0")
    try:
        out = run_lab_client(
            server.port, "121\n10\n97\nprime 7919\npalindrome 12321\nabc\n!DISCONNECT\n"
        )
    finally:
        assert server.stop() == 0
    answers = out.split("Enter message: ")[1:]
    assert answers[:5] == [
        "[Prime] False [Palindrome] True\n",
        "[Prime] False [Palindrome] False\n",
        "[Prime] True [Palindrome] False\n",
        "[Prime] True\n",
        "[Palindrome] True\n",
    ]
    assert answers[5].startswith("ERROR invalid_request:")  # the lab's server crashed here
    assert answers[6] == "[DISCONNECTED]\n"


@pytest.mark.parametrize(
    ("command", "args", "stdout"),
    [
        pytest.param(
            "text",
            ["hello", "ß"],
            "[Lower Case] hello [Upper Case] HELLO\n[Lower Case] ß [Upper Case] SS\n",
            id="text",
        ),
        pytest.param(
            "numbers",
            ["121", "prime 97"],
            "[Prime] False [Palindrome] True\n[Prime] True\n",
            id="numbers",
        ),
    ],
)
def test_socklab_clients_with_arguments(command: str, args: list[str], stdout: str) -> None:
    server = start_server_process(command, "--port", "0")
    try:
        done = subprocess.run(
            socklab_command(command, *args, "--port", str(server.port)),
            capture_output=True,
            text=True,
            timeout=30,
        )
        as_json = subprocess.run(
            socklab_command(command, args[0], "--json", "--port", str(server.port)),
            capture_output=True,
            text=True,
            timeout=30,
        )
        typed = subprocess.run(
            socklab_command(command, "--port", str(server.port)),
            input=f"{args[0]}\n!DISCONNECT\nnever sent\n",
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        server.stop()
    assert done.returncode == 0 and done.stdout == stdout
    assert json.loads(as_json.stdout)["ok"] is True
    assert typed.returncode == 0
    assert typed.stdout == "Enter message: " + stdout.splitlines()[0] + "\nEnter message: "


def test_a_refused_request_sets_the_exit_status() -> None:
    server = start_server_process("numbers", "--port", "0")
    try:
        done = subprocess.run(
            socklab_command("numbers", "7", "1.5", "--port", str(server.port)),
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        server.stop()
    assert done.returncode == 1
    assert done.stdout == "[Prime] True [Palindrome] True\n"
    assert "[ERROR] [main]: '1.5' is not an integer (invalid_request)" in done.stderr


def expected_text(word: str) -> str:
    return f"[Lower Case] {word.lower()} [Upper Case] {word.upper()}"


async def one_client(port: int, index: int, requests: int) -> int:
    """``requests`` round trips in the dialect this client was dealt; returns the correct ones."""
    dialect = ("json", "lab", "line")[index % 3]
    reader, writer = await asyncio.open_connection(HOST, port)
    correct = 0
    try:
        for n in range(requests):
            word = f"Client{index}-Msg{n}-ß"
            if dialect == "json":
                writer.write(json.dumps({"op": "convert", "text": word, "id": n}).encode() + b"\n")
                reply = json.loads(await reader.readline())
                correct += reply == {
                    "id": n,
                    "ok": True,
                    "lower": word.lower(),
                    "upper": word.upper(),
                }
            elif dialect == "line":
                writer.write(word.encode() + b"\n")
                correct += (await reader.readline()).decode() == expected_text(word) + "\n"
            else:
                writer.write(encode_lab_frame(word.encode()))
                expected = expected_text(word).encode()
                correct += await reader.readexactly(len(expected)) == expected
    finally:
        writer.close()
        await writer.wait_closed()
    return correct


def test_1000_simultaneous_connections_in_mixed_dialects() -> None:
    # All from one address: past the default per-address limit (512), so raised.
    server = start_server_process("text", "--port", "0", "--max-connections-per-ip", "1000")

    async def main() -> list[int]:
        async with asyncio.timeout(120):
            return await asyncio.gather(
                *(one_client(server.port, i, 20) for i in random.sample(range(1000), 1000))
            )

    try:
        results = asyncio.run(main())
    finally:
        assert server.stop() == 0
    assert results == [20] * 1000
