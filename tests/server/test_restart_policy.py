"""``RestartPolicy``: when a dead worker is restarted, how long after, and when to give up."""

from __future__ import annotations

import signal

import pytest

from socklab.server.workers import Decision, RestartPolicy, Verdict, describe_exit

KILLED = -signal.SIGKILL
BROKEN = 1


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def policy(clock: Clock) -> RestartPolicy:
    return RestartPolicy(
        now=clock,
        startup_s=2.0,
        base_delay_s=0.5,
        max_delay_s=10.0,
        stable_s=10.0,
        max_start_failures=5,
        window_s=60.0,
    )


def run_for(policy: RestartPolicy, clock: Clock, slot: int, seconds: float, code: int) -> Decision:
    policy.started(slot)
    clock.t += seconds
    return policy.exited(slot, code)


def test_a_worker_whose_services_stopped_by_themselves_finishes_the_server(
    policy: RestartPolicy, clock: Clock
) -> None:
    decision = run_for(policy, clock, 0, 0.1, 0)
    assert decision.verdict is Verdict.FINISH
    assert decision.cause == "exited with status 0"


def test_a_kill_right_after_the_start_is_a_crash_however_often_it_happens(
    policy: RestartPolicy, clock: Clock
) -> None:
    delays = []
    for _ in range(30):
        decision = run_for(policy, clock, 1, 0.01, KILLED)
        assert decision.verdict is Verdict.RESTART
        assert not decision.is_start_failure
        assert decision.start_failures == 0
        assert decision.cause == "killed by SIGKILL"
        delays.append(decision.delay_s)
        clock.t += decision.delay_s
    assert delays[:7] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]  # doubled, then capped
    assert set(delays[5:]) == {10.0}


def test_repeated_failures_at_start_give_up_at_the_limit(
    policy: RestartPolicy, clock: Clock
) -> None:
    verdicts = []
    for attempt in range(5):
        decision = run_for(policy, clock, attempt % 2, 0.2, BROKEN)  # both workers count
        assert decision.is_start_failure
        assert decision.start_failures == attempt + 1
        verdicts.append(decision.verdict)
        clock.t += decision.delay_s
    assert verdicts == [Verdict.RESTART] * 4 + [Verdict.GIVE_UP]
    assert decision.cause == "exited with status 1"


def test_failures_at_start_older_than_the_window_are_forgotten(
    policy: RestartPolicy, clock: Clock
) -> None:
    for _ in range(20):  # one failure at start every 15 s: at most 4 within any 60 s
        decision = run_for(policy, clock, 0, 0.5, BROKEN)
        assert decision.verdict is Verdict.RESTART
        assert decision.start_failures <= 4
        clock.t += 14.5


def test_kills_do_not_count_towards_giving_up(policy: RestartPolicy, clock: Clock) -> None:
    for _ in range(4):
        run_for(policy, clock, 0, 0.1, BROKEN)
    for _ in range(10):
        assert run_for(policy, clock, 1, 0.1, KILLED).verdict is Verdict.RESTART
    assert run_for(policy, clock, 0, 0.1, BROKEN).verdict is Verdict.GIVE_UP


def test_an_error_status_after_the_start_is_a_crash(policy: RestartPolicy, clock: Clock) -> None:
    for _ in range(10):
        decision = run_for(policy, clock, 0, 2.0, BROKEN)
        assert decision.verdict is Verdict.RESTART
        assert not decision.is_start_failure
        assert decision.start_failures == 0


def test_a_stable_run_starts_the_backoff_again(policy: RestartPolicy, clock: Clock) -> None:
    assert [run_for(policy, clock, 0, 0.1, KILLED).delay_s for _ in range(4)] == [
        0.5,
        1.0,
        2.0,
        4.0,
    ]
    assert run_for(policy, clock, 1, 0.1, KILLED).delay_s == 0.5  # each worker has its own
    assert run_for(policy, clock, 0, 9.9, KILLED).delay_s == 8.0
    assert run_for(policy, clock, 0, 10.0, KILLED).delay_s == 0.5
    assert run_for(policy, clock, 0, 0.1, KILLED).delay_s == 1.0


def test_the_lifetime_is_measured_on_the_injected_clock(
    policy: RestartPolicy, clock: Clock
) -> None:
    assert run_for(policy, clock, 0, 3.25, KILLED).lifetime_s == 3.25


def test_an_exit_of_a_worker_never_started_is_a_bug(policy: RestartPolicy) -> None:
    with pytest.raises(KeyError):
        policy.exited(7, 1)


def test_the_limit_must_allow_one_failure() -> None:
    with pytest.raises(ValueError, match="max_start_failures"):
        RestartPolicy(max_start_failures=0)


@pytest.mark.parametrize(
    ("exitcode", "words"),
    [
        (0, "exited with status 0"),
        (3, "exited with status 3"),
        (-signal.SIGTERM, "killed by SIGTERM"),
        (-signal.SIGSEGV, "killed by SIGSEGV"),
        (-200, "killed by signal 200"),
    ],
    ids=["clean", "error", "sigterm", "sigsegv", "unknown-signal"],
)
def test_exit_statuses_in_words(exitcode: int, words: str) -> None:
    assert describe_exit(exitcode) == words
