"""The bank (seed 003, Problem B) and the exchange (seed 000) cases, as data.

Their conversations depend on what the server said before (a balance read, then a deposit
judged against it), so each case names a scenario the driver plays
(:mod:`socklab.check.scenarios`) with its parameters.
"""

from __future__ import annotations

from socklab.check.model import Case

H_LOGIN = 'seed 003: utils.getName(int(msg[0]), int(msg[1:5])) -> "Welcome {name}!" + menu'
H_BAD_LOGIN = 'seed 003: str = "Invalid ID or Password\\n"'
H_BALANCE = 'seed 003: msg[5] == "1": "Your balance is ..." + statistics lines'
H_DEPOSIT = 'seed 003: msg[5] == "2": "Enter amount to deposit: "; utils.deposit(...)'
H_WITHDRAW = 'seed 003: msg[5] == "3": "Enter amount to withdraw: "; utils.withdraw(...)'
H_STATS = "seed 003: Successful transactions / Total transactions / Success rate / Error rate"
H_NON_IDEMPOTENT = (
    "seed 003, Problem B: design and implement a non-idempotent operation between bank "
    "server and ATM booth"
)
H_EXCHANGE = (
    'seed 000: the client sends {"client_name", "client_number"}; the server replies with '
    '{"server_name", "server_number"} (and the sum)'
)
H_RANGE = "seed 000: If the number is between 1 and 100, the server picks a random number"
H_TERMINATE = "seed 000: Client int out of range: 0. Terminating the server."


def bank_cases(dialect: str) -> list[Case]:
    d = dialect
    return [
        Case(
            f"{d}/bank/1",
            "bank",
            "login with the right PIN: welcome and menu",
            H_LOGIN,
            "bank",
            params={"scenario": "login_ok"},
        ),
        Case(
            f"{d}/bank/2",
            "bank",
            "login with a wrong PIN is refused",
            H_BAD_LOGIN,
            "bank",
            params={"scenario": "login_bad"},
        ),
        Case(f"{d}/bank/3", "bank", "balance", H_BALANCE, "bank", params={"scenario": "balance"}),
        Case(
            f"{d}/bank/4",
            "bank",
            "deposit 100 adds 100",
            H_DEPOSIT,
            "bank",
            params={"scenario": "move", "choice": "2", "amount": 100},
        ),
        Case(
            f"{d}/bank/5",
            "bank",
            "withdraw 50 takes 50",
            H_WITHDRAW,
            "bank",
            params={"scenario": "move", "choice": "3", "amount": 50},
        ),
        Case(
            f"{d}/bank/6",
            "bank",
            "insufficient funds: refused, the balance never negative",
            H_WITHDRAW,
            "bank",
            params={"scenario": "overdraw"},
        ),
        Case(
            f"{d}/bank/7",
            "bank",
            "statistics lines present and consistent",
            H_STATS,
            "bank",
            params={"scenario": "stats"},
        ),
        Case(
            f"{d}/bank/8",
            "bank",
            "a deposit retried after a lost reply is applied once (Problem B)",
            H_NON_IDEMPOTENT,
            "bank",
            required=False,
            params={"scenario": "retry", "amount": 7},
        ),
        Case(
            f"{d}/robustness/1",
            "robustness",
            "a malformed header; the next client is answered",
            "seed 003: msgLength = int(msgLength)",
            "bank",
            params={"scenario": "malformed"},
        ),
    ]


def exchange_cases(dialect: str) -> list[Case]:
    d = dialect
    return [
        Case(
            f"{d}/exchange/1",
            "exchange",
            "reply fields and types",
            H_EXCHANGE,
            "exchange_orig",
            params={"scenario": "fields"},
        ),
        Case(
            f"{d}/exchange/2",
            "exchange",
            "server numbers in 1..100, sums consistent",
            H_RANGE,
            "exchange_orig",
            params={"scenario": "range"},
        ),
        Case(
            f"{d}/concurrency/1",
            "concurrency",
            "50 clients at once, all answered",
            H_EXCHANGE,
            "exchange_orig",
            params={"scenario": "concurrent"},
        ),
        Case(
            f"{d}/robustness/1",
            "robustness",
            "malformed JSON; the next client is answered",
            H_EXCHANGE,
            "exchange_orig",
            params={"scenario": "malformed"},
        ),
        Case(
            f"{d}/exchange/3",
            "exchange",
            "an out-of-range number terminates the server "
            "(destructive: only with --allow-terminate)",
            H_TERMINATE,
            "exchange_orig",
            destructive=True,
            last=True,
            params={"scenario": "terminate"},
        ),
    ]
