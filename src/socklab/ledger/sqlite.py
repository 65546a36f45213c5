"""The embedded SQLite ledger (being written; the interface in ``base`` is final)."""

from __future__ import annotations

from socklab.ledger.base import Ledger, LedgerSettings

MEMORY = ":memory:"


def sqlite_path_from_url(url: str) -> str:
    """``sqlite:///rel.db`` -> ``rel.db``; ``sqlite:////abs.db`` -> ``/abs.db``;
    ``sqlite://`` and ``sqlite:///:memory:`` -> ``:memory:``. Raises ``ValueError``."""
    prefix = "sqlite://"
    if not url.lower().startswith(prefix):
        raise ValueError(f"not a sqlite URL: {url!r}")
    rest = url[len(prefix) :].partition("?")[0]
    if rest in ("", "/", "/" + MEMORY):
        return MEMORY
    if not rest.startswith("/"):
        raise ValueError("a sqlite URL has no host: use sqlite:///relative.db or sqlite:////abs.db")
    return rest[1:]


async def open_sqlite_ledger(path: str, settings: LedgerSettings) -> Ledger:
    raise NotImplementedError("the SQLite ledger lands in the next commit")
