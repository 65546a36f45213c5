"""Scripted conversations whose next message depends on the last reply: the handout's ATM
protocol (seed 003, Problem B) and seed 000's one-object exchange.

The ATM round, as the handout's client plays it: ``ID+PIN`` (a login; the reply is the
welcome menu or ``Invalid ID or Password``), ``ID+PIN+choice`` (``1`` balance, ``2``
deposit, ``3`` withdraw), and for 2 and 3, after the amount prompt, ``ID+PIN+amount``.
Each message is a lab frame. Balances are read as decimals (the handout prints integers,
socklab prints cents).
"""

from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from socklab.check.driver import PROBE_LOOK_S, CaseFailed, Conn, Target, no_reply, short_text, worst
from socklab.check.model import Case, Outcome, Transcript, Verdict
from socklab.wire.framing import encode_lab_frame

NUMBER = r"(-?\d+(?:\.\d+)?)"
MENU = r"Welcome (.+)!\n1\. Check Balance\n2\. Deposit\n3\. Withdraw\n4\. Exit\n"
INVALID = r"Invalid ID or Password\n(?:.*\n)?"
STATS = rf"Total transactions: (\d+)\nSuccess rate: {NUMBER}\nError rate: {NUMBER}\n"
BALANCE = rf"Your balance is {NUMBER}\n" + STATS
DONE = rf"Your balance is {NUMBER}\nSuccessful transactions: (\d+)\n" + STATS
FAILED = (
    rf"Transaction failed(?:: [^\n]*)?\nYour balance is {NUMBER}\n(?:Please try again\n)?" + STATS
)
PROMPT = r"Enter amount to (deposit|withdraw): "
SHAPES = (MENU, INVALID, BALANCE, DONE, FAILED, PROMPT)
MOVE_ATTEMPTS = 5
"""The handout's server fails a transaction at random; a move is tried this many times."""


def _complete(raw: bytes) -> bool:
    text = raw.decode("utf-8", errors="replace")
    return any(re.fullmatch(shape, text) for shape in SHAPES)


