"""The bank over real sockets: concurrency, exactly-once under lost replies, the dialects."""

from __future__ import annotations

import json
import random
import socket
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from helpers import RunningServer, recv_until, running_server
from socklab.client.bank_client import BankClient, TxReceipt
from socklab.errors import InsufficientFunds
from socklab.ledger.base import DEMO_BALANCE_CENTS
from socklab.services.bank import BankService
from socklab.wire.framing import encode_lab_frame

PIN = "1234"
ACCOUNTS = 10


@pytest.fixture
def ledger_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'bank.db'}"


def open_more_accounts(server: RunningServer, service: BankService, upto: int) -> None:
    for n in range(4, upto + 1):
        server.call(lambda n=n: service.ledger.open_account(f"Holder {n}", PIN, DEMO_BALANCE_CENTS))


def balances(server: RunningServer, service: BankService) -> dict[int, int]:
    return {a.id: a.balance_cents for a in server.call(service.ledger.accounts)}


@dataclass
class ClientLog:
    """What one client's acknowledged operations imply."""

    deltas: Counter[int] = field(default_factory=Counter)
    receipts: list[TxReceipt] = field(default_factory=list)
    refused: int = 0
    errors: list[BaseException] = field(default_factory=list)


def random_client(port: int, seed: int, operations: int, log: ClientLog) -> None:
    rng = random.Random(seed)
    account = seed % ACCOUNTS + 1
    try:
        with BankClient("127.0.0.1", port, timeout_s=30, attempts=1) as bank:
            bank.login(account, PIN)
            for _ in range(operations):
                kind = rng.random()
                amount = rng.randint(1, 300_00)
                try:
                    if kind < 0.35:
                        receipt = bank.deposit(amount)
                        log.deltas[account] += amount
                    elif kind < 0.65:
                        receipt = bank.withdraw(amount)
                        log.deltas[account] -= amount
                    elif kind < 0.95:
                        to = rng.choice([a for a in range(1, ACCOUNTS + 1) if a != account])
                        receipt = bank.transfer(to, amount)
                        log.deltas[account] -= amount
                        log.deltas[to] += amount
                    else:
                        assert bank.balance().balance_cents >= 0
                        continue
                except InsufficientFunds:
                    log.refused += 1
                    continue
                assert receipt.balance_cents >= 0 and not receipt.replayed
                log.receipts.append(receipt)
    except BaseException as exc:  # reported by the test thread
        log.errors.append(exc)


