"""End to end: `socklab serve bank` as a real process, with the seed's ATM client and kill -9."""

from __future__ import annotations

import asyncio
import random
import re
import signal
import subprocess
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from helpers import start_server_process, wait_until
from socklab.cli.main import main
from socklab.client.bank_client import BankClient, new_key
from socklab.errors import InsufficientFunds, LinkError, TransientFailure
from socklab.ledger import open_ledger

pytestmark = pytest.mark.e2e

LAB_CLIENT = Path(__file__).parent / "lab_clients" / "atm_client.py"
WELCOME = "Welcome Dibbyo Roy!\n1. Check Balance\n2. Deposit\n3. Withdraw\n4. Exit\n"


def run_lab_client(port: int, rounds: list[list[str]]) -> subprocess.CompletedProcess[str]:
    """The seed's ATM client, fed ``rounds`` of typed lines, until its input runs out."""
    typed = "".join(line + "\n" for round_ in rounds for line in round_)
    return subprocess.run(
        [sys.executable, str(LAB_CLIENT), str(port)],
        input=typed,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_seed_atm_client_works_unchanged(tmp_path: Path) -> None:
    server = start_server_process("bank", "--port", "0", "--db", f"sqlite:///{tmp_path / 'b.db'}")
    try:
        client = run_lab_client(
            server.port,
            [
                ["1", "1234", "1"],  # check balance
                ["1", "1234", "2", "100"],  # deposit
                ["1", "1234", "3", "50.50"],  # withdraw
                ["1", "1234", "3", "20000"],  # more than the balance
                ["1", "9999", "1"],  # a wrong PIN, then a choice anyway
                ["1", "9999", "2", "5"],  # a wrong PIN, then a deposit anyway
                ["1", "1234", "1"],  # still in step
                ["1", "1234", "4"],  # exit
                ["1", "1234", "1"],  # and a new round after it
            ],
        )
    finally:
        assert server.stop() == 0
    # The seed client has no way out but the end of its input (EOFError in input()).
    assert client.stderr.rstrip().endswith("EOFError: EOF when reading a line"), client.stderr
    out = client.stdout
    expected = [
        WELCOME,
        "Your balance is 10000.00\nTotal transactions: 0\nSuccess rate: 0.00\nError rate: 0.00\n",
        WELCOME,
        "Enter amount to deposit: ",
        "Your balance is 10100.00\nSuccessful transactions: 1\nTotal transactions: 1\n"
        "Success rate: 1.00\nError rate: 0.00\n",
        WELCOME,
        "Enter amount to withdraw: ",
        "Your balance is 10049.50\nSuccessful transactions: 2\nTotal transactions: 2\n"
        "Success rate: 1.00\nError rate: 0.00\n",
        WELCOME,
        "Enter amount to withdraw: ",
        "Transaction failed: insufficient funds (withdraw 20000.00)\n"
        "Your balance is 10049.50\nTotal transactions: 3\nSuccess rate: 0.67\nError rate: 0.33\n",
        "Invalid ID or Password\n",
        "Invalid ID or Password\nPlease log in again\n",
        "Invalid ID or Password\n",
        "Invalid ID or Password\nPlease log in again\n",
        "Invalid ID or Password\nPlease log in again\n",
        WELCOME,
        "Your balance is 10049.50\nTotal transactions: 3\nSuccess rate: 0.67\nError rate: 0.33\n",
        WELCOME,
        WELCOME,
        "Your balance is 10049.50\nTotal transactions: 3\nSuccess rate: 0.67\nError rate: 0.33\n",
    ]
    assert _printed_replies(out) == expected
    log = re.sub(r"\('127\.0\.0\.1', \d+\)", "(peer)", server.text())
    assert "1234" not in log.replace("PIN 1234", "")  # only the demo line names the PIN
    assert "9999" not in log


def _printed_replies(stdout: str) -> list[str]:
    """What the seed client printed from the server: each ``print(recv)`` adds a newline."""
    prompts = ("Enter ID: ", "Enter Password: ", "Enter choice: ", "Enter amount: ")
    text = stdout
    for prompt in prompts:
        text = text.replace(prompt, "\x00")
    return [part[:-1] for part in text.split("\x00") if part]


def test_the_seed_client_meets_the_seeds_random_failures(tmp_path: Path) -> None:
    server = start_server_process(
        "bank",
        "--port",
        "0",
        "--db",
        f"sqlite:///{tmp_path / 'b.db'}",
        "--fail-rate",
        "0.45",
        "--fail-mode",
        "reject",
        "--fail-seed",
        "3",
    )
    try:
        client = run_lab_client(server.port, [["1", "1234", "2", "10"] for _ in range(12)])
    finally:
        assert server.stop() == 0
    replies = _printed_replies(client.stdout)
    outcomes = replies[2::3]
    failed = [r for r in outcomes if r.startswith("Transaction failed\n")]
    done = [r for r in outcomes if r.startswith("Your balance is ")]
    assert len(failed) + len(done) == 12
    assert failed and done
    assert all("Please try again\n" in r for r in failed)
    assert done[-1].startswith(f"Your balance is {10000 + 10 * len(done)}.00\n")
    assert outcomes[-1].endswith(
        f"Total transactions: 12\nSuccess rate: {len(done) / 12:.2f}\n"
        f"Error rate: {len(failed) / 12:.2f}\n"
    )


# -- kill -9 under load ------------------------------------------------------------------------


@dataclass
class Op:
    op: str
    account: int
    to: int | None
    amount_cents: int
    key: str
    posting_id: int | None = None
    refused: str | None = None
    replayed: bool = False


@dataclass
class Worker:
    account: int
    acked: list[Op] = field(default_factory=list)
    in_doubt: Op | None = None
    errors: list[BaseException] = field(default_factory=list)


def send(bank: BankClient, op: Op) -> Op:
    """Send ``op`` (its own key); the op with its outcome. Raises link errors."""
    try:
        receipt = bank.move(op.op, op.amount_cents, to=op.to, key=op.key)
    except InsufficientFunds as exc:
        return Op(op.op, op.account, op.to, op.amount_cents, op.key, refused=exc.code)
    return Op(
        op.op,
        op.account,
        op.to,
        op.amount_cents,
        op.key,
        posting_id=receipt.posting_id,
        replayed=receipt.replayed,
    )


def load(port: int, worker: Worker, seed: int, stop: threading.Event) -> None:
    rng = random.Random(seed)
    try:
        with BankClient("127.0.0.1", port, timeout_s=5, attempts=3, backoff_s=0.02) as bank:
            bank.login(worker.account, "1234")
            while not stop.is_set():
                kind = rng.choice(("deposit", "withdraw", "transfer"))
                to = rng.choice([a for a in range(1, 11) if a != worker.account])
                op = Op(
                    kind,
                    worker.account,
                    to if kind == "transfer" else None,
                    rng.randint(1, 400_00),
                    new_key("crash"),
                )
                try:
                    worker.acked.append(send(bank, op))
                except (LinkError, TransientFailure):
                    worker.in_doubt = op
                    return
    except LinkError:
        return  # the server died before this client logged in
    except BaseException as exc:
        worker.errors.append(exc)


def effects(ops: list[Op]) -> Counter[int]:
    delta: Counter[int] = Counter()
    for op in ops:
        if op.refused is not None:
            continue
        if op.op == "deposit":
            delta[op.account] += op.amount_cents
        else:
            delta[op.account] -= op.amount_cents
        if op.op == "transfer":
            assert op.to is not None
            delta[op.to] += op.amount_cents
    return delta


def balances(url: str) -> dict[int, int]:
    async def read() -> dict[int, int]:
        ledger = await open_ledger(url)
        try:
            return {a.id: a.balance_cents for a in await ledger.accounts()}
        finally:
            await ledger.close()

    return asyncio.run(read())


def test_kill_9_under_load_loses_no_acknowledged_operation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    assert main(["bank", "--db", url, "init", "--demo"]) == 0
    for n in range(4, 11):
        args = ["--name", f"Holder {n}", "--pin", "1234", "--deposit", "10000"]
        assert main(["bank", "--db", url, "open", *args]) == 0
    start = balances(url)
    assert sorted(start) == list(range(1, 11))

    server = start_server_process("bank", "--port", "0", "--db", url)
    stop = threading.Event()
    workers = [Worker(account=n % 10 + 1) for n in range(50)]
    threads = [
        threading.Thread(target=load, args=(server.port, w, n, stop), daemon=True)
        for n, w in enumerate(workers)
    ]
    for thread in threads:
        thread.start()
    # The kill comes under load, after enough acknowledged operations to be worth checking;
    # the clients keep sending until they hit the dead server.
    wait_until(
        lambda: sum(len(w.acked) for w in workers) >= 1500, "1500 acknowledged operations", 90
    )
    server.proc.send_signal(signal.SIGKILL)
    assert server.wait() == -signal.SIGKILL
    stop.set()
    for thread in threads:
        thread.join(30)
    assert [e for w in workers for e in w.errors] == []
    acked = [op for w in workers for op in w.acked]
    in_doubt = [w.in_doubt for w in workers if w.in_doubt is not None]
    assert len(acked) >= 1500
    assert in_doubt, "the kill should have caught requests in flight"

    # Restart on the same database: every acknowledged key is there exactly once (a replay
    # answers from the record with the same posting), and the requests in doubt are
    # settled by retrying them with their own keys, as the ATM client does.
    server = start_server_process("bank", "--port", "0", "--db", url)
    settled: list[Op] = []
    try:
        by_account: dict[int, list[Op]] = {}
        for op in acked + in_doubt:
            by_account.setdefault(op.account, []).append(op)
        for account, ops in by_account.items():
            with BankClient("127.0.0.1", server.port, attempts=1) as bank:
                bank.login(account, "1234")
                for op in ops:
                    again = send(bank, op)
                    if op in in_doubt:
                        settled.append(again)
                        continue
                    assert (again.posting_id, again.refused) == (op.posting_id, op.refused)
                    assert again.replayed == (op.posting_id is not None)
    finally:
        assert server.stop() == 0

    expected = effects(acked)
    expected.update(effects(settled))  # update, not +: Counter's + drops negative sums
    after = balances(url)
    assert after == {a: start[a] + expected[a] for a in start}
    capsys.readouterr()
    assert main(["bank", "--db", url, "verify"]) == 0
    assert "OK: the books balance." in capsys.readouterr().out
