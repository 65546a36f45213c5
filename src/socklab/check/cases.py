"""The conformance cases, as data: one table per service, built for a dialect.

Each case names the handout line it checks (seed 003 for text, numbers and the bank,
seed 000 for the exchange). Replies are compared in the lab's text form
(``[Lower Case] x [Upper Case] X``, ``[Prime] True [Palindrome] False``); the driver turns
a json or line reply into that form first, so one table serves every dialect.
"""

from __future__ import annotations

import json

from socklab.check.model import Case, Expect, Step
from socklab.services.base import DISCONNECT_MESSAGE
from socklab.wire.framing import LAB_HEADER_BYTES, encode_lab_frame

SERVICES = ("text", "numbers", "bank", "exchange")
DIALECTS: dict[str, tuple[str, ...]] = {
    "text": ("lab", "line", "json"),
    "numbers": ("lab", "line", "json"),
    "bank": ("lab",),
    "exchange": ("original",),
}
"""The dialects each service is checked in; the first is the default."""

LARGE_PRIME = 2**61 - 1
PALINDROME_TYPO = "[Palidrome]"

H_FRAME = "seed 003: HEADER = 64; msgLength = conn.recv(HEADER); msg = conn.recv(msgLength)"
H_CLIENT_SEND = (
    "seed 003 client: sendLength += b' ' * (HEADER - len(sendLength)); send(len); send(msg)"
)
H_UTF8 = "seed 003: FORMAT = 'utf-8'; msgLength = len(message) (bytes, after encode)"
H_LOOP = "seed 003: while connected: ... (one connection, many messages)"
H_DISCONNECT = 'seed 003: DISCONNECTMESSAGE = "!DISCONNECT" -> connected = False; conn.close()'
H_THREADS = "seed 003: thread = threading.Thread(target=handleClient, ...) per connection"
H_TEXT = 'seed 003: response = f"[Lower Case] {msg.lower()} [Upper Case] {msg.upper()}"'
H_NUMBERS = 'seed 003: response = f"[Prime] {utils.isPrime(msg)} [Palidrome] {isPalidrome}"'
H_NUMBERS_INT = "seed 003: msg = int(msg) (a number is sent as decimal text)"


def request_bytes(service: str, dialect: str, text: str) -> bytes:
    """One request carrying ``text`` in ``dialect``."""
    if dialect == "lab":
        return encode_lab_frame(text.encode("utf-8"))
    if dialect == "line":
        return text.encode("utf-8") + b"\n"
    if service == "text":
        body: dict[str, object] = {"op": "convert", "text": text}
    else:
        body = {"op": "check", "number": text}
    return json.dumps(body, ensure_ascii=False).encode("utf-8") + b"\n"


def text_reply(text: str) -> str:
    return f"[Lower Case] {text.lower()} [Upper Case] {text.upper()}"


def is_palindrome(number: int) -> bool:
    return number >= 0 and str(number) == str(number)[::-1]


def is_prime_small(number: int) -> bool:
    if number < 2:
        return False
    return all(number % d for d in range(2, int(number**0.5) + 1))


def numbers_expect(number: int, *, prime: bool | None = None, spelling: bool = False) -> Expect:
    """``[Prime] P [Palindrome] Q`` for ``number``.

    The handout's own spelling, ``[Palidrome]``, is accepted; only a ``spelling`` case
    (one per run) turns it into a warning.
    """
    is_prime = is_prime_small(number) if prime is None else prime
    good = f"[Prime] {is_prime} [Palindrome] {is_palindrome(number)}"
    typo = _escape(good.replace("[Palindrome]", PALINDROME_TYPO))
    if not spelling:
        return Expect(f"{_escape(good)}|{typo}", good)
    return Expect(
        pattern=_escape(good),
        shown=good,
        warn_pattern=typo,
        warn_why="the handout's spelling [Palidrome]; clients looking for [Palindrome] miss it",
    )


def _escape(text: str) -> str:
    import re

    return re.escape(text)


def _reply(service: str, payload: str) -> Expect:
    if service == "text":
        return Expect.exactly(text_reply(payload))
    return numbers_expect(int(payload))


def _step(service: str, dialect: str, payload: str) -> Step:
    return Step((request_bytes(service, dialect, payload),), _reply(service, payload))


def _sample(service: str, index: int) -> str:
    return f"hello socklab {index}" if service == "text" else str(100 + index)