def test_50_concurrent_clients_keep_the_books_exact(ledger_url: str) -> None:
    service = BankService(ledger_url)
    with running_server(service) as server:
        open_more_accounts(server, service, ACCOUNTS)
        before = balances(server, service)
        logs = [ClientLog() for _ in range(50)]
        threads = [
            threading.Thread(target=random_client, args=(server.port, n, 200, logs[n]))
            for n in range(50)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        assert not any(thread.is_alive() for thread in threads)
        assert [e for log in logs for e in log.errors] == []
        report = server.call(service.ledger.verify)
        after = balances(server, service)
        stats = server.call(service.ledger.stats)
    assert report.ok, report.problems
    assert all(cents >= 0 for cents in after.values())
    implied: Counter[int] = Counter()
    for log in logs:
        implied.update(log.deltas)
    assert after == {a: before[a] + implied[a] for a in before}
    acknowledged = sum(len(log.receipts) for log in logs)
    refused = sum(log.refused for log in logs)
    assert acknowledged > 8000
    assert (stats.successful, stats.failed) == (acknowledged, refused)
    keys = [r.key for log in logs for r in log.receipts]
    assert len(set(keys)) == len(keys)


# -- exactly once under lost replies ------------------------------------------------------


@dataclass
class BatchOutcome:
    intended: dict[int, int]
    actual: dict[int, int]
    applications: list[int]
    """For each operation, how many postings its keys produced."""
    retries: int


def run_lossy_batch(ledger_url: str, *, naive: bool) -> BatchOutcome:
    """10 clients x 40 deposits/withdrawals under ``lose-reply`` at 30%."""
    service = BankService(ledger_url, fail_rate=0.3, fail_mode="lose-reply", rng=2024)
    retries = Counter[int]()
    keys_by_op: dict[int, list[tuple[str, ...]]] = defaultdict(list)
    intended: Counter[int] = Counter()
    errors: list[BaseException] = []

    def client(account: int) -> None:
        rng = random.Random(account)
        try:
            with BankClient(
                "127.0.0.1",
                server.port,
                timeout_s=10,
                attempts=40,
                backoff_s=0.001,
                new_key_each_attempt=naive,
                on_retry=lambda notice: retries.update([account]),
            ) as bank:
                bank.login(account, PIN)
                for _ in range(40):
                    amount = rng.randint(1, 50_00)
                    if rng.random() < 0.5:
                        receipt = bank.deposit(amount)
                        intended[account] += amount
                    else:
                        receipt = bank.withdraw(amount)
                        intended[account] -= amount
                    keys_by_op[account].append(receipt.keys_sent)
        except BaseException as exc:
            errors.append(exc)

    with running_server(service) as server:
        open_more_accounts(server, service, ACCOUNTS)
        start = balances(server, service)
        threads = [threading.Thread(target=client, args=(a,)) for a in range(1, ACCOUNTS + 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert errors == []
        report = server.call(service.ledger.verify)
        assert report.ok, report.problems
        actual = balances(server, service)
        applications: list[int] = []
        for account, op_keys in keys_by_op.items():
            postings = server.call(lambda a=account: service.ledger.statement(a, 1000))
            posted = Counter(p.key for p in postings)
            applications += [sum(posted[k] for k in keys) for keys in op_keys]
    return BatchOutcome(
        intended={a: start[a] + intended[a] for a in start},
        actual=actual,
        applications=applications,
        retries=sum(retries.values()),
    )


def test_keyed_retries_apply_every_operation_exactly_once(ledger_url: str) -> None:
    outcome = run_lossy_batch(ledger_url, naive=False)
    assert outcome.retries > 50  # the faults did happen
    assert len(outcome.applications) == ACCOUNTS * 40
    assert set(outcome.applications) == {1}
    assert outcome.actual == outcome.intended


def test_naive_retries_apply_operations_twice(tmp_path: Path) -> None:
    keyed = run_lossy_batch(f"sqlite:///{tmp_path / 'keyed.db'}", naive=False)
    naive = run_lossy_batch(f"sqlite:///{tmp_path / 'naive.db'}", naive=True)
    doubled = sum(1 for n in naive.applications if n > 1)
    assert doubled > 20
    assert naive.actual != naive.intended
    assert sum(1 for n in keyed.applications if n > 1) == 0
    assert keyed.actual == keyed.intended


# -- the other dialects on the wire -----------------------------------------------------------


@pytest.fixture
def bank_server(ledger_url: str) -> Iterator[RunningServer]:
    with running_server(BankService(ledger_url)) as server:
        yield server


def test_line_dialect_over_a_socket(bank_server: RunningServer) -> None:
    with bank_server.connect() as sock:
        sock.sendall(b"login 1 1234\r\ndeposit 1.50\nwithdraw 99999\nbalance\n")
        data = b""
        while data.count(b"\n") < 4:
            data += recv_until(sock)
    lines = data.decode().splitlines()
    assert lines[0].startswith("Welcome Dibbyo Roy!")
    assert lines[1].startswith("Deposited 1.50. Your balance is 10001.50")
    assert lines[2] == "ERROR insufficient_funds: insufficient funds"
    assert lines[3].startswith("Your balance is 10001.50 | Successful transactions: 1")


def test_lab_dialect_over_a_socket_as_the_seed_client_frames_it(
    bank_server: RunningServer,
) -> None:
    def send(sock: socket.socket, text: str) -> None:
        frame = encode_lab_frame(text.encode())
        sock.sendall(frame[:64])  # the seed client sends the header and payload apart
        sock.sendall(frame[64:])

    with bank_server.connect() as sock:
        send(sock, "11234")
        assert recv_until(sock, b"4. Exit\n").startswith(b"Welcome Dibbyo Roy!\n")
        send(sock, "112342")
        assert recv_until(sock, b": ") == b"Enter amount to deposit: "
        send(sock, "112342")
        assert recv_until(sock, b"Error rate: 0.00\n").startswith(b"Your balance is 10002.00\n")
        send(sock, "!DISCONNECT")
        assert recv_until(sock, b"]") == b"[DISCONNECTED]"


# -- login cost: a rate limit per address, and a bound on the hashing at once -------------


def json_call(sock: socket.socket, request: dict[str, Any]) -> dict[str, Any]:
    sock.sendall(json.dumps(request).encode() + b"\n")
    reply: dict[str, Any] = json.loads(recv_until(sock))
    return reply


def test_logins_are_rate_limited_per_address_even_to_unknown_accounts(ledger_url: str) -> None:
    # Each login costs a PIN hash, also for an account that does not exist (no timing
    # oracle). Past its bucket an address is refused before any hashing.
    service = BankService(ledger_url, login_burst=3, login_rate_per_s=0.001)
    with running_server(service) as server, server.connect() as sock:
        codes = [
            json_call(sock, {"op": "login", "account": 999, "pin": "0000"})["error"]["code"]
            for _ in range(3)
        ]
        assert codes == ["auth_failed"] * 3
        refused = json_call(sock, {"op": "login", "account": 1, "pin": "1234"})
        assert refused["error"]["code"] == "too_many_logins"
        assert "try again in" in refused["error"]["message"]
        with server.connect() as other:  # the same address on another connection
            other.sendall(b"login 999 0000\n")
            assert recv_until(other).startswith(b"ERROR too_many_logins: too many logins")


def test_pin_hashing_runs_one_at_a_time(ledger_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # 768 logins to a missing account once took 18.5 CPU-seconds in 9 s: every login's
    # hash ran at once on the executor's threads, and other clients waited for a core.
    from socklab.ledger import pins

    real_scrypt = pins._scrypt
    clients = 6
    active, most = 0, 0
    changed = threading.Condition()

    def tracked(*args: Any) -> bytes:
        nonlocal active, most
        with changed:
            active += 1
            most = max(most, active)
            changed.notify_all()
            # Unbounded, all the logins' hashes would be here together: wait (a little)
            # for them, so that the maximum shows it.
            changed.wait_for(lambda: active >= clients, timeout=0.2)
        try:
            return real_scrypt(*args)
        finally:
            with changed:
                active -= 1

    service = BankService(ledger_url)
    with running_server(service) as server:
        monkeypatch.setattr(pins, "_scrypt", tracked)
        socks = [server.connect() for _ in range(clients)]
        try:
            for n, sock in enumerate(socks):
                account, pin = (1, "1234") if n % 2 else (999, "0000")
                sock.sendall(json.dumps({"op": "login", "account": account, "pin": pin}).encode())
                sock.sendall(b"\n")
            replies = [json.loads(recv_until(sock)) for sock in socks]
        finally:
            for sock in socks:
                sock.close()
    assert [r["ok"] for r in replies] == [n % 2 == 1 for n in range(clients)]
    assert most == 1
