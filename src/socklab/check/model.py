"""What the conformance checker works with: cases (data), expectations, results.

A ``Case`` is plain data: its id (``lab/framing/3``: dialect, section, number), the handout
line it checks, the bytes to send (``Step``s) and what to expect (``Expect``), whether it is
required or only warns, and the ``kind`` of driver that plays it (a small fixed set, see
:mod:`socklab.check.driver`). A ``Result`` carries what was sent and what came back.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Any


class Verdict(enum.Enum):
    PASS = "pass"
    FAIL = "fail"
    WARN = "warning"
    SKIP = "skipped"


@dataclass(frozen=True, slots=True)
class Expect:
    """A reply the whole of which must match ``pattern`` (a regex on the decoded text).

    A reply matching ``warn_pattern`` instead is accepted with a warning (``warn_why``).
    """

    pattern: str
    shown: str
    warn_pattern: str | None = None
    warn_why: str = ""

    @classmethod
    def exactly(cls, text: str) -> Expect:
        return cls(re.escape(text), text)

    def matches(self, text: str) -> bool:
        return re.fullmatch(self.pattern, text, re.DOTALL) is not None

    def matches_warn(self, text: str) -> bool:
        return self.warn_pattern is not None and (
            re.fullmatch(self.warn_pattern, text, re.DOTALL) is not None
        )


@dataclass(frozen=True, slots=True)
class Step:
    """Send ``segments`` (each its own TCP segment, ``pause_s`` apart), then read a
    reply judged by ``expect`` (``None``: read nothing)."""

    segments: tuple[bytes, ...]
    expect: Expect | None
    pause_s: float = 0.02


@dataclass(frozen=True, slots=True)
class Case:
    id: str
    section: str
    title: str
    handout: str
    kind: str
    steps: tuple[Step, ...] = ()
    required: bool = True
    destructive: bool = False
    last: bool = False
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a driver found: the verdict and one line saying why."""

    verdict: Verdict
    detail: str


@dataclass(slots=True)
class Transcript:
    """Every byte string sent and received during one case, in order."""

    events: list[tuple[str, bytes]] = field(default_factory=list)

    def sent(self, data: bytes) -> None:
        self.events.append(("sent", data))

    def received(self, data: bytes) -> None:
        self.events.append(("received", data))


@dataclass(frozen=True, slots=True)
class Result:
    case: Case
    verdict: Verdict
    detail: str
    sent: tuple[bytes, ...]
    received: tuple[bytes, ...]
    duration_s: float

    @property
    def is_failure(self) -> bool:
        return self.verdict is Verdict.FAIL and self.case.required


def counts(results: list[Result]) -> dict[str, int]:
    """``{"pass": n, "fail": n, "warning": n, "skipped": n}`` over ``results``."""
    table = {verdict.value: 0 for verdict in Verdict}
    for result in results:
        table[result.verdict.value] += 1
    return table


def is_success(results: list[Result], *, strict: bool) -> bool:
    """True when every required case passed (and, under ``strict``, nothing warned)."""
    for result in results:
        if result.verdict is Verdict.FAIL and (result.case.required or strict):
            return False
        if strict and result.verdict is Verdict.WARN:
            return False
    return True
