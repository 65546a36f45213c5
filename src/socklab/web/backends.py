"""Where the web side finds the services it drives: the one place that imports them."""

from __future__ import annotations

from socklab.services.bank import BankService

__all__ = ["BankService"]
