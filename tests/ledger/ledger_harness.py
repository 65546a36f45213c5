"""The ledger test harness: a ledger per backend, driven by its own event loop.

pytest-asyncio is not used: each test gets an ``asyncio.Runner``, and the harness runs
coroutines on it (``h.run(ledger.deposit(...))``). A backend is a URL factory, called
once per test; opening the same URL again (``h.reopen()``) sees the same database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from helpers import CLOSE_TIMEOUT_S
from socklab.ledger import Ledger, LedgerSettings, open_ledger

T = TypeVar("T")

URL_FACTORIES: dict[str, Callable[[Path], str]] = {
    "sqlite": lambda tmp_path: f"sqlite:///{tmp_path / 'bank.db'}",
}
"""Backend name -> (tmp_path -> URL of a fresh, empty ledger). PostgreSQL joins here."""


class FakeClock:
    """Unix seconds that move only when told (``advance``): lockouts without sleeps."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def fast(clock: FakeClock, **changes: Any) -> LedgerSettings:
    """Settings for lockout tests: 3 wrong PINs from one address lock it for 60 s."""
    return LedgerSettings(**{"lockout_s": 60.0, "max_failed_logins": 3, "clock": clock, **changes})


FAST = LedgerSettings(lockout_s=60.0, max_failed_logins=3)


class LedgerHarness:
    def __init__(self, url: str, runner: asyncio.Runner) -> None:
        self.url = url
        self.runner = runner
        self.settings = LedgerSettings()
        self._open: list[Ledger] = []

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        result: T = self.runner.run(coro)
        return result

    def open(self, settings: LedgerSettings | None = None, *, demo: bool = True) -> Ledger:
        """Open the test's ledger (with the demo accounts 1, 2, 3 unless ``demo=False``)."""
        if settings is not None:
            self.settings = settings
        ledger = self.run(open_ledger(self.url, self.settings))
        self._open.append(ledger)
        if demo:
            self.run(ledger.ensure_demo_accounts())
        return ledger

    def reopen(self, ledger: Ledger) -> Ledger:
        """Close ``ledger`` and open the same database again."""
        self.close(ledger)
        return self.open(self.settings, demo=False)

    def close(self, ledger: Ledger) -> None:
        """Close ``ledger``; ``TimeoutError`` if that takes over ``CLOSE_TIMEOUT_S``."""
        self._open.remove(ledger)
        self.run(asyncio.wait_for(ledger.close(), CLOSE_TIMEOUT_S))

    def close_all(self) -> None:
        while self._open:
            self.close(self._open[-1])
