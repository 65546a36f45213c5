"""Ledger fixtures: ``harness`` is a ``LedgerHarness`` for each backend in ``URL_FACTORIES``,
and for PostgreSQL (``postgres_url``: a fresh schema of the database named by
``SOCKLAB_TEST_POSTGRES_URL``, dropped after the test)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode, urlsplit, urlunsplit

import pytest
from ledger_harness import URL_FACTORIES, LedgerHarness

POSTGRES_URL = os.environ.get(
    "SOCKLAB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(
    params=[*sorted(URL_FACTORIES), pytest.param("postgres", marks=pytest.mark.postgres)]
)
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LedgerHarness]:
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
    else:
        url = URL_FACTORIES[request.param](tmp_path)
    with asyncio.Runner() as runner:
        h = LedgerHarness(url, runner)
        try:
            yield h
        finally:
            h.close_all()


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """``POSTGRES_URL`` if the server answers. Without it a test fails under ``CI=true``
    (CI provides the database) and is skipped elsewhere."""
    try:
        import psycopg

        with psycopg.connect(POSTGRES_URL, connect_timeout=5):
            pass
    except Exception as exc:
        reason = f"no PostgreSQL at SOCKLAB_TEST_POSTGRES_URL={POSTGRES_URL}: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return POSTGRES_URL


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A URL whose tables live in a fresh schema (its ``search_path``), so that runs and
    tests never see each other's data; the schema is dropped afterwards."""
    import psycopg
    from psycopg import sql

    schema = f"socklab_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield with_search_path(postgres_server, schema)
    finally:
        with psycopg.connect(postgres_server, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def with_search_path(url: str, schema: str) -> str:
    parts = urlsplit(url)
    option = urlencode({"options": f"-csearch_path={schema}"})
    return urlunsplit(parts._replace(query=f"{parts.query}&{option}" if parts.query else option))
