"""The web service over real HTTP: sessions, CSRF, the ATM calls, lost replies, health,
metrics and the playground, against the real services on one event loop."""

from __future__ import annotations

import http.client
import ssl
from pathlib import Path

import pytest
import trustme
from web_stack import Browserish, running_web

from helpers import ScriptedRandom, captured_records
from tls_helpers import server_context


@pytest.fixture
def stack(tmp_path: Path):  # type: ignore[no-untyped-def]
    with running_web(tmp_path / "bank.db") as running:
        yield running


def test_page_sets_a_strict_httponly_session_cookie_and_a_csrf_token(stack) -> None:  # type: ignore[no-untyped-def]
    browser = Browserish(stack.port)
    html = browser.open_page()
    assert "socklab ATM" in html and browser.csrf
    (cookie,) = browser.set_cookie_headers
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Secure" not in cookie  # plain HTTP here; Secure under TLS
    assert "1234" not in html


def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(stack) -> None:  # type: ignore[no-untyped-def]
    browser = Browserish(stack.port)
    browser.login()
    before = stack.balance_cents(1)
    status, reply = browser.post("/api/bank/deposit", {"amount": "5.00", "key": "k1"}, csrf="")
    assert status == 403 and reply["error"]["code"] == "csrf"
    status, reply = browser.post(
        "/api/bank/deposit", {"amount": "5.00", "key": "k1"}, csrf="not-the-token"
    )
    assert status == 403
    assert stack.balance_cents(1) == before


def test_a_post_without_a_session_is_refused(stack) -> None:  # type: ignore[no-untyped-def]
    stranger = Browserish(stack.port, csrf="guess")
    status, reply = stranger.post("/api/bank/login", {"account": 1, "pin": "1234"})
    assert status == 403 and reply["error"]["code"] == "session_expired"


def test_login_deposit_and_the_statistics_change(stack) -> None:  # type: ignore[no-untyped-def]
    browser = Browserish(stack.port)
    browser.open_page()
    old_cookie = browser.cookie
    reply = browser.login()
    assert reply["account"] == 1 and reply["balance"] == "10000.00"
    assert browser.cookie != old_cookie  # a new session token at login
    status, reply = browser.post("/api/bank/deposit", {"amount": "12.50", "key": "dep-1"})
    assert status == 200, reply
    assert reply["balance"] == "10012.50" and reply["replayed"] is False
    assert reply["stats"]["total"] == 1 and reply["stats"]["successful"] == 1
    status, balance = browser.post("/api/bank/balance", {})
    assert balance["balance"] == "10012.50"
    status, statement = browser.post("/api/bank/statement", {"limit": 5})
    assert statement["postings"][0]["op"] == "deposit"
    assert stack.balance_cents(1) == 1_001_250


def test_wrong_pin_is_refused_and_never_logged(stack) -> None:  # type: ignore[no-untyped-def]
    browser = Browserish(stack.port)
    browser.open_page()
    with captured_records("socklab") as records:
        status, reply = browser.post("/api/bank/login", {"account": 1, "pin": "9876"})
    assert status == 401 and reply["error"]["code"] == "auth_failed"
    assert not any("9876" in r.getMessage() for r in records)
    status, reply = browser.post("/api/bank/balance", {})
    assert status == 401 and reply["error"]["code"] == "not_logged_in"


def test_a_lost_reply_is_retried_with_the_same_key_and_money_moves_once(tmp_path: Path) -> None:
    # The first money request is hit: applied, then its reply is lost (the connection cut).
    rng = ScriptedRandom([0.0])
    with running_web(tmp_path / "b.db", fail_rate=0.5, fail_mode="lose-reply", rng=rng) as stack:
        browser = Browserish(stack.port)
        browser.login()
        body = {"amount": "7.00", "key": "web-lost-1"}
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
            browser.post("/api/bank/deposit", body)
        assert stack.balance_cents(1) == 1_000_700  # applied although the reply was lost
        status, reply = browser.post("/api/bank/deposit", body)
        assert status == 200, reply
        assert reply["replayed"] is True and reply["balance"] == "10007.00"
        assert stack.balance_cents(1) == 1_000_700  # moved once

        async def verify() -> object:
            return await stack.bank.ledger.verify()

        report = stack.call(verify)
        assert report.ok, report.problems  # type: ignore[attr-defined]


def test_readyz_answers_while_the_ledger_does(stack) -> None:  # type: ignore[no-untyped-def]
    browser = Browserish(stack.port)
    assert browser.request("GET", "/healthz")[0] == 200
    assert browser.request("GET", "/readyz")[0] == 200

    async def close_ledger() -> None:
        await stack.bank.ledger.close()

    stack.call(close_ledger)
    status, reply, _ = browser.request("GET", "/readyz")
    assert status == 503 and reply["error"]["code"] == "not_ready"
    assert browser.request("GET", "/healthz")[0] == 200


def test_metrics_count_requests_errors_and_connections(stack) -> None:  # type: ignore[no-untyped-def]
    browser = Browserish(stack.port)
    browser.login()
    browser.post("/api/bank/deposit", {"amount": "1.00", "key": "m-1"})
    browser.post("/api/bank/withdraw", {"amount": "999999.00", "key": "m-2"})
    status, text, response = browser.request("GET", "/metrics")
    assert status == 200 and response.headers["Content-Type"].startswith("text/plain")
    assert isinstance(text, str)
    assert 'socklab_errors_total{code="http_422",service="web"} 1.0' in text
    assert 'socklab_bank_transactions_total{outcome="successful"} 1.0' in text
    assert 'socklab_connections_open{dialect="json",service="bank"} 0.0' in text
    assert 'socklab_request_duration_seconds_count{service="web"}' in text


def test_playground_answers_through_the_services(stack) -> None:  # type: ignore[no-untyped-def]
    browser = Browserish(stack.port)
    browser.open_page()
    status, reply = browser.post("/api/play/text", {"text": "Hello"})
    assert status == 200 and reply["upper"] == "HELLO" and reply["lower"] == "hello"
    status, reply = browser.post("/api/play/numbers", {"number": 121})
    assert status == 200 and reply["palindrome"] is True
    status, reply = browser.post("/api/play/exchange", {"client_name": "A", "client_number": 5})
    assert status == 200 and 1 <= reply["server_number"] <= 100
    status, reply = browser.post("/api/play/numbers", {"number": "x"})
    assert status == 422 and reply["ok"] is False
    status, reply = browser.post("/api/play/bank", {"op": "stats"})
    assert status == 404


def test_bad_json_is_a_clear_error(stack) -> None:  # type: ignore[no-untyped-def]
    browser = Browserish(stack.port)
    browser.open_page()
    status, reply = browser.post("/api/play/text", [1, 2])
    assert status == 400 and reply["error"]["code"] == "bad_request"


def test_under_tls_the_session_cookie_is_secure(tmp_path: Path) -> None:
    ca = trustme.CA()
    with running_web(tmp_path / "b.db", tls=server_context(ca)) as stack:
        client_context = ssl.create_default_context()
        ca.configure_trust(client_context)
        conn = http.client.HTTPSConnection("127.0.0.1", stack.port, context=client_context)
        try:
            conn.request("GET", "/")
            response = conn.getresponse()
            response.read()
        finally:
            conn.close()
        assert response.status == 200
        cookie = response.headers["Set-Cookie"]
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
