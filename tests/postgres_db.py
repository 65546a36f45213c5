"""The test PostgreSQL, shared by the ledger tests and the end-to-end tests.

``require_postgres()`` is the server named by ``SOCKLAB_TEST_POSTGRES_URL``, or a failure
under ``CI=true`` (CI provides the database) and a skip elsewhere. ``fresh_schema(url)``
gives a URL whose tables live in a new schema (its ``search_path``, passed to libpq as
``options=-csearch_path=...``), dropped afterwards, so that runs and tests never see each
other's data; every process opened on that URL, in-process or a real server, shares it.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from urllib.parse import urlencode, urlsplit, urlunsplit

import pytest

POSTGRES_URL = os.environ.get(
    "SOCKLAB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def require_postgres() -> str:
    """``POSTGRES_URL`` if the server answers; else fail under ``CI=true``, skip elsewhere."""
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


@contextlib.contextmanager
def fresh_schema(server_url: str) -> Iterator[str]:
    """A URL of ``server_url``'s database whose tables live in a new, empty schema; the
    schema (and everything in it) is dropped on exit."""
    import psycopg
    from psycopg import sql

    schema = f"socklab_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield with_search_path(server_url, schema)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def with_search_path(url: str, schema: str) -> str:
    parts = urlsplit(url)
    option = urlencode({"options": f"-csearch_path={schema}"})
    return urlunsplit(parts._replace(query=f"{parts.query}&{option}" if parts.query else option))
