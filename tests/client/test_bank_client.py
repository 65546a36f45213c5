"""``BankClient`` as a driver: requests built from the protocol types, ``move()``, the
retry loop (injected sleep and jitter) and statement paging, over a scripted connection."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from socklab.client import bank_client
from socklab.client.bank_client import BankClient, RetryNotice, TxReceipt
from socklab.errors import (
    InsufficientFunds,
    InvalidRequest,
    LinkBroken,
    LinkTimeout,
    PeerProtocolError,
)
from socklab.protocol.bank import (
    BankStats,
    Moved,
    StatementLine,
    StatementPage,
)

STATS = BankStats(total=3, successful=2, failed=1)
Answer = Callable[[str, dict[str, Any]], dict[str, Any]]


class FakeConnection:
    """Stands for ``JsonClient``: records each request and answers from ``answer``."""

    def __init__(self, bank: FakeBank) -> None:
        self.bank = bank
        self.closed = False

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        assert not self.closed, "a request on a closed connection"
        self.bank.sent.append((op, fields))
        return self.bank.answer(op, fields)

    def close(self) -> None:
        self.closed = True


class FakeBank:
    """The other end: the requests it got, and a scripted answer for each."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.connections: list[FakeConnection] = []

    def ops(self) -> list[str]:
        return [op for op, _ in self.sent]


def moved_reply(op: str, fields: dict[str, Any], *, replayed: bool = False) -> dict[str, Any]:
    """What the bank answers to a money request (the fields of its reply)."""
    amount = int(fields["amount"].replace(".", ""))
    moved = Moved(op, 1, amount, 100_00, fields["key"], 41, replayed, STATS, fields.get("to"))  # type: ignore[arg-type]
    return moved.to_json()


def login_reply() -> dict[str, Any]:
    return {"account": 1, "name": "Ashik", "balance": "100.00"}


def ordinary(op: str, fields: dict[str, Any]) -> dict[str, Any]:
    if op == "login":
        return login_reply()
    if op in ("deposit", "withdraw", "transfer"):
        return moved_reply(op, fields)
    raise AssertionError(f"unexpected {op}")


@pytest.fixture
def connect(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Answer], FakeBank]]:
    """Make ``JsonClient.connect`` open connections to a ``FakeBank``."""

    def install(answer: Answer) -> FakeBank:
        bank = FakeBank(answer)

        def fake_connect(host: str, port: int, **kwargs: Any) -> FakeConnection:
            conn = FakeConnection(bank)
            bank.connections.append(conn)
            return conn

        monkeypatch.setattr(bank_client.JsonClient, "connect", fake_connect)
        return bank

    yield install


def client(**kwargs: Any) -> tuple[BankClient, list[float], list[RetryNotice]]:
    sleeps: list[float] = []
    notices: list[RetryNotice] = []
    bank = BankClient(
        "bank.test",
        1,
        sleep=sleeps.append,
        uniform=lambda low, high: high,
        on_retry=notices.append,
        **kwargs,
    )
    return bank, sleeps, notices


# -- move ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "to", "sent"),
    [
        ("deposit", None, {"amount": "12.50", "key": "k"}),
        ("withdraw", None, {"amount": "12.50", "key": "k"}),
        ("transfer", 2, {"amount": "12.50", "key": "k", "to": 2}),
    ],
)
def test_move_sends_one_request_per_op_and_reads_the_receipt(
    connect: Callable[[Answer], FakeBank], op: str, to: int | None, sent: dict[str, Any]
) -> None:
    fake = connect(ordinary)
    bank, sleeps, _ = client()
    bank.login(1, "1234")
    receipt = bank.move(op, 12_50, to=to, key="k")  # type: ignore[arg-type]
    assert fake.sent[-1] == (op, sent)
    assert isinstance(receipt, TxReceipt)
    assert receipt.moved == Moved(op, 1, 12_50, 100_00, "k", 41, False, STATS, to)  # type: ignore[arg-type]
    assert (receipt.attempts, receipt.keys_sent, sleeps) == (1, ("k",), [])
    assert (receipt.op, receipt.to, receipt.balance_cents, receipt.posting_id) == (
        op,
        to,
        100_00,
        41,
    )


