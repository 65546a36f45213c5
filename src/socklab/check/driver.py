"""The driver: plays each case against a server over real TCP and judges what comes back.

How this works: every case runs on fresh connections, one case at a time, in table order
(cases marked ``last`` after the others, destructive ones only when allowed and at the
very end). Each wait (a reply, a close, a connection) is bounded by ``timeout_s``; the
whole case by a multiple of it. The lab's replies carry no framing, so a reply is taken
as complete when it matches what the case expects (or a known reply shape), when the
server closes, or when no byte has come for ``settle_s`` after the first one; json and
line replies end at a newline. A reply in json or line form is turned into the lab's text
form before it is judged, so one table of cases serves every dialect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from socklab.check.model import Case, Expect, Outcome, Result, Step, Transcript, Verdict
from socklab.errors import PeerProtocolError
from socklab.logs import fn
from socklab.wire.framing import decode_json_object, escape_bytes

log = logging.getLogger(__name__)

PROBE_LOOK_S = 1.0
"""How long a robustness case waits to show what the server answered to the bad input."""


class CaseFailed(Exception):
    """A case cannot go on: its outcome is ``outcome``."""

    def __init__(self, detail: str, verdict: Verdict = Verdict.FAIL) -> None:
        super().__init__(detail)
        self.outcome = Outcome(verdict, detail)


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    port: int
    service: str
    dialect: str
    timeout_s: float = 3.0
    settle_s: float = 0.5
    account: int = 1
    pin: str = "1234"


class Conn:
    """One TCP connection of a case; every byte goes through the case's transcript."""

    def __init__(
        self,
        target: Target,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        transcript: Transcript,
    ) -> None:
        self.target = target
        self.reader = reader
        self.writer = writer
        self.transcript = transcript
        self.eof = False

    @classmethod
    async def open(cls, target: Target, transcript: Transcript) -> Conn:
        """Connect; raises ``CaseFailed`` if the server cannot be reached in time."""
        try:
            async with asyncio.timeout(target.timeout_s):
                reader, writer = await asyncio.open_connection(target.host, target.port)
        except (OSError, TimeoutError) as exc:
            raise CaseFailed(f"cannot connect to {target.host}:{target.port}: {exc}") from exc
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(target, reader, writer, transcript)

    async def send(self, segments: tuple[bytes, ...], pause_s: float = 0.02) -> None:
        """Send each segment on its own, ``pause_s`` apart (so that they leave as separate
        TCP segments); raises ``CaseFailed`` if the server has gone."""
        for index, segment in enumerate(segments):
            if index:
                await asyncio.sleep(pause_s)
            self.transcript.sent(segment)
            try:
                self.writer.write(segment)
                await self.writer.drain()
            except OSError as exc:
                raise CaseFailed(f"the server closed the connection while we sent: {exc}") from exc

    async def read_reply(
        self, complete: Callable[[bytes], bool], limit_s: float | None = None
    ) -> bytes:
        """Bytes until ``complete`` holds, the server closes, or they stop coming.

        Waits at most ``limit_s`` (default: the case's timeout) for the reply.
        """
        buffer = bytearray()
        deadline = time.monotonic() + (self.target.timeout_s if limit_s is None else limit_s)
        while not complete(bytes(buffer)) and not self.eof:
            wait_s = deadline - time.monotonic()
            if buffer:
                wait_s = min(wait_s, self.target.settle_s)
            if wait_s <= 0:
                break
            try:
                chunk = await asyncio.wait_for(self.reader.read(65536), wait_s)
            except TimeoutError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                self.eof = True
            else:
                self.transcript.received(chunk)
                buffer += chunk
        return bytes(buffer)

    async def wait_closed_by_peer(self) -> bool:
        """True if the server closes the connection within the timeout."""
        deadline = time.monotonic() + self.target.timeout_s
        while not self.eof:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                chunk = await asyncio.wait_for(self.reader.read(65536), remaining)
            except TimeoutError:
                return False
            except OSError:
                chunk = b""
            if chunk:
                self.transcript.received(chunk)
            else:
                self.eof = True
        return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(self.target.timeout_s):
                await self.writer.wait_closed()


# -- replies in the lab's text form -----------------------------------------------------------


def lab_form(target: Target, raw: bytes) -> str:
    """``raw`` as the lab's text: json and line replies are converted, one per line."""
    text = raw.decode("utf-8", errors="replace")
    if target.dialect == "line":
        return text[:-1] if text.endswith("\n") else text
    if target.dialect != "json":
        return text
    forms = []
    for line in raw.splitlines():
        try:
            reply = decode_json_object(line)
        except PeerProtocolError:
            forms.append(line.decode("utf-8", errors="replace"))
            continue
        if reply.get("ok") is not True:
            forms.append(f"error {reply.get('error')}")
        elif target.service == "text":
            forms.append(f"[Lower Case] {reply.get('lower')} [Upper Case] {reply.get('upper')}")
        else:
            forms.append(f"[Prime] {reply.get('prime')} [Palindrome] {reply.get('palindrome')}")
    return "\n".join(forms)


