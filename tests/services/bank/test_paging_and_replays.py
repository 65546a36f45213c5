"""Over real sockets, on both ledgers: ``statement`` pages with a cursor, and a replayed
refusal is marked ``replayed`` like a replayed success, in json and in the line dialect."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import RunningServer, recv_until, running_server
from postgres_db import fresh_schema, require_postgres
from socklab.services.bank import BankService


@pytest.fixture(params=["sqlite", "postgres"])
def bank_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningServer]:
    if request.param == "sqlite":
        with running_server(BankService(f"sqlite:///{tmp_path / 'bank.db'}")) as server:
            yield server
        return
    with fresh_schema(require_postgres()) as url, running_server(BankService(url)) as server:
        yield server


class JsonLink:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.next_id = 0

    def raw(self, op: str, **fields: Any) -> bytes:
        self.next_id += 1
        self.sock.sendall(json.dumps({"id": self.next_id, "op": op, **fields}).encode() + b"\n")
        return recv_until(self.sock)

    def ask(self, op: str, **fields: Any) -> dict[str, Any]:
        reply: dict[str, Any] = json.loads(self.raw(op, **fields))
        return reply


def line(sock: socket.socket, text: str) -> str:
    sock.sendall(text.encode() + b"\n")
    return recv_until(sock).decode()


def test_json_statement_pages_back_to_the_first_posting(bank_server: RunningServer) -> None:
    with bank_server.connect() as sock:
        link = JsonLink(sock)
        assert link.ask("login", account=1, pin="1234")["ok"]
        for n in range(4):
            assert link.ask("deposit", amount=f"{n + 1}.00", key=f"page-{n}")["ok"]
        whole = link.ask("statement", limit=100)
        assert whole["next_before"] is None  # everything fits: the last page
        everything = [p["posting"] for p in whole["postings"]]
        assert len(everything) == 5  # the opening deposit and four more

        pages, before = [], None
        while True:
            fields: dict[str, Any] = (
                {"limit": 2} if before is None else {"limit": 2, "before": before}
            )
            page = link.ask("statement", **fields)
            assert page["ok"] and page["balance"] == "10010.00"
            pages.append([p["posting"] for p in page["postings"]])
            before = page["next_before"]
            if before is None:
                break
            assert before == pages[-1][-1]  # the oldest posting shown
        assert pages == [everything[0:2], everything[2:4], everything[4:5]]

        # A full last page says so too: no cursor to an empty page.
        exact = link.ask("statement", limit=1, before=everything[3])
        assert [p["posting"] for p in exact["postings"]] == [everything[4]]
        assert exact["next_before"] is None


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"before": 0}, "invalid_request"),
        ({"before": "7"}, "invalid_request"),
        ({"before": True}, "invalid_request"),
        ({"limit": 1001}, "invalid_request"),
    ],
    ids=["zero", "string", "bool", "limit-too-big"],
)
def test_json_statement_refuses_a_bad_cursor(
    bank_server: RunningServer, fields: dict[str, Any], code: str
) -> None:
    with bank_server.connect() as sock:
        link = JsonLink(sock)
        link.ask("login", account=1, pin="1234")
        reply = link.ask("statement", **fields)
        assert (reply["ok"], reply["error"]["code"]) == (False, code)


def test_line_statement_pages_with_the_cursor_it_prints(bank_server: RunningServer) -> None:
    with bank_server.connect() as sock:
        assert line(sock, "login 1 1234").startswith("Welcome")
        for _ in range(2):
            assert line(sock, "deposit 1").startswith("Deposited 1.00.")
        first = line(sock, "statement 2")
        assert first.startswith("Account 1, balance 10002.00: #")
        head, _, more = first.rstrip("\n").partition(" | older: statement 2 ")
        assert head.count(" deposit 1.00 ") == 2 and more.isdigit()
        last = line(sock, f"statement 2 {more}")
        # The last page: the opening deposit alone, and no cursor.
        assert last.startswith("Account 1, balance 10002.00: #")
        assert last.endswith(" deposit 10000.00 -> 10000.00\n") and ";" not in last
        assert line(sock, "statement 2 x").startswith("ERROR invalid_request: BEFORE must be")
        assert line(sock, "statement 2 0").startswith("ERROR invalid_request: before must be")


def test_json_a_replayed_refusal_is_marked_replayed(bank_server: RunningServer) -> None:
    with bank_server.connect() as sock:
        link = JsonLink(sock)
        link.ask("login", account=1, pin="1234")
        first = link.ask("withdraw", amount="20000.00", key="too-much")
        assert first["error"]["code"] == "insufficient_funds"
        assert "replayed" not in first["error"]
        again = link.raw("withdraw", amount="20000.00", key="too-much")
        message = first["error"]["message"]
        assert again == (
            b'{"id":3,"ok":false,"error":{"code":"insufficient_funds","message":'
            + json.dumps(message).encode()
            + b',"replayed":true}}\n'
        )
        # The refusal is the stored outcome: it stays even once the money is there.
        link.ask("deposit", amount="20000.00", key="top-up")
        later = link.ask("withdraw", amount="20000.00", key="too-much")
        assert later["error"] == {**first["error"], "replayed": True}


def test_line_a_replayed_refusal_and_success_are_marked(bank_server: RunningServer) -> None:
    with bank_server.connect() as sock:
        line(sock, "login 1 1234")
        first = line(sock, "withdraw 20000 big")
        assert first.startswith("ERROR insufficient_funds: ") and "replayed" not in first
        again = line(sock, "withdraw 20000 big")
        assert again == first.rstrip("\n") + " (replayed: already refused)\n"
        done = line(sock, "deposit 1 small")
        assert done.startswith("Deposited 1.00. Your balance is 10001.00 |")
        assert line(sock, "deposit 1 small").startswith(
            "Deposited 1.00 (replayed: already done). Your balance is 10001.00 |"
        )
        assert line(sock, "transfer 2 1 small").startswith("ERROR key_reused: ")
