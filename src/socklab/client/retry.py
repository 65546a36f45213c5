"""When a bank client retries, and how long it waits: pure functions, no I/O, no sleeping.

A driver (the blocking ``BankClient``, or an asyncio client) makes an attempt; when it
fails it asks ``decide(policy, attempt, error, keyed=..., uniform=...)`` what to do next:

- ``Retry``: reconnect if the link broke, wait ``delay_s`` and make attempt ``attempt``,
  with a fresh idempotency key if ``new_key`` (the naive client), else the same one;
- ``GiveUp``: raise ``error`` (the original one, or a ``LinkError`` that says how many
  attempts were made).

What is retried: a ``LinkError`` (the connection broke or timed out: the request may or may
not have been applied, and the same key makes a retry safe) and, unless the policy says
not to, a ``TransientFailure`` reply (nothing was applied). Business refusals
(``insufficient_funds``, ``auth_failed``, ...) and replies that make no sense are never
retried: the answer would not change.

The delay doubles from ``backoff_s`` after each failed attempt, up to ``max_backoff_s``,
times a jitter factor in [0.5, 1.0) drawn from the injected ``uniform`` (so many clients
that lost the same server do not come back in step).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from socklab.errors import LinkError, TransientFailure

Uniform = Callable[[float, float], float]
"""``random.Random().uniform``, or a fake in tests."""

JITTER = (0.5, 1.0)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard a client tries before it gives up."""

    attempts: int = 5
    """Attempts in all, the first one included."""
    backoff_s: float = 0.2
    """The base of the delay before the first retry (before jitter)."""
    max_backoff_s: float = 3.0
    retry_transient: bool = True
    """Retry a ``transient_failure`` reply (the bank applied nothing)."""
    new_key_each_attempt: bool = False
    """The naive client: a new idempotency key per attempt (a lost reply means a second
    application). Exists to demonstrate why the same key matters."""

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError("backoff times cannot be negative")


@dataclass(frozen=True, slots=True)
class Retry:
    """Try again."""

    attempt: int
    """The attempt about to be made (2 for the first retry)."""
    delay_s: float
    new_key: bool
    """Send a fresh idempotency key (only for keyed requests under a naive policy)."""
    reason: str
    """What went wrong, for people."""
    reconnect: bool
    """The connection is gone: open a new one (and log in again) first."""


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Stop and raise ``error``."""

    error: BaseException


def backoff_delay(policy: RetryPolicy, failed_attempt: int, uniform: Uniform) -> float:
    """Seconds to wait after attempt ``failed_attempt`` (from 1) failed, jitter included."""
    base = min(policy.max_backoff_s, policy.backoff_s * 2.0 ** (failed_attempt - 1))
    return base * uniform(*JITTER)


def decide(
    policy: RetryPolicy,
    attempt: int,
    error: BaseException,
    *,
    keyed: bool,
    uniform: Uniform,
) -> Retry | GiveUp:
    """What to do after attempt number ``attempt`` (from 1) failed with ``error``.

    ``keyed``: the request carries an idempotency key. ``uniform`` is only called when
    the answer is ``Retry``.
    """
    if isinstance(error, LinkError):
        reason, reconnect = str(error), True
    elif isinstance(error, TransientFailure) and policy.retry_transient:
        reason, reconnect = f"the bank said: {error.message}", False
    else:
        return GiveUp(error)
    if attempt >= policy.attempts:
        if isinstance(error, LinkError):
            return GiveUp(type(error)(f"{error} (gave up after {attempt} attempts)"))
        return GiveUp(error)
    return Retry(
        attempt=attempt + 1,
        delay_s=backoff_delay(policy, attempt, uniform),
        new_key=keyed and policy.new_key_each_attempt,
        reason=reason,
        reconnect=reconnect,
    )


@dataclass(frozen=True, slots=True)
class RetryNotice:
    """What the client is about to do after a failed attempt (for the user)."""

    op: str
    attempt: int
    """The attempt about to be made (2 for the first retry)."""
    attempts: int
    reason: str
    key: str | None
    same_key: bool
    delay_s: float

    def describe(self) -> str:
        if self.key is None:
            how = f"retrying {self.op}"
        elif self.same_key:
            how = f"retrying {self.op} with the same idempotency key"
        else:
            how = f"retrying {self.op} with a NEW key (naive)"
        return (
            f"{self.reason}; reconnecting and {how} "
            f"(attempt {self.attempt} of {self.attempts}) in {self.delay_s:.1f} s"
        )


def notice(op: str, policy: RetryPolicy, retry: Retry, key: str | None) -> RetryNotice:
    """The notice for ``retry`` of ``op``, ``key`` being the key it will send."""
    return RetryNotice(
        op,
        retry.attempt,
        policy.attempts,
        retry.reason,
        key,
        not policy.new_key_each_attempt,
        retry.delay_s,
    )