def problem_a_cases(service: str, dialect: str) -> list[Case]:
    """Framing, session, concurrency, robustness and semantics for text or numbers."""
    d = dialect
    cases: list[Case] = []
    sample = _sample(service, 1)
    if d == "lab":
        frame = request_bytes(service, d, sample)
        two = (_sample(service, 2), _sample(service, 3))
        both = Expect(
            f"(?:{_reply(service, two[0]).pattern})(?:{_reply(service, two[1]).pattern})",
            _reply(service, two[0]).shown + _reply(service, two[1]).shown,
        )
        utf8 = "Straße café ✓" if service == "text" else "１２１"
        large = ("Aß" * 8000) if service == "text" else "7" * 4000
        cases += [
            Case(
                f"{d}/framing/1",
                "framing",
                "header and payload in one segment",
                H_FRAME,
                "exchange",
                (Step((frame,), _reply(service, sample)),),
            ),
            Case(
                f"{d}/framing/2",
                "framing",
                "the header split over several segments",
                H_FRAME,
                "exchange",
                (
                    Step(
                        (
                            frame[:3],
                            frame[3:40],
                            frame[40:LAB_HEADER_BYTES],
                            frame[LAB_HEADER_BYTES:],
                        ),
                        _reply(service, sample),
                        pause_s=0.1,  # long enough for a server's recv() to see each piece
                    ),
                ),
            ),
            Case(
                f"{d}/framing/3",
                "framing",
                "one byte at a time",
                H_FRAME,
                "exchange",
                (
                    Step(
                        tuple(frame[i : i + 1] for i in range(len(frame))), _reply(service, sample)
                    ),
                ),
            ),
            Case(
                f"{d}/framing/4",
                "framing",
                "two frames in one segment",
                H_FRAME,
                "exchange",
                (
                    Step(
                        (request_bytes(service, d, two[0]) + request_bytes(service, d, two[1]),),
                        both,
                    ),
                ),
            ),
        ]
        if service == "text":
            cases.append(
                Case(
                    f"{d}/framing/5",
                    "framing",
                    "multi-byte UTF-8: the length counts bytes",
                    H_UTF8,
                    "exchange",
                    (_step(service, d, utf8),),
                )
            )
        else:
            cases.append(
                Case(
                    f"{d}/framing/5",
                    "framing",
                    "multi-byte UTF-8: the length counts bytes (full-width digits refused)",
                    H_UTF8,
                    "survive",
                    (_step(service, d, sample),),
                    params={"probe": request_bytes(service, d, utf8)},
                )
            )
        cases.append(
            Case(
                f"{d}/framing/6",
                "framing",
                f"a large payload ({len(large.encode())} bytes)",
                H_FRAME,
                "exchange",
                (
                    Step(
                        (request_bytes(service, d, large),),
                        _reply(service, large)
                        if service == "text"
                        else numbers_expect(int(large), prime=False),
                    ),
                ),
            )
        )
    many = tuple(_step(service, d, _sample(service, i)) for i in range(20))
    cases.append(
        Case(f"{d}/session/1", "session", "20 messages on one connection", H_LOOP, "exchange", many)
    )
    if d == "lab":
        cases.append(
            Case(
                f"{d}/session/2",
                "session",
                "!DISCONNECT ends the session",
                H_DISCONNECT,
                "disconnect",
                (Step((request_bytes(service, d, DISCONNECT_MESSAGE),), None),),
            )
        )
    partial = (
        request_bytes(service, d, "x" * 100)[:70]
        if d == "lab"
        else request_bytes(service, d, sample)[:5]
    )
    cases.append(
        Case(
            f"{d}/session/3",
            "session",
            "a client closing mid-message disturbs no one",
            H_THREADS,
            "abort",
            (_step(service, d, sample),),
            params={"probe": partial},
        )
    )
    cases.append(
        Case(
            f"{d}/concurrency/1",
            "concurrency",
            "50 clients at once, all answered",
            H_THREADS,
            "concurrent",
            tuple(_step(service, d, _sample(service, i)) for i in range(50)),
        )
    )
    stall = request_bytes(service, d, "x" * 10)[:30] if d == "lab" else b"uppe"
    cases.append(
        Case(
            f"{d}/concurrency/2",
            "concurrency",
            "a stalled client (half a message) blocks no one",
            H_THREADS,
            "stall",
            (_step(service, d, sample),),
            params={"probe": stall},
        )
    )
    malformed = {
        "lab": b"abc".ljust(LAB_HEADER_BYTES) + b"abc",
        "line": b"\xff\xfe not UTF-8\n",
        "json": b'{"op": "convert", "text": }\n',
    }[d]
    cases.append(
        Case(
            f"{d}/robustness/1",
            "robustness",
            "a malformed header; the next client is answered",
            H_FRAME,
            "survive",
            (_step(service, d, sample),),
            params={"probe": malformed},
        )
    )
    if service == "numbers":
        cases.append(
            Case(
                f"{d}/robustness/2",
                "robustness",
                "non-numeric input; the next client is answered",
                H_NUMBERS_INT,
                "survive",
                (_step(service, d, sample),),
                params={"probe": request_bytes(service, d, "abc")},
            )
        )
    cases.append(
        Case(
            f"{d}/robustness/3",
            "robustness",
            "an empty message; the next client is answered",
            H_FRAME,
            "survive",
            (_step(service, d, sample),),
            params={"probe": request_bytes(service, d, "")},
        )
    )
    cases += _semantics(service, d)
    return cases


