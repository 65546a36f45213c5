"""Scenarios: the replies they expect are the ones the services really give."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from helpers import running_server
from socklab.bench.runner import BenchSettings, run_bench
from socklab.bench.scenarios import (
    SCENARIOS,
    NumbersScenario,
    Probe,
    ScenarioError,
    ScenarioOptions,
    TextScenario,
    big_numbers,
    is_palindrome,
    json_probe,
    make_scenario,
    reply_fields,
)
from socklab.protocol.bank import BankStats, Moved
from socklab.services.base import ConnectionInfo, Session
from socklab.services.numbers import NumbersService
from socklab.services.primality import is_prime, quick_verdict
from socklab.services.text import TextService
from socklab.wire.framing import Dialect, encode_json

INFO = ConnectionInfo(peer="test")


def probes(scenario: Any, dialect: Dialect, count: int) -> list[Probe]:
    source = scenario.source(dialect, 0)
    return [source.next() for _ in range(count)]


def lab_payload(probe: Probe) -> str:
    return probe.request[64:].decode()


def json_reply(session: Session, probe: Probe, request_id: int = 7) -> bytes:
    """What the server would send: the runtime's encoding of the session's answer."""
    request = json.loads(b'{"id":%d,%b' % (request_id, probe.request))
    result = session.handle_json(request)
    assert isinstance(result, dict)
    return encode_json({"id": request_id, "ok": True, **result})


@pytest.mark.parametrize(
    ("scenario", "session"),
    [
        (TextScenario(), TextService().open_session(INFO)),
        (NumbersScenario(), NumbersService().open_session(INFO)),
        (NumbersScenario(ScenarioOptions(digits=300)), NumbersService().open_session(INFO)),
    ],
    ids=["text", "numbers", "numbers-300-digits"],
)
def test_predicted_replies_are_the_services_bytes(scenario: Any, session: Session) -> None:
    """The fast path (bytes compared with ==) must hold for the real services."""
    for probe in probes(scenario, Dialect.LAB, 20):
        assert session.handle_lab(lab_payload(probe)).encode() == probe.reply  # type: ignore[union-attr]
    for probe in probes(scenario, Dialect.LINE, 20):
        reply = session.handle_line(probe.request[:-1].decode())
        assert isinstance(reply, str)
        assert (reply + "\n").encode() == probe.reply
    for probe in probes(scenario, Dialect.JSON, 20):
        assert probe.reply is not None
        assert json_reply(session, probe) == b'{"id":7,' + probe.reply


def test_sources_cycle_from_different_starts() -> None:
    scenario = TextScenario()
    first = [p.request for p in probes(scenario, Dialect.LINE, 3)]
    other = scenario.source(Dialect.LINE, 1)
    assert other.next().request == first[1]


def test_big_numbers_have_the_digits_asked_for() -> None:
    numbers = big_numbers(1000, seed=3)
    assert all(len(str(n)) == 1000 for n in numbers)
    assert any(is_palindrome(n) for n in numbers)
    assert big_numbers(1000, seed=3) == numbers
    hard = big_numbers(60, seed=3, kind="hard")
    assert all(len(str(n)) == 60 and not is_prime(n) for n in hard)
    assert all(quick_verdict(n) is None for n in hard)  # the server must run a real test
    easy = big_numbers(61, seed=3, kind="easy")
    assert all(quick_verdict(n) is False for n in easy)
    assert all(len(str(n)) == 3 for n in big_numbers(3, seed=3))  # mixed: easy when short
    with pytest.raises(ScenarioError, match="at least 3"):
        big_numbers(2, seed=1)
    with pytest.raises(ScenarioError, match="at least 30"):
        big_numbers(20, seed=1, kind="hard")
    with pytest.raises(ScenarioError, match="kind"):
        big_numbers(100, seed=1, kind="primes")


def test_big_numbers_travel_as_json_strings() -> None:
    probe = NumbersScenario(ScenarioOptions(digits=5000)).source(Dialect.JSON, 0).next()
    body = json.loads(b"{" + probe.request)
    assert isinstance(body["number"], str) and len(body["number"]) == 5000


def test_json_probe_leaves_the_id_to_the_connection() -> None:
    with pytest.raises(ScenarioError, match="numbers the requests"):
        json_probe({"op": "convert", "id": 1}, None)
    probe = json_probe({"op": "convert", "text": "a"}, {"lower": "a", "upper": "A"})
    assert probe.reply == b'"ok":true,"lower":"a","upper":"A"}\n'
    assert reply_fields(probe) == {"lower": "a", "upper": "A"}
    assert reply_fields(json_probe({"op": "x"}, None)) == {}


def test_unknown_scenario_and_unspoken_dialect() -> None:
    with pytest.raises(ScenarioError, match="no benchmark scenario"):
        make_scenario("teleport")
    with pytest.raises(ScenarioError, match="not lab"):
        make_scenario("exchange").source(Dialect.LAB, 0)
    with pytest.raises(ScenarioError, match="not line"):
        make_scenario("bank").source(Dialect.LINE, 0)
    assert set(SCENARIOS) == {"text", "numbers", "exchange", "bank"}


def test_exchange_judged_by_meaning() -> None:
    scenario = make_scenario("exchange")
    probe = scenario.source(Dialect.JSON, 4).next()
    number = json.loads(b"{" + probe.request)["client_number"]
    assert probe.accept is not None
    good = {"server_name": "S", "server_number": 10, "client_number": number, "sum": number + 10}
    assert probe.accept(good)
    assert not probe.accept({**good, "sum": number + 11})
    assert not probe.accept({**good, "server_number": 101, "sum": number + 101})
    line = scenario.source(Dialect.LINE, 4).next()
    assert line.accept is not None
    text = (
        f"Client Name: bench-4 | Server Name: S | Client Number: {number} | "
        f"Server Number: 10 | Sum: {number + 10}"
    )
    assert line.accept(text)
    assert not line.accept(text.replace("bench-4", "bench-5"))


def test_bank_keyed_deposits_against_the_real_bank(tmp_path: Path) -> None:
    from socklab.services.bank import BankService

    service = BankService(f"sqlite:///{tmp_path / 'bank.db'}")
    with running_server(service) as server:
        result = run_bench(
            BenchSettings(
                service="bank",
                port=server.port,
                connections=3,
                pipeline=2,
                duration_s=0.4,
                warmup_s=0.1,
            )
        )
    assert result.errors == {}
    assert result.requests > 0


def test_bank_deposit_requests_carry_fresh_keys() -> None:
    source = make_scenario("bank", ScenarioOptions(extra={"account": "2"})).source(Dialect.JSON, 0)
    login = json.loads(b"{" + source.setup[0].request)
    assert login == {"op": "login", "account": 2, "pin": "1234"}
    first, second = source.next(), source.next()
    one = json.loads(b"{" + first.request)
    two = json.loads(b"{" + second.request)
    assert one["op"] == "deposit" and one["amount"] == "1.00"
    assert one["key"] != two["key"]
    assert first.accept is not None
    moved = Moved("deposit", 2, 1_00, 5_00, one["key"], 9, False, BankStats(1, 1, 0))
    reply = moved.to_json()
    assert first.accept(reply)
    assert not first.accept({**reply, "replayed": True})
    assert not first.accept({**reply, "key": two["key"]})
    assert not first.accept({**reply, "amount": "2.00"})
    assert not first.accept({**reply, "account": 3})
    assert not first.accept({k: v for k, v in reply.items() if k != "stats"})
    with pytest.raises(ScenarioError, match="account number"):
        make_scenario("bank", ScenarioOptions(extra={"account": "x"})).source(Dialect.JSON, 0)
