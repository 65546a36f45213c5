"""The checker's reports: a table by section, JSON, and JUnit XML for a course's CI."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any

from rich.console import Console
from rich.table import Table

from socklab.check.driver import shown_bytes
from socklab.check.model import Result, Verdict, counts, is_success

STYLES = {
    Verdict.PASS: "green",
    Verdict.FAIL: "bold red",
    Verdict.WARN: "yellow",
    Verdict.SKIP: "dim",
}


def summary_line(results: list[Result], *, strict: bool) -> str:
    """``24 cases: 20 passed, 3 failed, 1 warning, 0 skipped -- FAIL``."""
    n = counts(results)
    verdict = "PASS" if is_success(results, strict=strict) else "FAIL"
    return (
        f"{len(results)} cases: {n['pass']} passed, {n['fail']} failed, "
        f"{n['warning']} warnings, {n['skipped']} skipped -- {verdict}"
        + (" (strict: warnings fail)" if strict else "")
    )


def print_table(console: Console, target: str, results: list[Result], *, strict: bool) -> None:
    """A table per section, then the summary line."""
    sections: dict[str, list[Result]] = {}
    for result in results:
        sections.setdefault(result.case.section, []).append(result)
    for section, rows in sections.items():
        table = Table(title=f"{target}: {section}", title_justify="left", expand=False)
        table.add_column("case", no_wrap=True)
        table.add_column("result", no_wrap=True)
        table.add_column("ms", justify="right")
        table.add_column("what")
        table.add_column("why", overflow="fold")
        for result in rows:
            label = result.verdict.value
            if not result.case.required and result.verdict is not Verdict.PASS:
                label += " (optional)"
            table.add_row(
                result.case.id,
                f"[{STYLES[result.verdict]}]{label}[/]",
                f"{result.duration_s * 1000:.0f}",
                result.case.title,
                result.detail,
            )
        console.print(table)
    console.print(summary_line(results, strict=strict))


def expected(result: Result) -> str:
    """What the case expects, for a reader: the replies it waits for, else its title."""
    shown = [step.expect.shown for step in result.case.steps if step.expect is not None]
    if not shown:
        return result.case.title
    more = f" (and {len(shown) - 1} more)" if len(shown) > 1 else ""
    return shown[0] + more


def result_dict(result: Result) -> dict[str, Any]:
    return {
        "id": result.case.id,
        "section": result.case.section,
        "title": result.case.title,
        "handout": result.case.handout,
        "required": result.case.required,
        "result": result.verdict.value,
        "detail": result.detail,
        "sent": shown_bytes(result.sent),
        "expected": expected(result),
        "received": shown_bytes(result.received),
        "duration_ms": round(result.duration_s * 1000, 1),
    }


def as_json(target: dict[str, Any], results: list[Result], *, strict: bool) -> str:
    """The whole run as one JSON document."""
    n = counts(results)
    return json.dumps(
        {
            "target": target,
            "strict": strict,
            "ok": is_success(results, strict=strict),
            "counts": n,
            "cases": [result_dict(result) for result in results],
        },
        ensure_ascii=False,
        indent=2,
    )


def as_junit(suite_name: str, results: list[Result], *, strict: bool) -> str:
    """JUnit XML: one testcase per case; a warning is a failure only under ``strict``."""
    n = counts(results)
    failures = sum(
        1
        for r in results
        if (r.verdict is Verdict.FAIL and (r.case.required or strict))
        or (strict and r.verdict is Verdict.WARN)
    )
    suite = ET.Element(
        "testsuite",
        name=suite_name,
        tests=str(len(results)),
        failures=str(failures),
        errors="0",
        skipped=str(n["skipped"]),
        time=f"{sum(r.duration_s for r in results):.3f}",
    )
    for result in results:
        section = result.case.section
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"{suite_name}.{section}",
            name=f"{result.case.id} {result.case.title}",
            time=f"{result.duration_s:.3f}",
        )
        fails = result.verdict is Verdict.FAIL and (result.case.required or strict)
        if fails or (strict and result.verdict is Verdict.WARN):
            ET.SubElement(case, "failure", message=result.detail).text = _io(result)
        elif result.verdict is Verdict.SKIP:
            ET.SubElement(case, "skipped", message=result.detail)
        elif result.verdict in (Verdict.WARN, Verdict.FAIL):
            ET.SubElement(case, "system-err").text = f"warning: {result.detail}"
        ET.SubElement(case, "system-out").text = _io(result)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True)


def _io(result: Result) -> str:
    return (
        f"handout: {result.case.handout}\n"
        f"sent: {shown_bytes(result.sent)}\n"
        f"expected: {expected(result)}\n"
        f"received: {shown_bytes(result.received)}\n"
    )
