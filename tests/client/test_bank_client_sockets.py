"""The ATM's client (``BankClient``) against a real bank on a real socket: it retries lost
replies, timeouts and transient failures with the same key, and gives up after its attempts."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from helpers import ScriptedRandom, running_server
from socklab.client.bank_client import BankClient, new_key
from socklab.errors import LinkBroken, TransientFailure
from socklab.protocol.bank import Moved
from socklab.services.bank import BankService

PIN = "1234"


@pytest.fixture
def ledger_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'bank.db'}"


# -- a dropped connection is retried with the same key, and applied once ---------------


def test_the_client_retries_a_lost_reply_with_the_same_key(ledger_url: str) -> None:
    rng = ScriptedRandom([0.0, 0.0])  # the first two attempts lose their replies
    service = BankService(ledger_url, fail_rate=0.5, fail_mode="lose-reply", rng=rng)
    notices: list[str] = []
    with (
        running_server(service) as server,
        BankClient(
            "127.0.0.1",
            server.port,
            backoff_s=0.01,
            on_retry=lambda notice: notices.append(notice.describe()),
        ) as bank,
    ):
        bank.login(1, PIN)
        receipt = bank.deposit(12_50, key="the-key")
        assert (receipt.attempts, receipt.replayed, receipt.keys_sent) == (3, True, ("the-key",))
        assert receipt.balance_cents == 10_012_50
        assert bank.reconnects == 2
        assert bank.balance().balance_cents == 10_012_50
    assert len(notices) == 2
    assert "retrying deposit with the same idempotency key (attempt 2 of 5)" in notices[0]


def test_the_client_gives_up_after_its_attempts(ledger_url: str) -> None:
    service = BankService(ledger_url, fail_rate=1.0, fail_mode="lose-reply")
    with (
        running_server(service) as server,
        BankClient("127.0.0.1", server.port, attempts=3, backoff_s=0.001) as bank,
    ):
        bank.login(1, PIN)
        with pytest.raises(LinkBroken, match="gave up after 3 attempts"):
            bank.withdraw(1_00, key="k")
        assert server.call(lambda: service.ledger.get_account(1)).balance_cents == 9_999_00


class HeldFirstReply(BankService):
    """Applies the first money request, then holds its reply until ``release`` is set."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.is_first = True
        self.release = asyncio.Event()

    async def move(self, *args: Any, **kwargs: Any) -> Moved:
        tx = await super().move(*args, **kwargs)
        if self.is_first:
            self.is_first = False
            await self.release.wait()
        return tx


def test_a_timeout_is_retried_with_the_same_key(ledger_url: str) -> None:
    service = HeldFirstReply(ledger_url)
    notices: list[str] = []
    with (
        running_server(service) as server,
        BankClient(
            "127.0.0.1",
            server.port,
            timeout_s=30,  # the login's slow PIN check, and the retry's, get all they need
            backoff_s=0.01,
            on_retry=lambda notice: notices.append(notice.reason),
        ) as bank,
    ):
        bank.login(1, PIN)
        # Only the held reply is waited for briefly: the first attempt times out for sure.
        conn = bank._conn
        assert conn is not None
        conn.timeout_s = 0.3
        conn.sock.settimeout(0.3)
        try:
            receipt = bank.transfer(2, 3_00)
        finally:
            server.loop.call_soon_threadsafe(service.release.set)
        assert (receipt.attempts, receipt.replayed) == (2, True)
        assert server.call(lambda: service.ledger.get_account(2)).balance_cents == 10_003_00
    assert notices == [f"no reply from 127.0.0.1:{server.port} within 0.3 s"]


def test_a_transient_failure_is_retried_with_the_same_key(ledger_url: str) -> None:
    service = BankService(ledger_url, fail_rate=0.5, rng=ScriptedRandom([0.0]))
    with (
        running_server(service) as server,
        BankClient("127.0.0.1", server.port, backoff_s=0.01) as bank,
    ):
        bank.login(1, PIN)
        receipt = bank.deposit(1_00, key="k")
        assert (receipt.attempts, receipt.replayed, receipt.keys_sent) == (2, False, ("k",))
        stats = bank.stats()
        assert (stats.total, stats.successful, stats.failed) == (2, 1, 1)
    with (
        running_server(BankService(ledger_url, fail_rate=1.0)) as server,
        BankClient("127.0.0.1", server.port, retry_transient=False) as bank,
    ):
        bank.login(1, PIN)
        with pytest.raises(TransientFailure):
            bank.deposit(1_00)


# -- the pure parts ------------------------------------------------------------------------


def test_new_keys_are_fresh_and_carry_their_prefix() -> None:
    keys = {new_key("atm") for _ in range(100)}
    assert len(keys) == 100
    assert all(k.startswith("atm-") and len(k) == len("atm-") + 32 for k in keys)


def test_attempts_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match="attempts must be at least 1"):
        BankClient("127.0.0.1", 1, attempts=0)