def test_the_named_helpers_are_move(connect: Callable[[Answer], FakeBank]) -> None:
    fake = connect(ordinary)
    bank, _, _ = client()
    bank.deposit(1_00, key="a")
    bank.withdraw(2_00, key="b")
    bank.transfer(3, 3_00, key="c")
    assert fake.sent == [
        ("deposit", {"amount": "1.00", "key": "a"}),
        ("withdraw", {"amount": "2.00", "key": "b"}),
        ("transfer", {"amount": "3.00", "key": "c", "to": 3}),
    ]


def test_move_makes_a_fresh_key_when_none_is_given(connect: Callable[[Answer], FakeBank]) -> None:
    fake = connect(ordinary)
    bank, _, _ = client(key_prefix="kiosk")
    one, two = bank.move("deposit", 1_00), bank.move("deposit", 1_00)
    assert one.key.startswith("kiosk-") and two.key.startswith("kiosk-")
    assert one.key != two.key
    assert [fields["key"] for _, fields in fake.sent] == [one.key, two.key]


@pytest.mark.parametrize(("op", "to"), [("transfer", None), ("deposit", 2), ("withdraw", 2)])
def test_a_transfer_needs_to_and_only_a_transfer(
    connect: Callable[[Answer], FakeBank], op: str, to: int | None
) -> None:
    fake = connect(ordinary)
    bank, _, _ = client()
    with pytest.raises(InvalidRequest):
        bank.move(op, 1_00, to=to)  # type: ignore[arg-type]
    assert fake.sent == []


def test_a_refusal_goes_up_at_once(connect: Callable[[Answer], FakeBank]) -> None:
    def answer(op: str, fields: dict[str, Any]) -> dict[str, Any]:
        raise InsufficientFunds("not enough")

    fake = connect(answer)
    bank, sleeps, notices = client()
    with pytest.raises(InsufficientFunds):
        bank.withdraw(1_00, key="k")
    assert (len(fake.sent), sleeps, notices) == (1, [], [])


def test_an_odd_reply_is_a_protocol_error(connect: Callable[[Answer], FakeBank]) -> None:
    connect(lambda op, fields: {**moved_reply(op, fields), "posting": "forty-one"})
    bank, _, _ = client()
    with pytest.raises(PeerProtocolError, match="odd reply"):
        bank.deposit(1_00)


# -- the retry driver ---------------------------------------------------------------------


def test_a_lost_link_reconnects_logs_in_again_and_resends_the_same_key(
    connect: Callable[[Answer], FakeBank],
) -> None:
    failures = [LinkBroken("the bank closed the connection"), LinkTimeout("no reply")]

    def answer(op: str, fields: dict[str, Any]) -> dict[str, Any]:
        if op == "deposit" and failures:
            raise failures.pop(0)
        return ordinary(op, fields) if op != "deposit" else moved_reply(op, fields, replayed=True)

    fake = connect(answer)
    bank, sleeps, notices = client(backoff_s=0.5, max_backoff_s=0.75)
    bank.login(1, "1234")
    receipt = bank.deposit(5_00, key="same")
    assert fake.ops() == ["login", "deposit", "login", "deposit", "login", "deposit"]
    assert [fields.get("key") for op, fields in fake.sent if op == "deposit"] == ["same"] * 3
    assert [c.closed for c in fake.connections] == [True, True, False]
    assert (receipt.attempts, receipt.replayed, receipt.keys_sent) == (3, True, ("same",))
    assert sleeps == [0.5, 0.75]
    assert [(n.attempt, n.key, n.same_key) for n in notices] == [
        (2, "same", True),
        (3, "same", True),
    ]
    assert bank.reconnects == 2


def test_naive_retries_send_a_new_key_each_time(connect: Callable[[Answer], FakeBank]) -> None:
    failures = 2

    def answer(op: str, fields: dict[str, Any]) -> dict[str, Any]:
        nonlocal failures
        if failures:
            failures -= 1
            raise LinkBroken("lost")
        return ordinary(op, fields)

    fake = connect(answer)
    bank, _, notices = client(new_key_each_attempt=True, key_prefix="naive")
    receipt = bank.deposit(1_00, key="first")
    keys = [fields["key"] for _, fields in fake.sent]
    assert keys[0] == "first" and len(set(keys)) == 3
    assert receipt.keys_sent == tuple(keys) and receipt.key == keys[-1]
    assert all(not n.same_key for n in notices)


