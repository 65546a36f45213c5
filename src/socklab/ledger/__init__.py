"""The bank ledger: one interface (``base.Ledger``), backends chosen by URL.

URLs (SQLAlchemy's convention for SQLite paths):

- ``sqlite:///bank.db`` (relative path), ``sqlite:////var/lib/socklab/bank.db`` (absolute),
  ``sqlite:///:memory:`` or ``sqlite://`` (in memory, gone on close);
- ``postgresql://user@host/db`` (or ``postgres://``): ``socklab.ledger.postgres``.

Query options set ``LedgerSettings`` fields, e.g. ``sqlite:///bank.db?group_commit=0``
(see ``URL_OPTIONS``). For SQLite an unknown option is an error; for PostgreSQL the
other options are left in the URL for libpq (``sslmode=...``).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from urllib.parse import parse_qsl, urlencode, urlsplit

from socklab.ledger.base import (
    Account,
    AccountId,
    Ledger,
    LedgerSettings,
    Op,
    Posting,
    Receipt,
    Stats,
    VerifyReport,
)

__all__ = [
    "URL_OPTIONS",
    "Account",
    "AccountId",
    "Ledger",
    "LedgerSettings",
    "Op",
    "Posting",
    "Receipt",
    "Stats",
    "VerifyReport",
    "open_ledger",
    "split_ledger_url",
]


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


URL_OPTIONS: dict[str, Callable[[str], object]] = {
    "max_amount_cents": int,
    "max_failed_logins": int,
    "max_account_failed_logins": int,
    "lockout_s": float,
    "pin_hash_concurrency": int,
    "group_commit": _parse_bool,
}
"""Query options of a ledger URL: ``LedgerSettings`` field -> parser of its text."""

SQLITE_SCHEMES = ("sqlite",)
POSTGRES_SCHEMES = ("postgresql", "postgres")


def split_ledger_url(
    url: str, settings: LedgerSettings | None = None
) -> tuple[str, str, LedgerSettings]:
    """Split ``url`` into (scheme, url without our options, settings with them applied).

    Raises ``ValueError`` for an unknown scheme, a bad option value, or (SQLite) an
    unknown option.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SQLITE_SCHEMES + POSTGRES_SCHEMES:
        raise ValueError(
            f"unsupported ledger URL scheme {parts.scheme!r}: use sqlite:///path.db "
            "or postgresql://..."
        )
    changes: dict[str, object] = {}
    rest: list[tuple[str, str]] = []
    for name, text in parse_qsl(parts.query, keep_blank_values=True):
        parse = URL_OPTIONS.get(name)
        if parse is None:
            if scheme in SQLITE_SCHEMES:
                known = ", ".join(sorted(URL_OPTIONS))
                raise ValueError(f"unknown ledger URL option {name!r} (known: {known})")
            rest.append((name, text))
            continue
        try:
            changes[name] = parse(text)
        except ValueError:
            raise ValueError(f"bad value for ledger URL option {name!r}: {text!r}") from None
    merged = dataclasses.replace(settings or LedgerSettings(), **changes)  # type: ignore[arg-type]
    # Rebuilt by hand: urlunsplit would drop the empty host of sqlite:////abs.db.
    stripped = url.partition("?")[0].partition("#")[0]
    if rest:
        stripped += "?" + urlencode(rest)
    return scheme, stripped, merged


async def open_ledger(url: str, settings: LedgerSettings | None = None) -> Ledger:
    """Open (creating or migrating if needed) the ledger at ``url``.

    Raises ``ValueError`` for a bad URL, ``StorageError`` if the database cannot be opened.
    """
    scheme, stripped, merged = split_ledger_url(url, settings)
    if scheme in SQLITE_SCHEMES:
        from socklab.ledger.sqlite import open_sqlite_ledger, sqlite_path_from_url

        return await open_sqlite_ledger(sqlite_path_from_url(stripped), merged)
    # The PostgreSQL backend provides ``async def open_postgres_ledger(dsn: str,
    # settings: LedgerSettings) -> Ledger``; imported lazily, psycopg is optional.
    postgres = importlib.import_module("socklab.ledger.postgres")
    ledger: Ledger = await postgres.open_postgres_ledger(stripped, merged)
    return ledger