def _completion(target: Target, expect: Expect | None) -> Callable[[bytes], bool]:
    if target.dialect in ("json", "line"):
        return lambda raw: raw.endswith(b"\n")

    def complete(raw: bytes) -> bool:
        text = raw.decode("utf-8", errors="replace")
        return expect is not None and (expect.matches(text) or expect.matches_warn(text))

    return complete


def judge(target: Target, expect: Expect, raw: bytes, conn: Conn) -> Outcome:
    """Compare one reply with ``expect``."""
    if not raw:
        why = "the server closed the connection" if conn.eof else no_reply(target)
        return Outcome(Verdict.FAIL, f"{why} (expected '{expect.shown}')")
    text = lab_form(target, raw)
    if expect.matches(text):
        return Outcome(Verdict.PASS, "")
    if expect.matches_warn(text):
        return Outcome(Verdict.WARN, f"{expect.warn_why}: got '{short_text(text)}'")
    return Outcome(Verdict.FAIL, f"expected '{short_text(expect.shown)}', got '{short_text(text)}'")


def no_reply(target: Target) -> str:
    return f"no reply within {target.timeout_s:g} s"


def short_text(text: str, limit: int = 120) -> str:
    shown = text.encode("unicode_escape").decode("ascii")
    return shown if len(shown) <= limit else shown[:limit] + "..."


async def play_step(target: Target, conn: Conn, step: Step) -> Outcome:
    await conn.send(step.segments, step.pause_s)
    if step.expect is None:
        return Outcome(Verdict.PASS, "")
    raw = await conn.read_reply(_completion(target, step.expect))
    return judge(target, step.expect, raw, conn)


def worst(outcomes: list[Outcome]) -> Outcome:
    """The first failure, else the first warning, else a pass."""
    for verdict in (Verdict.FAIL, Verdict.WARN):
        for outcome in outcomes:
            if outcome.verdict is verdict:
                return outcome
    return Outcome(Verdict.PASS, "")


async def play_steps(target: Target, steps: tuple[Step, ...], transcript: Transcript) -> Outcome:
    """All ``steps`` on one fresh connection; stops at the first failure."""
    conn = await Conn.open(target, transcript)
    outcomes: list[Outcome] = []
    try:
        for index, step in enumerate(steps):
            outcome = await play_step(target, conn, step)
            if outcome.verdict is Verdict.FAIL and len(steps) > 1:
                outcome = Outcome(outcome.verdict, f"message {index + 1}: {outcome.detail}")
            outcomes.append(outcome)
            if outcome.verdict is Verdict.FAIL:
                break
    finally:
        await conn.close()
    return worst(outcomes)


# -- the kinds of case ------------------------------------------------------------------------


async def _exchange(target: Target, case: Case, transcript: Transcript) -> Outcome:
    return await play_steps(target, case.steps, transcript)


async def _each(target: Target, case: Case, transcript: Transcript) -> Outcome:
    outcomes = [await play_steps(target, (step,), transcript) for step in case.steps]
    return worst(outcomes)


async def _disconnect(target: Target, case: Case, transcript: Transcript) -> Outcome:
    conn = await Conn.open(target, transcript)
    try:
        await conn.send(case.steps[0].segments)
        if not await conn.wait_closed_by_peer():
            return Outcome(
                Verdict.FAIL, f"the connection is still open after {target.timeout_s:g} s"
            )
    finally:
        await conn.close()
    return Outcome(Verdict.PASS, "the server closed the connection")


async def _abort(target: Target, case: Case, transcript: Transcript) -> Outcome:
    """A connection open before, one closing mid-message, then both old and new answered."""
    before = await Conn.open(target, transcript)
    try:
        first = await play_step(target, before, case.steps[0])
        if first.verdict is Verdict.FAIL:
            return Outcome(Verdict.FAIL, f"before the abort: {first.detail}")
        aborting = await Conn.open(target, transcript)
        await aborting.send((case.params["probe"],))
        await aborting.close()
        again = await play_step(target, before, case.steps[0])
        if again.verdict is Verdict.FAIL:
            return Outcome(Verdict.FAIL, f"a connection opened before the abort: {again.detail}")
    finally:
        await before.close()
    after = await play_steps(target, case.steps, transcript)
    if after.verdict is Verdict.FAIL:
        return Outcome(Verdict.FAIL, f"a new connection after the abort: {after.detail}")
    return worst([first, again, after])


