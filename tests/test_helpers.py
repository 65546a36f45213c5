"""The test helpers that bound teardown: a stuck task must fail a test, not hang the suite."""

from __future__ import annotations

import asyncio

import pytest

from helpers import bounded_runner


async def ignore_cancellation(ticks: list[int]) -> None:
    """A task that never ends: like a pool worker retrying against a database that went away."""
    while True:
        try:
            await asyncio.sleep(0.01)
            ticks.append(1)
        except asyncio.CancelledError:  # swallowed: the point of this task
            ticks.append(-1)


def test_a_task_that_ignores_cancellation_fails_teardown_instead_of_hanging() -> None:
    ticks: list[int] = []

    async def start() -> None:
        asyncio.get_running_loop().create_task(ignore_cancellation(ticks))
        await asyncio.sleep(0)  # it starts, and waits inside its try

    with (
        pytest.raises(AssertionError, match=r"1 task\(s\) ignored cancellation for 0.2 s"),
        bounded_runner(timeout_s=0.2) as runner,
    ):
        runner.run(start())
    assert -1 in ticks  # it was cancelled, and carried on
    assert runner.get_loop().is_closed()


def test_tasks_that_finish_when_cancelled_close_quietly() -> None:
    cancelled = []

    async def polite() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    with bounded_runner(timeout_s=5) as runner:

        async def start() -> None:
            asyncio.get_running_loop().create_task(polite())
            await asyncio.sleep(0)

        runner.run(start())
    assert cancelled == [True]