def _decimal(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation as exc:
        raise CaseFailed(f"not a number: {text!r}") from exc


class Atm:
    """The handout's ATM client, one round at a time, on lab frames."""

    def __init__(self, target: Target, transcript: Transcript) -> None:
        self.target = target
        self.transcript = transcript
        self.prefix = f"{target.account}{target.pin}"

    async def ask(self, conn: Conn, payload: str, shape: str, what: str) -> re.Match[str]:
        """Send ``payload``; the reply must be ``shape``; raises ``CaseFailed`` if not."""
        await conn.send((encode_lab_frame(payload.encode("utf-8")),))
        raw = await conn.read_reply(_complete)
        text = raw.decode("utf-8", errors="replace")
        found = re.fullmatch(shape, text)
        if found is None:
            got = (
                f"got '{short_text(text)}'"
                if raw
                else ("the server closed the connection" if conn.eof else "no reply")
            )
            raise CaseFailed(f"{what}: {got}")
        return found

    async def login(self, conn: Conn) -> None:
        await self.ask(conn, self.prefix, MENU, "login")

    async def balance(self) -> tuple[Decimal, re.Match[str]]:
        conn = await Conn.open(self.target, self.transcript)
        try:
            await self.login(conn)
            found = await self.ask(conn, self.prefix + "1", BALANCE, "balance")
        finally:
            await conn.close()
        return _decimal(found.group(1)), found

    async def move(self, choice: str, amount: int) -> tuple[str, re.Match[str]]:
        """One deposit (``2``) or withdrawal (``3``): ``("done" | "failed", reply)``."""
        conn = await Conn.open(self.target, self.transcript)
        try:
            await self.login(conn)
            await self.ask(conn, self.prefix + choice, PROMPT, "amount prompt")
            found = await self.ask(
                conn, self.prefix + str(amount), f"{DONE}|{FAILED}", "transaction reply"
            )
        finally:
            await conn.close()
        return ("done" if found.group(1) is not None else "failed"), found

    async def move_until_done(self, choice: str, amount: int) -> re.Match[str]:
        """Retry a move the server failed (the handout's random failures), as a user would."""
        for _ in range(MOVE_ATTEMPTS):
            status, found = await self.move(choice, amount)
            if status == "done":
                return found
        raise CaseFailed(f"the server failed the transaction {MOVE_ATTEMPTS} times in a row")


def _stats_consistent(
    total: int, success_rate: str, error_rate: str, successful: int | None
) -> str:
    """ "" if the statistics agree with each other, else what is wrong."""
    success, error = float(success_rate), float(error_rate)
    if total < 1:
        return f"total transactions {total} after a transaction"
    if abs(success + error - 1) > 0.011:
        return f"success rate {success_rate} + error rate {error_rate} is not 1"
    if successful is not None:
        if successful > total:
            return f"{successful} successful of {total} total"
        if abs(successful / total - success) > 0.006:
            return f"success rate {success_rate} is not {successful}/{total}"
    return ""


async def _bank(target: Target, case: Case, transcript: Transcript) -> Outcome:
    atm = Atm(target, transcript)
    scenario = case.params["scenario"]
    if scenario == "login_ok":
        conn = await Conn.open(target, transcript)
        try:
            await atm.login(conn)
        finally:
            await conn.close()
        return Outcome(Verdict.PASS, "")
    if scenario == "login_bad":
        wrong = "0000" if target.pin != "0000" else "1111"
        conn = await Conn.open(target, transcript)
        try:
            await atm.ask(conn, f"{target.account}{wrong}", INVALID, "wrong PIN")
        finally:
            await conn.close()
        return Outcome(Verdict.PASS, "")
    if scenario == "balance":
        balance, _ = await atm.balance()
        return Outcome(Verdict.PASS, f"balance {balance}")
    if scenario == "move":
        before, _ = await atm.balance()
        amount = int(case.params["amount"])
        sign = 1 if case.params["choice"] == "2" else -1
        found = await atm.move_until_done(case.params["choice"], amount)
        after = _decimal(found.group(1))
        if after != before + sign * amount:
            return Outcome(
                Verdict.FAIL, f"balance {before} became {after}, not {before + sign * amount}"
            )
        return Outcome(Verdict.PASS, f"balance {before} -> {after}")
    if scenario == "overdraw":
        before, _ = await atm.balance()
        amount = int(before) + 1000
        status, found = await atm.move("3", amount)
        shown = _decimal(found.group(1) if status == "done" else found.group(6))
        if status == "done" or shown < 0:
            return Outcome(Verdict.FAIL, f"withdrawing {amount} of {before} left {shown}")
        if shown != before:
            return Outcome(Verdict.FAIL, f"a refused withdrawal changed {before} to {shown}")
        return Outcome(Verdict.PASS, f"refused; balance stays {shown}")
    if scenario == "stats":
        _, read = await atm.balance()
        wrong = _stats_consistent(int(read.group(2)), read.group(3), read.group(4), None)
        if wrong:
            return Outcome(Verdict.FAIL, f"balance reply: {wrong}")
        done = await atm.move_until_done("2", 1)
        wrong = _stats_consistent(
            int(done.group(3)), done.group(4), done.group(5), int(done.group(2))
        )
        if wrong:
            return Outcome(Verdict.FAIL, f"deposit reply: {wrong}")
        return Outcome(Verdict.PASS, "")
    if scenario == "retry":
        return await _retry(target, atm, int(case.params["amount"]), transcript)
    if scenario == "malformed":
        conn = await Conn.open(target, transcript)
        try:
            await conn.send((b"abc".ljust(64) + b"abc",))
            await conn.read_reply(lambda raw: False, PROBE_LOOK_S)
        finally:
            await conn.close()
        conn = await Conn.open(target, transcript)
        try:
            await atm.login(conn)
        except CaseFailed as exc:
            return Outcome(Verdict.FAIL, f"the next client: {exc.outcome.detail}")
        finally:
            await conn.close()
        return Outcome(Verdict.PASS, "survived")
    raise ValueError(f"unknown bank scenario {scenario!r}")


async def _retry(target: Target, atm: Atm, amount: int, transcript: Transcript) -> Outcome:
    """Problem B: deposit, drop the connection before the reply, retry as a naive client."""
    before, _ = await atm.balance()
    conn = await Conn.open(target, transcript)
    try:
        await atm.login(conn)
        await atm.ask(conn, atm.prefix + "2", PROMPT, "amount prompt")
        await conn.send((encode_lab_frame((atm.prefix + str(amount)).encode("utf-8")),))
    finally:
        await conn.close()  # the reply is lost: the client never reads it
    await atm.move_until_done("2", amount)
    after, _ = await atm.balance()
    applied = after - before
    if applied == amount:
        return Outcome(Verdict.PASS, f"applied once ({before} -> {after})")
    if applied == 2 * amount:
        return Outcome(
            Verdict.WARN,
            f"applied twice ({before} -> {after}): the lab protocol carries no request id, so "
            "the server cannot tell a retry from a new deposit",
        )
    return Outcome(Verdict.FAIL, f"balance moved by {applied}, not {amount} or {2 * amount}")


# -- seed 000 ---------------------------------------------------------------------------------


def _object_complete(raw: bytes) -> bool:
    try:
        return isinstance(json.loads(raw.decode("utf-8")), dict)
    except ValueError:
        return False


async def _one_exchange(
    target: Target, transcript: Transcript, number: int
) -> tuple[Outcome, Conn]:
    conn = await Conn.open(target, transcript)
    body = {"client_name": "socklab check", "client_number": number}
    await conn.send((json.dumps(body).encode("utf-8"),))
    raw = await conn.read_reply(_object_complete)
    return _judge_exchange(raw, conn, number), conn


def _judge_exchange(raw: bytes, conn: Conn, number: int) -> Outcome:
    if not raw:
        why = "the server closed the connection" if conn.eof else no_reply(conn.target)
        return Outcome(Verdict.FAIL, why)
    try:
        reply: Any = json.loads(raw.decode("utf-8"))
    except ValueError:
        return Outcome(
            Verdict.FAIL, f"not one JSON object: '{short_text(raw.decode('utf-8', 'replace'))}'"
        )
    if not isinstance(reply, dict):
        return Outcome(Verdict.FAIL, "the reply is not a JSON object")
    name, server_number = reply.get("server_name"), reply.get("server_number")
    if not isinstance(name, str):
        return Outcome(Verdict.FAIL, f"server_name is {name!r}, not a string")
    if not isinstance(server_number, int) or isinstance(server_number, bool):
        return Outcome(Verdict.FAIL, f"server_number is {server_number!r}, not an integer")
    if not 1 <= server_number <= 100:
        return Outcome(Verdict.FAIL, f"server_number {server_number} is not in 1..100")
    if "sum" in reply and reply["sum"] != number + server_number:
        return Outcome(Verdict.FAIL, f"sum {reply['sum']!r} is not {number} + {server_number}")
    return Outcome(Verdict.PASS, "")


async def _exchange_orig(target: Target, case: Case, transcript: Transcript) -> Outcome:
    scenario = case.params["scenario"]
    if scenario == "fields":
        outcome, conn = await _one_exchange(target, transcript, 25)
        await conn.close()
        return outcome
    if scenario == "range":
        outcomes = []
        for number in (1, 100, 50, 2, 99, 37, 64, 10, 90, 25):
            outcome, conn = await _one_exchange(target, transcript, number)
            await conn.close()
            outcomes.append(outcome)
        return worst(outcomes)
    if scenario == "concurrent":
        pairs = await asyncio_gather_exchanges(target, transcript, 50)
        failed = [o for o in pairs if o.verdict is Verdict.FAIL]
        if failed:
            return Outcome(Verdict.FAIL, f"{len(failed)} of 50 failed; first: {failed[0].detail}")
        return Outcome(Verdict.PASS, "")
    if scenario == "malformed":
        conn = await Conn.open(target, transcript)
        try:
            await conn.send((b"{not json}",))
            conn.writer.write_eof()
            await conn.read_reply(lambda raw: False, PROBE_LOOK_S)
        finally:
            await conn.close()
        outcome, conn = await _one_exchange(target, transcript, 25)
        await conn.close()
        if outcome.verdict is Verdict.FAIL:
            return Outcome(Verdict.FAIL, f"the next client: {outcome.detail}")
        return Outcome(Verdict.PASS, "survived")
    if scenario == "terminate":
        conn = await Conn.open(target, transcript)
        try:
            await conn.send(
                (json.dumps({"client_name": "socklab check", "client_number": 0}).encode(),)
            )
            await conn.wait_closed_by_peer()
        finally:
            await conn.close()
        return await _refuses(target)
    raise ValueError(f"unknown exchange scenario {scenario!r}")


async def asyncio_gather_exchanges(target: Target, transcript: Transcript, n: int) -> list[Outcome]:
    import asyncio

    async def one(index: int) -> Outcome:
        outcome, conn = await _one_exchange(target, transcript, 1 + index % 100)
        await conn.close()
        return outcome

    settled = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
    return [s if isinstance(s, Outcome) else Outcome(Verdict.FAIL, str(s)) for s in settled]


async def _refuses(target: Target) -> Outcome:
    """Pass once a new connection is refused (the server has terminated)."""
    import asyncio
    import time

    deadline = time.monotonic() + target.timeout_s
    while time.monotonic() < deadline:
        try:
            async with asyncio.timeout(max(0.01, deadline - time.monotonic())):
                _, writer = await asyncio.open_connection(target.host, target.port)
        except (OSError, TimeoutError):
            return Outcome(Verdict.PASS, "the server stopped accepting connections")
        writer.close()
        await asyncio.sleep(0.05)
    return Outcome(
        Verdict.FAIL, f"the server still accepts connections after {target.timeout_s:g} s"
    )


SCENARIO_KINDS = {"bank": _bank, "exchange_orig": _exchange_orig}
