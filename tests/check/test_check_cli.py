"""``socklab check`` options: case selection, reports (table, JSON, JUnit), exit status."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import click
import pytest
from handout_servers import handout_server

from socklab.check.cases import select, suite
from socklab.cli.check import parse_address
from socklab.cli.main import main


def test_addresses() -> None:
    assert parse_address("5050") == ("127.0.0.1", 5050)
    assert parse_address("lab.example:8000") == ("lab.example", 8000)
    assert parse_address("[::1]:5051") == ("::1", 5051)
    for bad in ("x", "host:", "host:70000", "host:0"):
        with pytest.raises(click.BadParameter):
            parse_address(bad)


def test_case_ids_select_one_case_or_a_prefix() -> None:
    cases = suite("text", "lab")
    assert [c.id for c in select(cases, ("lab/framing/2",))] == ["lab/framing/2"]
    framing = [c.id for c in select(cases, ("lab/framing",))]
    assert framing == [f"lab/framing/{n}" for n in range(1, 7)]
    assert [c.id for c in select(cases, ("lab/framing/1", "lab/session/"))] == [
        "lab/framing/1",
        "lab/session/1",
        "lab/session/2",
        "lab/session/3",
    ]
    with pytest.raises(ValueError, match="no case 'lab/framing/1'"):
        select(suite("text", "json"), ("lab/framing/1",))
    assert len({c.id for c in cases}) == len(cases)


@pytest.mark.parametrize(
    "args",
    [
        ["text", "5050", "--case", "lab/nothing"],
        ["bank", "5052", "--dialect", "json"],
        ["exchange", "8000", "--dialect", "lab"],
        ["bank", "5052", "--pin", "12a4"],
    ],
    ids=["unknown-case", "bank-json", "exchange-lab", "bad-pin"],
)
def test_usage_errors_exit_2_before_connecting(args: list[str]) -> None:
    assert main(["check", *args]) == 2


@pytest.mark.e2e
def test_reports_and_exit_status(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    junit = tmp_path / "check.xml"
    with handout_server("text_server.py") as port:
        failing = main(
            [
                "check",
                "text",
                str(port),
                "--case",
                "lab/framing",
                "--timeout",
                "2",
                "--junit",
                str(junit),
            ]
        )
        table = capsys.readouterr().out
        passing = main(["check", "text", f"127.0.0.1:{port}", "--case", "lab/framing/1", "--json"])
        report = json.loads(capsys.readouterr().out)
    assert failing == 1
    assert "text at 127.0.0.1" in table and "framing" in table
    assert "6 cases: 4 passed, 2 failed, 0 warnings, 0 skipped -- FAIL" in table
    suite_xml = ET.parse(junit).getroot()
    assert suite_xml.tag == "testsuite"
    assert (suite_xml.get("tests"), suite_xml.get("failures")) == ("6", "2")
    failed = [
        case.get("name") for case in suite_xml.iter("testcase") if case.find("failure") is not None
    ]
    assert failed == [
        "lab/framing/2 the header split over several segments",
        "lab/framing/3 one byte at a time",
    ]
    assert passing == 0
    assert report["ok"] is True
    (case,) = report["cases"]
    assert case["id"] == "lab/framing/1" and case["result"] == "pass"
    assert case["sent"] == "15".ljust(64) + "hello socklab 1"
    assert case["received"] == "[Lower Case] hello socklab 1 [Upper Case] HELLO SOCKLAB 1"
    assert case["expected"] == case["received"]
    assert case["handout"].startswith("seed 003")


@pytest.mark.e2e
def test_strict_turns_a_warning_into_a_failure(capsys: pytest.CaptureFixture[str]) -> None:
    with handout_server("number_server.py") as port:
        lenient = main(["check", "numbers", str(port), "--case", "lab/semantics/10", "--json"])
        lenient_report = json.loads(capsys.readouterr().out)
        strict = main(
            ["check", "numbers", str(port), "--case", "lab/semantics/10", "--strict", "--json"]
        )
        capsys.readouterr()
    assert lenient_report["cases"][0]["result"] == "warning"
    assert "[Palidrome]" in lenient_report["cases"][0]["detail"]
    assert (lenient, strict) == (0, 1)
