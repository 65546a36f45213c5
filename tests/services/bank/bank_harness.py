"""A bank service on a fresh SQLite ledger, driven by direct session calls (no sockets).

pytest-asyncio is not used: the harness owns an ``asyncio.Runner`` and runs whatever a
handler returns on it, so a test reads like the conversation it checks.
"""

from __future__ import annotations

import asyncio
import inspect
import random
from collections.abc import Awaitable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

from socklab.ledger import LedgerSettings
from socklab.services.bank import BankService, BankSession, FailMode
from socklab.services.base import ConnectionInfo

T = TypeVar("T")


class BankHarness:
    def __init__(self, runner: asyncio.Runner, service: BankService) -> None:
        self.runner = runner
        self.service = service
        self.dropped: list[int] = []

    def run(self, value: Any) -> Any:
        """The reply: ``value`` itself, or what it resolves to on the harness's loop."""
        if inspect.isawaitable(value):
            return self.runner.run(_wait(value))
        return value

    def await_(self, coro: Coroutine[Any, Any, T]) -> T:
        result: T = self.runner.run(coro)
        return result

    def session(self, peer: str = "('127.0.0.1', 40000)", host: str = "") -> BankSession:
        session = self.service.open_session(ConnectionInfo(peer=peer, host=host))
        assert isinstance(session, BankSession)
        return session

    def json(self, session: BankSession, op: str, **fields: Any) -> dict[str, Any]:
        reply: dict[str, Any] = self.run(session.handle_json({"op": op, **fields}))
        return reply

    def line(self, session: BankSession, text: str) -> str:
        reply: str = self.run(session.handle_line(text))
        return reply

    def lab(self, session: BankSession, payload: str) -> str:
        reply: str = self.run(session.handle_lab(payload))
        return reply

    def logged_in(self, account: int = 1, pin: str = "1234") -> BankSession:
        session = self.session()
        self.json(session, "login", account=account, pin=pin)
        return session

    def balance_cents(self, account: int) -> int:
        return self.await_(self.service.ledger.get_account(account)).balance_cents


async def _wait(value: Awaitable[T]) -> T:
    return await value


def bank_harness(
    tmp_path: Path,
    *,
    fail_rate: float = 0.0,
    fail_mode: FailMode = "reject",
    rng: random.Random | int | None = None,
    settings: LedgerSettings | None = None,
    **options: Any,
) -> Iterator[BankHarness]:
    """``options``: more ``BankService`` arguments (login limits, clock, sleep)."""
    service = BankService(
        f"sqlite:///{tmp_path / 'bank.db'}",
        settings=settings,
        fail_rate=fail_rate,
        fail_mode=fail_mode,
        rng=rng,
        **options,
    )
    with asyncio.Runner() as runner:
        runner.run(service.start())
        try:
            yield BankHarness(runner, service)
        finally:
            runner.run(service.stop())
