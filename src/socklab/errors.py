"""The exception tree of socklab, and the table between wire error codes and classes.

SocklabError
├── ProtocolError
│   ├── LocalProtocolError   we were about to send something invalid: our bug
│   └── PeerProtocolError    the other side sent something invalid
├── LinkError                LinkClosed, LinkBroken (peer or network), LinkTimeout
├── RequestRejected          a request was refused; ``code`` is the stable wire code
│   ├── InvalidRequest, UnknownOperation, OutOfRange
│   ├── AuthFailed, AccountLocked, NotLoggedIn
│   ├── UnknownAccount, InsufficientFunds, KeyReused, TransientFailure
│   └── ...
└── StorageError             a ledger backend failed; the original is in ``__cause__``

Two control-flow exceptions sit beside the tree: ``DropConnection`` (a service asks the
server to cut the connection without a reply: the lose-reply fault) and ``StopService``.
"""

from __future__ import annotations

from typing import ClassVar


class SocklabError(Exception):
    """Base of every error socklab raises on purpose."""


class ProtocolError(SocklabError):
    """Bytes that break the rules of a dialect."""


class LocalProtocolError(ProtocolError):
    """We were about to send something invalid."""


class PeerProtocolError(ProtocolError):
    """The peer sent something invalid.

    ``fatal`` says whether the stream can go on: a bad JSON line can be skipped, a lab
    header that is not a length cannot (the next frame boundary is unknown).
    """

    def __init__(self, code: str, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fatal = fatal


class LinkError(SocklabError):
    """The connection is unusable."""


class LinkClosed(LinkError):
    """We closed the connection."""


class LinkBroken(LinkError):
    """The peer or the network closed the connection."""


class LinkTimeout(LinkError):
    """No answer in time."""


class RequestRejected(SocklabError):
    """The server refused a request. ``code`` is stable; ``message`` is for humans."""

    code: ClassVar[str] = "rejected"

    def __init__(self, message: str, *, code: str | None = None, replayed: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.replayed = replayed
        """The stored outcome of an earlier request with the same idempotency key."""
        if code is not None:
            self.code = code  # type: ignore[misc]  # a per-instance code for codes with no class


class InvalidRequest(RequestRejected):
    code = "invalid_request"


class UnknownOperation(RequestRejected):
    code = "unknown_op"


class OutOfRange(RequestRejected):
    code = "out_of_range"


class TooLarge(RequestRejected):
    code = "too_large"


class AuthFailed(RequestRejected):
    code = "auth_failed"


class AccountLocked(RequestRejected):
    code = "account_locked"


class NotLoggedIn(RequestRejected):
    code = "not_logged_in"


class UnknownAccount(RequestRejected):
    code = "unknown_account"


class InsufficientFunds(RequestRejected):
    code = "insufficient_funds"


class InvalidAmount(RequestRejected):
    code = "invalid_amount"


class SameAccount(RequestRejected):
    code = "same_account"


class KeyReused(RequestRejected):
    code = "key_reused"


class TransientFailure(RequestRejected):
    """Nothing was applied; the same request (same idempotency key) may be retried."""

    code = "transient_failure"


class ServerBusy(RequestRejected):
    code = "server_busy"


class TooManyLogins(RequestRejected):
    """A client address tried to log in faster than the bank allows; nothing was checked."""

    code = "too_many_logins"


class StorageError(SocklabError):
    """A ledger backend failed."""


class DropConnection(Exception):
    """Raised by a service to make the server close the connection without replying."""


def _all_rejections() -> dict[str, type[RequestRejected]]:
    table: dict[str, type[RequestRejected]] = {}
    pending: list[type[RequestRejected]] = [RequestRejected]
    while pending:
        cls = pending.pop()
        table[cls.code] = cls
        pending.extend(cls.__subclasses__())
    return table


REJECTIONS: dict[str, type[RequestRejected]] = _all_rejections()


def rejection_from_wire(code: str, message: str) -> RequestRejected:
    """Build the exception a client raises for an error reply with ``code``."""
    cls = REJECTIONS.get(code)
    if cls is None:
        return RequestRejected(message, code=code)
    return cls(message)