def test_giving_up_says_how_many_attempts(connect: Callable[[Answer], FakeBank]) -> None:
    def answer(op: str, fields: dict[str, Any]) -> dict[str, Any]:
        raise LinkTimeout("no reply from bank.test:1 within 5 s")

    fake = connect(answer)
    bank, sleeps, _ = client(attempts=3, backoff_s=0.1)
    with pytest.raises(LinkTimeout, match=r"within 5 s \(gave up after 3 attempts\)$"):
        bank.balance()
    assert len(fake.sent) == 3 and len(sleeps) == 2


def test_a_failed_connect_is_retried_like_a_lost_link(
    monkeypatch: pytest.MonkeyPatch, connect: Callable[[Answer], FakeBank]
) -> None:
    fake = connect(ordinary)
    real_connect = bank_client.JsonClient.connect
    refusals = [LinkBroken("cannot connect: refused")]

    def flaky_connect(*args: Any, **kwargs: Any) -> Any:
        if refusals:
            raise refusals.pop()
        return real_connect(*args, **kwargs)

    monkeypatch.setattr(bank_client.JsonClient, "connect", flaky_connect)
    bank, sleeps, _ = client()
    assert bank.deposit(1_00, key="k").attempts == 2
    assert fake.ops() == ["deposit"] and len(sleeps) == 1


# -- statements ---------------------------------------------------------------------------


def line(posting: int) -> StatementLine:
    return StatementLine(posting, "deposit", 1_00, posting * 1_00, None, f"k{posting}", 1.5)


def paged(postings: int) -> Answer:
    """A bank whose account has postings ``postings``..1, served newest first."""

    def answer(op: str, fields: dict[str, Any]) -> dict[str, Any]:
        assert op == "statement"
        before = fields.get("before", postings + 1)
        ids = list(range(before - 1, 0, -1))[: fields["limit"]]
        cursor = ids[-1] if ids and ids[-1] > 1 else None
        return StatementPage(1, postings * 1_00, tuple(map(line, ids)), cursor).to_json()

    return answer


def test_statement_sends_the_cursor_and_reads_the_page(
    connect: Callable[[Answer], FakeBank],
) -> None:
    fake = connect(paged(7))
    bank, _, _ = client()
    page = bank.statement(3, before=5)
    assert fake.sent == [("statement", {"limit": 3, "before": 5})]
    assert [x.posting_id for x in page.lines] == [4, 3, 2]
    assert page.next_before == 2 and page.balance_cents == 7_00
    assert bank.statement().lines[0] == line(7)
    assert fake.sent[-1] == ("statement", {"limit": 10})


@pytest.mark.parametrize(("postings", "size"), [(1, 1000), (7, 3), (9, 3), (5, 1), (3, 10)])
def test_statement_pages_walk_the_whole_journal(
    connect: Callable[[Answer], FakeBank], postings: int, size: int
) -> None:
    fake = connect(paged(postings))
    bank, _, _ = client()
    pages = list(bank.statement_pages(size))
    ids = [x.posting_id for page in pages for x in page.lines]
    assert ids == list(range(postings, 0, -1))
    assert len(fake.sent) == len(pages) == -(-postings // size)
    assert [fields.get("before") for _, fields in fake.sent][1:] == [
        page.next_before for page in pages[:-1]
    ]


def test_a_cursor_that_does_not_move_back_ends_the_walk(
    connect: Callable[[Answer], FakeBank],
) -> None:
    connect(lambda op, fields: StatementPage(1, 0, (line(5),), 5).to_json())
    bank, _, _ = client()
    with pytest.raises(PeerProtocolError, match="must move back"):
        list(bank.statement_pages(1))


@pytest.mark.parametrize("limit", [0, 1001])
def test_a_statement_limit_out_of_range_is_refused_here(
    connect: Callable[[Answer], FakeBank], limit: int
) -> None:
    fake = connect(paged(1))
    bank, _, _ = client()
    with pytest.raises(ValueError, match="limit"):
        bank.statement(limit)
    assert fake.sent == []
