"""The verdict rules and reports, on plain values."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from socklab.check.cases import numbers_expect, request_bytes
from socklab.check.driver import Target, lab_form
from socklab.check.model import Case, Result, Verdict, is_success
from socklab.check.report import as_json, as_junit, summary_line


def result(verdict: Verdict, *, required: bool = True, n: int = 1) -> Result:
    case = Case(f"lab/x/{n}", "x", "a case", "seed 003: a line", "exchange", required=required)
    return Result(case, verdict, "why", (b"sent",), (b"got",), 0.01)


@pytest.mark.parametrize(
    ("verdicts", "lenient", "strict"),
    [
        ([Verdict.PASS, Verdict.SKIP], True, True),
        ([Verdict.PASS, Verdict.WARN], True, False),
        ([Verdict.PASS, Verdict.FAIL], False, False),
    ],
    ids=["pass-skip", "warning", "failure"],
)
def test_success_needs_every_required_case(
    verdicts: list[Verdict], lenient: bool, strict: bool
) -> None:
    results = [result(v, n=i) for i, v in enumerate(verdicts)]
    assert is_success(results, strict=False) is lenient
    assert is_success(results, strict=True) is strict


def test_junit_counts_a_warning_as_a_failure_only_under_strict() -> None:
    results = [result(Verdict.PASS, n=1), result(Verdict.WARN, n=2), result(Verdict.SKIP, n=3)]
    for strict, failures in ((False, "0"), (True, "1")):
        root = ET.fromstring(as_junit("suite", results, strict=strict))
        assert (root.get("tests"), root.get("failures"), root.get("skipped")) == (
            "3",
            failures,
            "1",
        )
        assert "sent: sent" in (root.find("testcase/system-out").text or "")  # type: ignore[union-attr]
    assert summary_line(results, strict=True).endswith("FAIL (strict: warnings fail)")
    report = json.loads(as_json({"service": "text"}, results, strict=False))
    assert report["ok"] is True
    assert report["counts"] == {"pass": 1, "fail": 0, "warning": 1, "skipped": 1}


def test_json_and_line_replies_are_judged_in_the_lab_form() -> None:
    numbers = Target("127.0.0.1", 1, "numbers", "json")
    assert lab_form(numbers, b'{"id":null,"ok":true,"prime":true,"palindrome":false}\n') == (
        "[Prime] True [Palindrome] False"
    )
    assert lab_form(numbers, b"not json\n") == "not json"
    text = Target("127.0.0.1", 1, "text", "json")
    assert lab_form(text, '{"ok":true,"lower":"ß","upper":"SS"}\n'.encode()) == (
        "[Lower Case] ß [Upper Case] SS"
    )
    line = Target("127.0.0.1", 1, "text", "line")
    assert lab_form(line, b"[Lower Case] a [Upper Case] A\n") == "[Lower Case] a [Upper Case] A"
    assert request_bytes("numbers", "json", "97") == b'{"op": "check", "number": "97"}\n'
    assert request_bytes("text", "lab", "ß") == b"2".ljust(64) + "ß".encode()


def test_the_palindrome_spelling_warns_only_in_its_own_case() -> None:
    usual = numbers_expect(121)
    assert usual.matches("[Prime] False [Palindrome] True")
    assert usual.matches("[Prime] False [Palidrome] True")
    assert not usual.matches("[Prime] True [Palindrome] True")
    spelling = numbers_expect(121, spelling=True)
    assert not spelling.matches("[Prime] False [Palidrome] True")
    assert spelling.matches_warn("[Prime] False [Palidrome] True")
