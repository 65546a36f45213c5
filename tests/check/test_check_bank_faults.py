"""The bank cases catch what they are for, against a small lab bank with chosen faults:
one that lets a balance go negative, one that miscounts its statistics."""

from __future__ import annotations

import contextlib
import json
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import HOST, WAIT_S
from socklab.cli.main import main

MENU = "Welcome Tester!\n1. Check Balance\n2. Deposit\n3. Withdraw\n4. Exit\n"


def make_handler(*, overdraft: bool, bad_stats: bool) -> type[socketserver.BaseRequestHandler]:
    state = {"balance": 1000, "total": 0, "ok": 0}
    lock = threading.Lock()

    def stats(with_successful: bool) -> str:
        total, ok = state["total"], state["ok"]
        rate = ok / total if total else 0.0
        shown = 0.25 if bad_stats else rate
        head = f"Successful transactions: {ok}\n" if with_successful else ""
        return (
            head
            + f"Total transactions: {total}\nSuccess rate: {shown:.2f}\n"
            + f"Error rate: {1 - rate:.2f}\n"
        )

    class Handler(socketserver.BaseRequestHandler):
        def recv_frame(self) -> str | None:
            data = b""
            while len(data) < 64:
                chunk = self.request.recv(64 - len(data))
                if not chunk:
                    return None
                data += chunk
            length, payload = int(data.strip()), b""
            while len(payload) < length:
                chunk = self.request.recv(length - len(payload))
                if not chunk:
                    return None
                payload += chunk
            return payload.decode()

        def handle(self) -> None:
            pending = ""
            while (msg := self.recv_frame()) is not None:
                with lock:
                    reply = self.answer(msg, pending)
                    pending = msg[5:] if reply.startswith("Enter amount") else ""
                if reply:
                    self.request.sendall(reply.encode())

        def answer(self, msg: str, pending: str) -> str:
            if pending in ("2", "3"):
                amount = int(msg[5:])
                state["total"] += 1
                if pending == "3" and amount > state["balance"] and not overdraft:
                    return f"Transaction failed\nYour balance is {state['balance']}\n" + stats(
                        False
                    )
                state["balance"] += amount if pending == "2" else -amount
                state["ok"] += 1
                return f"Your balance is {state['balance']}\n" + stats(True)
            if len(msg) == 5:
                return MENU if msg[1:] == "1234" else "Invalid ID or Password\n"
            if msg[5:] == "1":
                return f"Your balance is {state['balance']}\n" + stats(False)
            if msg[5:] == "2":
                return "Enter amount to deposit: "
            if msg[5:] == "3":
                return "Enter amount to withdraw: "
            return ""

    return Handler


@contextlib.contextmanager
def fake_bank(**faults: bool) -> Iterator[int]:
    server = socketserver.ThreadingTCPServer((HOST, 0), make_handler(**faults))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(WAIT_S)


def results(capsys: pytest.CaptureFixture[str], port: int) -> dict[str, dict[str, str]]:
    main(["check", "bank", str(port), "--json", "--timeout", "5"])
    return {case["id"]: case for case in json.loads(capsys.readouterr().out)["cases"]}


def test_a_sound_fake_bank_passes(capsys: pytest.CaptureFixture[str]) -> None:
    with fake_bank(overdraft=False, bad_stats=False) as port:
        found = results(capsys, port)
    assert {i: c["result"] for i, c in found.items()} == {
        **{f"lab/bank/{n}": "pass" for n in range(1, 8)},
        "lab/bank/8": "warning",
        "lab/robustness/1": "pass",
    }
    assert "applied twice" in found["lab/bank/8"]["detail"]


def test_a_balance_going_negative_fails(capsys: pytest.CaptureFixture[str]) -> None:
    with fake_bank(overdraft=True, bad_stats=False) as port:
        found = results(capsys, port)
    assert found["lab/bank/6"]["result"] == "fail"
    assert "left -" in found["lab/bank/6"]["detail"]
    assert found["lab/bank/7"]["result"] == "pass"


def test_inconsistent_statistics_fail(capsys: pytest.CaptureFixture[str]) -> None:
    with fake_bank(overdraft=False, bad_stats=True) as port:
        found = results(capsys, port)
    assert found["lab/bank/7"]["result"] == "fail"
    assert "success rate" in found["lab/bank/7"]["detail"]


def test_reports_never_show_the_pin(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    junit = tmp_path / "bank.xml"
    with fake_bank(overdraft=False, bad_stats=False) as port:
        main(["check", "bank", str(port), "--json", "--case", "lab/bank/3", "--junit", str(junit)])
        out = capsys.readouterr().out
    (case,) = json.loads(out)["cases"]
    assert case["sent"].startswith("5".ljust(64) + "1****")
    assert "1234" not in out
    assert "1234" not in junit.read_text()
