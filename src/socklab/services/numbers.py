"""The number checker of seed 003, Problem A.2: is an integer prime, is it a palindrome?

Requests, in every dialect, name an op and a number; the op defaults to ``check`` (both
answers), ``prime`` or ``palindrome`` answer only that one:

- lab, line: ``121`` -> ``[Prime] False [Palindrome] True``; ``prime 97`` ->
  ``[Prime] True``; ``palindrome 121`` -> ``[Palindrome] True``; ``check 121`` is ``121``.
  Op names are case-insensitive. The line dialect (and, harmlessly, lab) also answers
  ``help`` or ``?`` with a usage line.
- json: ``{"op": "check", "number": 121}`` -> ``{"prime": false, "palindrome": true}``;
  ``"op": "prime"`` / ``"palindrome"`` -> only that key. ``number`` is a JSON integer or a
  decimal string (for numbers longer than the 4,300 digits a JSON parser converts), never
  a boolean or a float.

The number, as text: optional spaces, an optional ``+`` or ``-``, then ASCII digits only
(no ``_``, no exponent, no decimal point, no other scripts' digits); leading zeros are
allowed and mean nothing, so ``0110`` is 110. At most ``max_digits`` digits (default
10,000), not counting leading zeros, else ``TooLarge``; anything else is
``InvalidRequest``. The length is checked on the text before it is converted.

Rules:

- **prime**: the usual definition; 0, 1 and negative numbers are not prime. Proven below
  3.3e24, BPSW above (:mod:`socklab.services.primality`).
- **palindrome**: the number's decimal digits, without leading zeros, read the same
  both ways. A negative number is not a palindrome (its ``-`` reads differently
  backwards), so ``-121`` is not one; ``0`` and every single digit are; ``0110`` is 110,
  which is not.

Big numbers: the event loop must not stall on a multi-second check, so positive numbers
of more than ``offload_digits`` digits that trial division does not settle are tested in a
pool of worker processes owned by the service (:mod:`socklab.services.procpool`, created
by ``start()``, closed by ``stop()``); the handler then returns a coroutine. Smaller ones
are answered at once (a plain value). At most ``max_pending`` pooled checks wait or run at
a time, and at most ``max_pending_per_connection`` of one connection; past either,
``ServerBusy``. When a connection is lost (``Session.close()``; one that only half-closes
still wants its replies, so it is not lost), its checks are cancelled: a queued one leaves
the queue, a running one has its worker process killed, and a fresh worker takes the next
check, so work nobody will read never holds a worker. A session of a service that was
never started checks everything inline.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal

import gmpy2

from socklab.errors import InvalidRequest, ServerBusy, TooLarge, UnknownOperation
from socklab.protocol import DEFAULT_PORTS
from socklab.services.base import ConnectionInfo, JsonReply, Service, Session
from socklab.services.primality import is_prime, quick_verdict
from socklab.services.procpool import PoolClosed, ProcessPool, Task, WorkerDied
from socklab.services.text import json_type_name, shorten

log = logging.getLogger(__name__)

_FN = {"function": "handle_client"}

Op = Literal["check", "prime", "palindrome"]
OPS: tuple[Op, ...] = ("check", "prime", "palindrome")

DEFAULT_MAX_DIGITS = 10_000
DEFAULT_OFFLOAD_DIGITS = 200
"""Above this many digits a check goes to the pool: a 200-digit BPSW test takes ~1 ms."""
DEFAULT_MAX_PENDING_PER_CONNECTION = 2
"""Pooled checks one connection may have waiting or running at once."""
STOP_TIMEOUT_S = 5.0
"""``stop()`` waits at most about this long for the killed workers to be reaped."""

LINE_HELP = "usage: N | prime N | palindrome N   (N an integer, e.g. '121' or 'prime 97')"

_LOG10_2 = 0.30102999566398120


@dataclass(frozen=True, slots=True)
class Number:
    """A parsed integer: its decimal digits without sign or leading zeros, and its sign."""

    digits: str
    negative: bool = False

    def __post_init__(self) -> None:
        if not (self.digits.isascii() and self.digits.isdigit()):
            raise ValueError(f"not decimal digits: {self.digits[:30]!r}")
        if self.digits != "0" and self.digits.startswith("0"):
            raise ValueError("digits must not have leading zeros")
        if self.negative and self.digits == "0":
            raise ValueError("zero has no sign")

    @property
    def value(self) -> Any:
        """The number as a ``gmpy2.mpz`` (no limit on its size, unlike ``int(str)``)."""
        magnitude = gmpy2.mpz(self.digits)
        return -magnitude if self.negative else magnitude

    @property
    def is_palindrome(self) -> bool:
        return not self.negative and self.digits == self.digits[::-1]

    def __str__(self) -> str:
        return f"-{self.digits}" if self.negative else self.digits


@dataclass(frozen=True, slots=True)
class Checked:
    """The answer to one request; ``None`` marks a question that was not asked."""

    prime: bool | None = None
    palindrome: bool | None = None

    def as_json(self) -> JsonReply:
        reply: JsonReply = {}
        if self.prime is not None:
            reply["prime"] = self.prime
        if self.palindrome is not None:
            reply["palindrome"] = self.palindrome
        return reply

    def as_text(self) -> str:
        parts = []
        if self.prime is not None:
            parts.append(f"[Prime] {self.prime}")
        if self.palindrome is not None:
            parts.append(f"[Palindrome] {self.palindrome}")
        return " ".join(parts)


def parse_number(text: str, max_digits: int = DEFAULT_MAX_DIGITS) -> Number:
    """The integer written in ``text`` (see the module docstring for the syntax).

    Raises ``InvalidRequest`` if ``text`` is not an integer, ``TooLarge`` if it has more
    than ``max_digits`` digits. The length is checked before anything is converted.
    """
    stripped = text.strip()
    sign = stripped[:1]
    body = stripped[1:] if sign in ("+", "-") else stripped
    if not stripped:
        raise InvalidRequest("empty request: send an integer, e.g. '97'")
    if not (body.isascii() and body.isdigit()):
        raise InvalidRequest(f"{_quote(stripped)} is not an integer")
    digits = body.lstrip("0") or "0"
    if len(digits) > max_digits:
        raise TooLarge(f"the number has {len(digits)} digits; the limit is {max_digits}")
    return Number(digits, negative=sign == "-" and digits != "0")


def number_from_json(value: Any, max_digits: int = DEFAULT_MAX_DIGITS) -> Number:
    """The ``number`` field of a json request: an integer or a decimal string.

    Raises ``InvalidRequest`` for any other type (booleans and floats included) or a
    string that is not an integer, ``TooLarge`` past ``max_digits`` digits.
    """
    if isinstance(value, str):
        return parse_number(value, max_digits)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(
            f"'number' must be an integer or a decimal string, not {json_type_name(value)}"
        )
    magnitude = gmpy2.mpz(abs(value))
    # A cheap lower bound first, so a huge int is refused before it is converted to text.
    if (magnitude.bit_length() - 1) * _LOG10_2 >= max_digits:
        raise TooLarge(f"the number has more than {max_digits} digits")
    digits = magnitude.digits(10)
    if len(digits) > max_digits:
        raise TooLarge(f"the number has {len(digits)} digits; the limit is {max_digits}")
    return Number(digits, negative=value < 0)


def _quote(text: str, limit: int = 30) -> str:
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


def _op(name: Any) -> Op:
    for op in OPS:
        if name == op:
            return op
    raise UnknownOperation(
        f"unknown op {_quote(str(name))}; the numbers service knows {', '.join(OPS)}"
    )


class NumbersService(Service):
    """Primality and palindromes of integers up to ``max_digits`` digits.

    ``offload_digits``: bigger numbers are checked in a pool of ``workers`` processes
    (default: the CPU count, at most 4) while the service is started. ``max_pending``:
    how many pooled checks may wait or run at once (default 4 per worker);
    ``max_pending_per_connection``: how many of them one connection may have (default 2).
    ``check`` is the function the workers run (a module-level function, as it is pickled;
    tests inject a slow one); numbers checked inline always use ``is_prime``.
    """

    name = "numbers"
    default_port = DEFAULT_PORTS["numbers"]
    display_name = "Numbers Server"

    def __init__(
        self,
        max_digits: int = DEFAULT_MAX_DIGITS,
        *,
        offload_digits: int = DEFAULT_OFFLOAD_DIGITS,
        workers: int | None = None,
        max_pending: int | None = None,
        max_pending_per_connection: int = DEFAULT_MAX_PENDING_PER_CONNECTION,
        check: Callable[[Any], bool] = is_prime,
    ) -> None:
        if max_digits < 1:
            raise ValueError("max_digits must be at least 1")
        if workers is not None and workers < 1:
            raise ValueError("workers must be at least 1")
        if max_pending is not None and max_pending < 0:
            raise ValueError("max_pending must not be negative")
        if max_pending_per_connection < 1:
            raise ValueError("max_pending_per_connection must be at least 1")
        self.max_digits = max_digits
        self.offload_digits = offload_digits
        self.workers = workers or min(4, os.cpu_count() or 1)
        self.max_pending = max_pending if max_pending is not None else 4 * self.workers
        self.max_pending_per_connection = max_pending_per_connection
        self.check = check
        self._pool: ProcessPool | None = None

    @property
    def pending(self) -> int:
        """Pooled checks waiting or running."""
        return self._pool.pending if self._pool is not None else 0

    def open_session(self, conn: ConnectionInfo) -> Session:
        return NumbersSession(self, conn)

    async def start(self) -> None:
        """Create the worker pool; its processes start with the first big request.

        Workers start by ``forkserver`` (``spawn`` where there is none), never by a bare
        ``fork`` of a process that may run threads; like every such start method this
        needs an importable main module, which ``socklab``, ``python -m socklab`` and
        pytest have (a script piped into ``python -`` does not).
        """
        if self._pool is None:
            self._pool = ProcessPool(self.workers, self.check, name="socklab-numbers")

    async def stop(self) -> None:
        """Close the pool: checks waiting or running fail with ``ServerBusy``, their
        workers are killed (nobody waits for a 10,000-digit check) and reaped within
        about ``STOP_TIMEOUT_S``."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close(STOP_TIMEOUT_S)

    @property
    def pool(self) -> ProcessPool | None:
        """The worker pool while the service is started."""
        return self._pool

    def answer(
        self, op: Op, number: Number, session: NumbersSession | None = None
    ) -> Checked | Coroutine[Any, Any, Checked]:
        """The answer to ``op`` on ``number``: at once, or a coroutine for a pooled check.

        The coroutine raises ``ServerBusy`` when the pool, or ``session``'s share of it,
        is full, when the server stops, or when the check is cancelled or its worker dies.
        """
        palindrome = None if op == "prime" else number.is_palindrome
        if op == "palindrome":
            return Checked(palindrome=palindrome)
        value = number.value
        if self._pool is None or len(number.digits) <= self.offload_digits:
            return Checked(prime=is_prime(value), palindrome=palindrome)
        verdict = quick_verdict(value)
        if verdict is not None:
            return Checked(prime=verdict, palindrome=palindrome)
        return self._check_in_pool(value, len(number.digits), palindrome, session)

    async def _check_in_pool(
        self, value: Any, digits: int, palindrome: bool | None, session: NumbersSession | None
    ) -> Checked:
        pool = self._pool
        if pool is None:
            raise ServerBusy("the server is shutting down")
        checks = session.checks if session is not None else set()
        if session is not None and session.closed:
            raise ServerBusy("the connection has closed")
        if len(checks) >= self.max_pending_per_connection:
            log.warning(
                "Prime checks of one connection at their limit (%d)", len(checks), extra=_FN
            )
            raise ServerBusy(
                f"this connection has {len(checks)} big numbers being checked already;"
                " wait for their replies"
            )
        if pool.pending >= self.max_pending:
            log.warning("Prime checks queue full (%d)", pool.pending, extra=_FN)
            raise ServerBusy(
                f"{pool.pending} big numbers are being checked already; try again later"
            )
        log.debug("Checking a %d-digit number in a worker", digits, extra=_FN)
        task = pool.submit(value)
        checks.add(task)
        try:
            prime = await task.future
        except asyncio.CancelledError:
            pool.cancel(task)
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # our caller cancelled us
            # Session.close() cancelled the check: nobody will read this reply.
            raise ServerBusy("the check was cancelled: the connection closed") from None
        except WorkerDied:
            raise ServerBusy("the prime check was interrupted; try again") from None
        except PoolClosed:
            raise ServerBusy("the server is shutting down") from None
        finally:
            checks.discard(task)
        return Checked(prime=bool(prime), palindrome=palindrome)

    def cancel(self, task: Task) -> None:
        """Cancel a pooled check (its worker is killed if it runs); idempotent."""
        if self._pool is not None:
            self._pool.cancel(task)