def _semantics(service: str, d: str) -> list[Case]:
    if service == "text":
        return [
            Case(
                f"{d}/semantics/1",
                "semantics",
                "ASCII text: lower and upper case",
                H_TEXT,
                "each",
                (_step(service, d, "Hello World 42"),),
            ),
            Case(
                f"{d}/semantics/2",
                "semantics",
                "Unicode text: ß upper-cases to SS",
                H_TEXT,
                "each",
                (_step(service, d, "Straße İstanbul ÉTÉ"),),
            ),
        ]
    groups: list[tuple[str, tuple[int, ...]]] = [
        ("primes", (2, 3, 97, 7919)),
        ("composites", (4, 10, 1001, 7917)),
        ("Carmichael numbers are not prime", (561, 1105, 41041)),
        ("0: not prime, a palindrome", (0,)),
        ("1 is not prime", (1,)),
        ("2 is the even prime", (2,)),
        ("negative numbers are neither prime nor palindromes", (-7, -121)),
        ("palindromes", (121, 12321, 9)),
    ]
    cases = [
        Case(
            f"{d}/semantics/{n}",
            "semantics",
            title,
            H_NUMBERS,
            "each",
            tuple(_step(service, d, str(number)) for number in numbers),
        )
        for n, (title, numbers) in enumerate(groups, start=1)
    ]
    cases.append(
        Case(
            f"{d}/semantics/{len(groups) + 1}",
            "semantics",
            "a large prime (2**61-1) within the time budget",
            H_NUMBERS,
            "each",
            (
                Step(
                    (request_bytes(service, d, str(LARGE_PRIME)),),
                    numbers_expect(LARGE_PRIME, prime=True),
                ),
            ),
            last=True,
        )
    )
    spelling = len(groups) + 2
    cases.append(
        Case(
            f"{d}/semantics/{spelling}",
            "semantics",
            "the reply spells [Palindrome] (the handout writes [Palidrome])",
            H_NUMBERS,
            "each",
            (Step((request_bytes(service, d, "121"),), numbers_expect(121, spelling=True)),),
        )
    )
    return cases


def suite(service: str, dialect: str) -> list[Case]:
    """Every case for ``service`` in ``dialect``, in table order.

    Raises ``ValueError`` for a service or a dialect the checker does not know.
    """
    from socklab.check.bank_cases import bank_cases, exchange_cases

    if service not in DIALECTS:
        raise ValueError(f"unknown service {service!r}; choose from {', '.join(SERVICES)}")
    if dialect not in DIALECTS[service]:
        raise ValueError(
            f"the {service} service is checked in the {' or '.join(DIALECTS[service])} "
            f"dialect, not {dialect}"
        )
    if service == "bank":
        return bank_cases(dialect)
    if service == "exchange":
        return exchange_cases(dialect)
    return problem_a_cases(service, dialect)


def select(cases: list[Case], wanted: tuple[str, ...]) -> list[Case]:
    """The cases whose id is one of ``wanted`` or starts with one of them plus ``/``.

    Raises ``ValueError`` naming a wanted id that selects nothing.
    """
    if not wanted:
        return cases
    for want in wanted:
        if not any(_selects(want, case.id) for case in cases):
            raise ValueError(f"no case {want!r}; ids look like {cases[0].id}")
    return [case for case in cases if any(_selects(want, case.id) for want in wanted)]


def _selects(want: str, case_id: str) -> bool:
    want = want.rstrip("/")
    return case_id == want or case_id.startswith(want + "/")
