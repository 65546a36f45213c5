"""The bank service (seed 003 Problem B): a core and the adapters of its dialects.

- ``core``: ``BankService`` (ledger, fault injection, login limit, the ``FLOW`` table),
  typed requests in, typed replies out; it imports no adapter;
- ``session``: a connection's state and the json dialect; it hands lines to ``line`` and
  lab frames to ``lab`` (the seed's ATM conversation);
- ``limits``: the per-address login limit.

Importing this package wires the session adapter into the core.
"""

from socklab.services.bank.core import (
    ANONYMOUS,
    AUTHENTICATED,
    FAIL_MODES,
    FLOW,
    MONEY_OPS,
    BankService,
    FailMode,
)
from socklab.services.bank.session import BankSession

BankService.session_factory = BankSession

__all__ = [
    "ANONYMOUS",
    "AUTHENTICATED",
    "FAIL_MODES",
    "FLOW",
    "MONEY_OPS",
    "BankService",
    "BankSession",
    "FailMode",
]
