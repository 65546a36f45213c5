"""Ledger fixtures: ``harness`` is a ``LedgerHarness`` for each backend in ``URL_FACTORIES``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from ledger_harness import URL_FACTORIES, LedgerHarness


@pytest.fixture(params=sorted(URL_FACTORIES))
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LedgerHarness]:
    with asyncio.Runner() as runner:
        h = LedgerHarness(URL_FACTORIES[request.param](tmp_path), runner)
        try:
            yield h
        finally:
            h.close_all()
