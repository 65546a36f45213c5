"""A bank connection: its state in ``FLOW``, the json dialect, and the hand-off to the
line and lab adapters.

A request is checked in this order, the same for json and line: the op is known
(``unknown_op``), allowed in the session's state (``not_logged_in``), then its fields
(``invalid_request``, ``invalid_amount``). A reply is the typed value the core returns;
json sends its ``to_json()``, the line dialect puts it into words.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from socklab.errors import NotLoggedIn, RequestRejected
from socklab.ledger import AccountId
from socklab.logs import fn
from socklab.protocol.bank import (
    OPS,
    REQUEST_PARSERS,
    Balance,
    BankReply,
    BankRequest,
    ChangePin,
    GetStats,
    Help,
    HelpInfo,
    LoggedOut,
    Login,
    Logout,
    Move,
    Statement,
    StatsInfo,
    parse_op,
)
from socklab.services.bank.core import ANONYMOUS, FLOW, BankService, new_key
from socklab.services.bank.lab import LabConversation
from socklab.services.bank.line import LINE_HELP, line_request, line_text, parse_command
from socklab.services.base import ConnectionInfo, JsonReply, Session

log = logging.getLogger(__name__)


class BankSession(Session):
    """One connection: its state in ``FLOW`` and the account logged in."""

    def __init__(self, service: BankService, conn: ConnectionInfo) -> None:
        self.service = service
        self.conn = conn
        self.state = ANONYMOUS
        self.account: AccountId | None = None
        self._lab: LabConversation | None = None

    def check_order(self, op: str) -> str:
        """The state the known ``op`` leads to. Raises ``NotLoggedIn`` if not allowed now."""
        allowed = FLOW[self.state]
        if op not in allowed:
            raise NotLoggedIn(f"log in first: {op} needs a logged-in account")
        return allowed[op]

    async def run(self, request: BankRequest, next_state: str) -> BankReply:
        """Answer ``request`` (allowed in the current state) and move to ``next_state``.

        Raises the core's rejections; the state then stays (a failed login leaves none).
        """
        reply = await self._answer(request)
        self.state = next_state
        return reply

    async def _answer(self, request: BankRequest) -> BankReply:
        service = self.service
        if isinstance(request, Login):
            # A login replaces the session's identity: a failed one leaves none.
            self.account, self.state = None, ANONYMOUS
            logged_in = await service.login(self.conn, request)
            self.account = logged_in.account
            return logged_in
        if isinstance(request, GetStats):
            return StatsInfo(await service.stats())
        if isinstance(request, Help):
            return HelpInfo(OPS, tuple(FLOW[self.state]))
        account = self.account
        assert account is not None  # FLOW only lets logged-in sessions get here
        if isinstance(request, Move):
            return await service.move(self.conn, account, request)
        if isinstance(request, Balance):
            return await service.balance(account)
        if isinstance(request, Statement):
            return await service.statement(account, request)
        if isinstance(request, ChangePin):
            return await service.change_pin(self.conn, account, request)
        assert isinstance(request, Logout)
        self.account = None
        log.info("Account %s logged out", account, extra=fn("handle_client"))
        return LoggedOut(account)

    # -- json ----------------------------------------------------------------------------

    def handle_json(self, request: dict[str, Any]) -> Awaitable[JsonReply]:
        op = parse_op(request.get("op"))
        next_state = self.check_order(op)
        return self._run_json(REQUEST_PARSERS[op](request), next_state)

    async def _run_json(self, request: BankRequest, next_state: str) -> JsonReply:
        return (await self.run(request, next_state)).to_json()

    # -- line ----------------------------------------------------------------------------

    def handle_line(self, line: str) -> str | Awaitable[str]:
        command, args = parse_command(line)
        if command is None:
            return LINE_HELP
        build = line_request(command, args, key=new_key("line"))
        next_state = self.check_order(command)
        return self._run_line(build, next_state)

    async def _run_line(self, build: Callable[[], BankRequest], next_state: str) -> str:
        try:
            return line_text(await self.run(build(), next_state))
        except RequestRejected as exc:
            if exc.replayed:
                exc.message += " (replayed: already refused)"
            raise

    # -- lab -----------------------------------------------------------------------------

    def handle_lab(self, payload: str) -> str | Awaitable[str]:
        if self._lab is None:
            self._lab = LabConversation(self.service, self.conn)
        return self._lab.handle(payload)

    def farewell(self) -> str:
        return "[DISCONNECTED]"
