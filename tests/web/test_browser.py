"""The pages in a real browser: Playwright driving the system's Chromium (never a
downloaded one). Under CI=true a missing Chromium fails these tests instead of skipping."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from web_stack import WebStack, running_web

from helpers import HOST, ScriptedRandom, recv_until
from socklab.ledger import LedgerSettings

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 20_000

pytestmark = pytest.mark.browser

if not Path(CHROMIUM).exists() or os.environ.get("SOCKLAB_NO_BROWSER"):
    if os.environ.get("CI") == "true":
        pytest.fail(f"{CHROMIUM} is missing: .ci/run installs it", pytrace=False)
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect
expect.set_options(timeout=WAIT_MS)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    context.set_default_timeout(WAIT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[WebStack]:
    with running_web(tmp_path / "bank.db") as running:
        yield running


def log_in(page: Any, stack: WebStack, pin: str = "1234") -> None:
    page.goto(stack.url + "/")
    page.get_by_label("Account number").fill("1")
    page.get_by_label("PIN").fill(pin)
    page.get_by_role("button", name="Log in").click()


def test_log_in_deposit_and_the_balance_and_statistics_change(page: Any, stack: WebStack) -> None:
    log_in(page, stack)
    expect(page.locator("#balance")).to_have_text("10000.00")
    page.get_by_label("Amount", exact=True).fill("25.00")
    page.get_by_role("button", name="Deposit").click()
    expect(page.locator("#balance")).to_have_text("10025.00")
    expect(page.locator('dd[data-stat="Successful"]')).to_have_text("1")
    expect(page.locator('dd[data-stat="Total transactions"]')).to_have_text("1")
    expect(page.locator("#statement tbody tr").first).to_contain_text("deposit")
    assert stack.balance_cents(1) == 1_002_500
    # The PIN is kept nowhere on the page.
    assert "1234" not in page.content()
    assert page.get_by_label("PIN").input_value() == ""


def test_a_wrong_pin_is_refused(page: Any, stack: WebStack) -> None:
    log_in(page, stack, pin="0000")
    expect(page.locator("#activity li").first).to_contain_text("Login refused")
    expect(page.locator("#account")).to_be_hidden()


def test_the_lockout_message_after_repeated_wrong_pins(page: Any, tmp_path: Path) -> None:
    settings = LedgerSettings(max_failed_logins=2, lockout_s=600)
    with running_web(tmp_path / "b.db", settings=settings) as stack:
        for _ in range(2):
            log_in(page, stack, pin="0000")
            expect(page.locator("#activity li").first).to_contain_text("wrong")
        log_in(page, stack)  # the right PIN, too late
        expect(page.locator("#activity li").first).to_contain_text("too many wrong PINs")
        expect(page.locator("#account")).to_be_hidden()


def test_keyboard_only_login_and_accessible_labels(page: Any, stack: WebStack) -> None:
    page.goto(stack.url + "/")
    page.locator("#login-account").focus()
    page.keyboard.type("2")
    page.keyboard.press("Tab")
    page.keyboard.type("1234")
    page.keyboard.press("Enter")
    expect(page.locator("#account-id")).to_have_text("2")
    expect(page.locator("#amount")).to_be_focused()
    snapshot = page.locator("body").aria_snapshot()
    for name in ("Amount", "To account", "Deposit", "Withdraw", "Transfer", "Log out"):
        assert name in snapshot


def test_a_lost_reply_is_retried_once_with_the_same_key(page: Any, tmp_path: Path) -> None:
    rng = ScriptedRandom([0.0])  # the first money request: applied, its reply lost
    with running_web(tmp_path / "b.db", fail_rate=0.5, fail_mode="lose-reply", rng=rng) as stack:
        log_in(page, stack)
        expect(page.locator("#balance")).to_have_text("10000.00")
        page.get_by_label("Amount", exact=True).fill("40.00")
        page.get_by_role("button", name="Deposit").click()
        done = page.locator("#activity li.ok", has_text="money moved once")
        expect(done).to_have_count(1)
        retries = page.locator("#activity li.retry")
        expect(retries).to_have_count(1)
        key = re.search(r"same key (\S+)", retries.first.inner_text())
        assert key is not None
        expect(page.locator("#balance")).to_have_text("10040.00")
        assert stack.balance_cents(1) == 1_004_000  # moved once

        async def verify() -> Any:
            return await stack.bank.ledger.verify()

        report = stack.call(verify)
        assert report.ok, report.problems

        async def postings() -> Any:
            return await stack.bank.ledger.statement(1, 10)

        deposits = [p for p in stack.call(postings) if p.op == "deposit" and p.key == key.group(1)]
        assert len(deposits) == 1


def test_the_playground_answers(page: Any, stack: WebStack) -> None:
    page.goto(stack.url + "/")
    page.get_by_label("Text (lower and upper case)").fill("Hello Lab")
    page.get_by_role("button", name="Convert").click()
    expect(page.locator("#play-result")).to_contain_text("HELLO LAB")
    page.get_by_label("Number (prime? palindrome?)").fill("97")
    page.get_by_role("button", name="Check").click()
    expect(page.locator("#play-result")).to_contain_text('"prime":true')


def test_the_dashboard_counters_move(page: Any, stack: WebStack) -> None:
    page.goto(stack.url + "/dashboard")
    expect(page.locator("#status")).to_have_text("Live, updated every second")
    text_port = next(lst.port for lst in stack.listeners if lst.service.name == "text")
    cell = page.locator('tr[data-service="text"] td[data-requests]')
    expect(cell).to_have_text("0")
    with socket.create_connection((HOST, text_port), timeout=10) as sock:
        for _ in range(5):
            sock.sendall(b"upper hello\n")
            recv_until(sock)
        expect(cell).to_have_text("5")
        expect(page.locator('tr[data-service="text"]')).to_contain_text("0 / 0 / 1")
    expect(page.locator("#bank")).to_contain_text("Success rate")
