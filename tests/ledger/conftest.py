"""Ledger fixtures: ``harness`` is a ``LedgerHarness`` for each backend in ``URL_FACTORIES``,
and for PostgreSQL (``postgres_url``: a fresh schema of the database named by
``SOCKLAB_TEST_POSTGRES_URL``, dropped after the test)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from ledger_harness import URL_FACTORIES, LedgerHarness

from helpers import bounded_runner
from postgres_db import fresh_schema, require_postgres


@pytest.fixture(
    params=[*sorted(URL_FACTORIES), pytest.param("postgres", marks=pytest.mark.postgres)]
)
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LedgerHarness]:
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
    else:
        url = URL_FACTORIES[request.param](tmp_path)
    with bounded_runner() as runner:
        h = LedgerHarness(url, runner)
        try:
            yield h
        finally:
            h.close_all()


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The test database's server (``postgres_db.require_postgres``: without it a test
    fails under ``CI=true`` and is skipped elsewhere)."""
    return require_postgres()


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A URL whose tables live in a fresh schema, dropped afterwards
    (``postgres_db.fresh_schema``)."""
    with fresh_schema(postgres_server) as url:
        yield url
