"""The retry policy, as pure functions: every error kind, every attempt, injected jitter."""

from __future__ import annotations

import pytest

from socklab.client.retry import (
    GiveUp,
    Retry,
    RetryNotice,
    RetryPolicy,
    backoff_delay,
    decide,
    notice,
)
from socklab.errors import (
    AuthFailed,
    InsufficientFunds,
    InvalidRequest,
    KeyReused,
    LinkBroken,
    LinkClosed,
    LinkError,
    LinkTimeout,
    PeerProtocolError,
    TransientFailure,
)


def no_jitter(low: float, high: float) -> float:
    return high


def least_jitter(low: float, high: float) -> float:
    return low


def never(low: float, high: float) -> float:
    raise AssertionError("jitter drawn for a decision that does not wait")


LINK_ERRORS = [LinkBroken("the peer closed"), LinkTimeout("no reply in 5 s"), LinkClosed("closed")]


@pytest.mark.parametrize("error", LINK_ERRORS, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("keyed", [True, False])
def test_a_link_error_is_retried_with_a_reconnect(error: LinkError, keyed: bool) -> None:
    action = decide(RetryPolicy(attempts=3), 1, error, keyed=keyed, uniform=no_jitter)
    assert action == Retry(attempt=2, delay_s=0.2, new_key=False, reason=str(error), reconnect=True)


def test_a_transient_failure_is_retried_on_the_same_connection() -> None:
    error = TransientFailure("nothing was applied")
    action = decide(RetryPolicy(), 2, error, keyed=True, uniform=no_jitter)
    assert action == Retry(
        attempt=3,
        delay_s=0.4,
        new_key=False,
        reason="the bank said: nothing was applied",
        reconnect=False,
    )


def test_a_transient_failure_is_final_when_the_policy_says_so() -> None:
    error = TransientFailure("nothing was applied")
    action = decide(RetryPolicy(retry_transient=False), 1, error, keyed=True, uniform=never)
    assert isinstance(action, GiveUp) and action.error is error


@pytest.mark.parametrize(
    "error",
    [
        InsufficientFunds("not enough"),
        AuthFailed("wrong PIN"),
        InvalidRequest("bad"),
        KeyReused("other request"),
        PeerProtocolError("bad_reply", "odd"),
        ValueError("a bug"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_refusals_and_nonsense_are_never_retried(error: Exception) -> None:
    """The answer would not change: the same error goes up, on the first attempt."""
    action = decide(RetryPolicy(attempts=10), 1, error, keyed=True, uniform=never)
    assert isinstance(action, GiveUp) and action.error is error


@pytest.mark.parametrize("error", LINK_ERRORS, ids=lambda e: type(e).__name__)
def test_the_last_link_error_says_how_many_attempts_were_made(error: LinkError) -> None:
    action = decide(RetryPolicy(attempts=3), 3, error, keyed=True, uniform=never)
    assert isinstance(action, GiveUp)
    assert type(action.error) is type(error)
    assert str(action.error) == f"{error} (gave up after 3 attempts)"


def test_the_last_transient_failure_goes_up_as_it_came() -> None:
    error = TransientFailure("busy")
    action = decide(RetryPolicy(attempts=2), 2, error, keyed=True, uniform=never)
    assert isinstance(action, GiveUp) and action.error is error


def test_a_single_attempt_policy_never_retries() -> None:
    action = decide(RetryPolicy(attempts=1), 1, LinkBroken("x"), keyed=False, uniform=never)
    assert isinstance(action, GiveUp)


@pytest.mark.parametrize("attempts", [1, 2, 5, 8])
def test_every_attempt_up_to_the_limit_is_retried_then_none(attempts: int) -> None:
    policy = RetryPolicy(attempts=attempts)
    decisions = [
        decide(policy, n, LinkTimeout("t"), keyed=True, uniform=no_jitter)
        for n in range(1, attempts + 1)
    ]
    assert [type(d) for d in decisions] == [Retry] * (attempts - 1) + [GiveUp]
    assert [d.attempt for d in decisions if isinstance(d, Retry)] == list(range(2, attempts + 1))


def test_naive_policy_asks_for_a_new_key_only_for_keyed_requests() -> None:
    naive = RetryPolicy(new_key_each_attempt=True)
    keyed = decide(naive, 1, LinkBroken("x"), keyed=True, uniform=no_jitter)
    unkeyed = decide(naive, 1, LinkBroken("x"), keyed=False, uniform=no_jitter)
    assert isinstance(keyed, Retry) and keyed.new_key
    assert isinstance(unkeyed, Retry) and not unkeyed.new_key


def test_the_delay_doubles_up_to_the_cap() -> None:
    policy = RetryPolicy(backoff_s=0.25, max_backoff_s=1.5)
    delays = [backoff_delay(policy, n, no_jitter) for n in range(1, 7)]
    assert delays == [0.25, 0.5, 1.0, 1.5, 1.5, 1.5]


def test_jitter_scales_the_delay_by_the_injected_draw() -> None:
    policy = RetryPolicy(backoff_s=1.0, max_backoff_s=10.0)
    draws: list[tuple[float, float]] = []

    def record(low: float, high: float) -> float:
        draws.append((low, high))
        return 0.75

    assert backoff_delay(policy, 3, record) == 3.0
    assert backoff_delay(policy, 1, least_jitter) == 0.5
    assert draws == [(0.5, 1.0)]


def test_zero_backoff_means_no_wait() -> None:
    action = decide(RetryPolicy(backoff_s=0.0), 4, LinkBroken("x"), keyed=True, uniform=no_jitter)
    assert isinstance(action, Retry) and action.delay_s == 0.0


@pytest.mark.parametrize("kwargs", [{"attempts": 0}, {"backoff_s": -1.0}, {"max_backoff_s": -0.1}])
def test_a_policy_that_cannot_work_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("key", "naive", "how"),
    [
        (None, False, "retrying balance"),
        ("k-1", False, "retrying balance with the same idempotency key"),
        ("k-2", True, "retrying balance with a NEW key (naive)"),
    ],
)
def test_the_notice_tells_the_user_what_happens(key: str | None, naive: bool, how: str) -> None:
    policy = RetryPolicy(attempts=4, new_key_each_attempt=naive)
    retry = Retry(attempt=2, delay_s=0.25, new_key=naive, reason="link lost", reconnect=True)
    told = notice("balance", policy, retry, key)
    assert told == RetryNotice("balance", 2, 4, "link lost", key, not naive, 0.25)
    assert told.describe() == f"link lost; reconnecting and {how} (attempt 2 of 4) in 0.2 s"