async def _concurrent(target: Target, case: Case, transcript: Transcript) -> Outcome:
    opened = await asyncio.gather(
        *(Conn.open(target, transcript) for _ in case.steps), return_exceptions=True
    )
    conns = [conn for conn in opened if isinstance(conn, Conn)]
    if len(conns) < len(opened):
        await asyncio.gather(*(conn.close() for conn in conns))
        refused = next(exc for exc in opened if not isinstance(exc, Conn))
        return Outcome(
            Verdict.FAIL,
            f"{len(opened) - len(conns)} of {len(opened)} clients could not connect: {refused}",
        )
    try:
        outcomes = await asyncio.gather(
            *(play_step(target, conn, step) for conn, step in zip(conns, case.steps, strict=True)),
            return_exceptions=True,
        )
    finally:
        await asyncio.gather(*(conn.close() for conn in conns))
    settled = [o if isinstance(o, Outcome) else Outcome(Verdict.FAIL, str(o)) for o in outcomes]
    failed = [o for o in settled if o.verdict is Verdict.FAIL]
    if failed:
        return Outcome(
            Verdict.FAIL,
            f"{len(failed)} of {len(settled)} clients failed; first: {failed[0].detail}",
        )
    return worst(settled)


async def _stall(target: Target, case: Case, transcript: Transcript) -> Outcome:
    stalled = await Conn.open(target, transcript)
    try:
        await stalled.send((case.params["probe"],))
        outcome = await play_steps(target, case.steps, transcript)
    finally:
        await stalled.close()
    if outcome.verdict is Verdict.FAIL:
        return Outcome(Verdict.FAIL, f"while another client stalled: {outcome.detail}")
    return outcome


async def _survive(target: Target, case: Case, transcript: Transcript) -> Outcome:
    probe = await Conn.open(target, transcript)
    try:
        await probe.send((case.params["probe"],))
        # what it answers is shown, not judged: a short look is enough
        answer = await probe.read_reply(lambda raw: False, PROBE_LOOK_S)
    except CaseFailed:
        answer = b""
    finally:
        await probe.close()
    outcome = await play_steps(target, case.steps, transcript)
    if outcome.verdict is Verdict.FAIL:
        return Outcome(Verdict.FAIL, f"the next client: {outcome.detail}")
    said = f"answered '{short_text(lab_form(target, answer), 60)}'" if answer else "no answer"
    return Outcome(outcome.verdict, outcome.detail or f"survived ({said})")


KINDS = {
    "exchange": _exchange,
    "each": _each,
    "disconnect": _disconnect,
    "abort": _abort,
    "concurrent": _concurrent,
    "stall": _stall,
    "survive": _survive,
}


async def run_case(target: Target, case: Case) -> Result:
    """Play one case; never raises for anything the server does."""
    from socklab.check.scenarios import SCENARIO_KINDS

    transcript = Transcript()
    play = KINDS.get(case.kind) or SCENARIO_KINDS[case.kind]
    started = time.monotonic()
    bound_s = target.timeout_s * (10 + len(case.steps))
    try:
        async with asyncio.timeout(bound_s):
            outcome = await play(target, case, transcript)
    except CaseFailed as exc:
        outcome = exc.outcome
    except TimeoutError:
        outcome = Outcome(Verdict.FAIL, f"the case did not finish within {bound_s:g} s")
    except OSError as exc:
        outcome = Outcome(Verdict.FAIL, f"connection error: {exc}")
    if outcome.verdict is Verdict.FAIL and not case.required:
        outcome = Outcome(Verdict.WARN, outcome.detail)
    log.debug("%s: %s %s", case.id, outcome.verdict.value, outcome.detail, extra=fn("run_case"))
    pin = target.pin.encode("ascii")
    return Result(
        case=case,
        verdict=outcome.verdict,
        detail=outcome.detail,
        # reports end up in CI artifacts: the PIN never appears in them
        sent=tuple(
            data.replace(pin, b"****") if target.service == "bank" else data
            for way, data in transcript.events
            if way == "sent"
        ),
        received=tuple(data for way, data in transcript.events if way == "received"),
        duration_s=time.monotonic() - started,
    )


def order(cases: list[Case]) -> list[Case]:
    """Table order, with ``last`` cases after the others and destructive ones at the end."""
    return sorted(cases, key=lambda case: (case.destructive, case.last))


async def run_cases(
    target: Target, cases: list[Case], *, allow_terminate: bool = False
) -> list[Result]:
    """Play ``cases`` one after another; a destructive case is skipped unless allowed."""
    results = []
    for case in order(cases):
        if case.destructive and not allow_terminate:
            results.append(
                Result(case, Verdict.SKIP, "destructive: run with --allow-terminate", (), (), 0.0)
            )
            continue
        results.append(await run_case(target, case))
    return results


def shown_bytes(chunks: tuple[bytes, ...], limit: int = 200) -> str:
    """Bytes for a report: escaped, cut after ``limit`` bytes."""
    return escape_bytes(b"".join(chunks), limit)