class NumbersSession(Session):
    def __init__(self, service: NumbersService, conn: ConnectionInfo) -> None:
        self.service = service
        self.conn = conn
        self.checks: set[Task] = set()
        """This connection's pooled checks, waiting or running."""
        self.closed = False

    def close(self) -> None:
        """The connection is gone: cancel its pooled checks, killing the workers that
        run them, so that they serve the connections still open."""
        self.closed = True
        if self.checks:
            log.info(
                "Client %s gone: cancelling its prime checks (%d)",
                self.conn.peer,
                len(self.checks),
                extra=_FN,
            )
        for task in list(self.checks):
            self.service.cancel(task)

    def _received(self, message: str) -> None:
        log.info("Message received: %s", shorten(message, 100), extra=_FN)

    def handle_line(self, line: str) -> str | Awaitable[str]:
        """Answer ``N``, ``prime N``, ``palindrome N``, ``check N`` or ``help``.

        Raises ``InvalidRequest``, ``UnknownOperation`` or ``TooLarge`` (see module doc).
        """
        self._received(line)
        words = line.split()
        if len(words) == 1 and words[0].lower() in ("help", "?"):
            return LINE_HELP
        if len(words) == 2:
            op, number_text = _op(words[0].lower()), words[1]
        elif len(words) <= 1:
            op, number_text = "check", line
        else:
            raise InvalidRequest(f"{_quote(line.strip())}: {LINE_HELP}")
        number = parse_number(number_text, self.service.max_digits)
        result = self.service.answer(op, number, self)
        if isinstance(result, Checked):
            return result.as_text()
        return _as_text(result)

    def handle_json(self, request: dict[str, Any]) -> JsonReply | Awaitable[JsonReply]:
        """Answer ``{"op": "check" | "prime" | "palindrome", "number": N}``.

        Raises ``UnknownOperation`` for another op, ``InvalidRequest`` for a missing or
        malformed number, ``TooLarge`` past the digit limit.
        """
        op = _op(request.get("op", "check"))
        if "number" not in request:
            raise InvalidRequest("the request needs a 'number' field (an integer)")
        raw = request["number"]
        self._received(_loggable(raw))
        number = number_from_json(raw, self.service.max_digits)
        result = self.service.answer(op, number, self)
        if isinstance(result, Checked):
            return result.as_json()
        return _as_json(result)


def _loggable(raw: Any) -> str:
    """``raw`` as the lab logged its message: the number as text."""
    if isinstance(raw, str):
        return raw
    if isinstance(raw, int) and not isinstance(raw, bool):
        return str(gmpy2.mpz(raw))  # str(int) is capped at 4,300 digits by default
    try:
        return json.dumps(raw)
    except (TypeError, ValueError):
        return type(raw).__name__


async def _as_text(pending: Awaitable[Checked]) -> str:
    return (await pending).as_text()


async def _as_json(pending: Awaitable[Checked]) -> JsonReply:
    return (await pending).as_json()
