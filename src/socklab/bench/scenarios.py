"""What the load generator sends to each service, and what every reply must be.

How this works: a ``Scenario`` hands each connection a ``ProbeSource``; the connection asks
it for one ``Probe`` per request. A probe is the request bytes plus the reply expected for
it. Checking must cost the load generator almost nothing, so a probe carries the reply
*bytes* socklab is expected to send, compared with ``==`` (the fast path); a reply that
differs is then parsed and judged by meaning (the slow path), so a server that formats a
correct reply differently is not counted wrong, only slower to check.

Per dialect:

- ``lab``: ``request`` is the framed request; ``reply`` is the exact raw reply and is
  required. Lab replies have no framing, so the client can only tell where one reply ends
  because it knows the bytes to expect. Services whose replies cannot be predicted byte
  for byte (exchange: the server's number is random) do not offer lab.
- ``line``: ``request`` is ``text\\n``; ``reply`` the expected line with its ``\\n``, or
  ``None``; ``accept(line)`` judges a line (without ``\\n``) that is not ``reply``.
- ``json``: ``request`` is the JSON object *after* its ``"id"`` member, from the first
  member on (``"op":"convert",...}\\n``); the connection puts ``{"id":N,`` in front.
  ``reply`` likewise is the expected reply after ``{"id":N,`` in socklab's encoding, or
  ``None``; a reply that is not those bytes is parsed and must carry the right ``id``,
  ``"ok": true``, every member of ``reply`` and pass ``accept(fields)`` if given (the
  reply's fields, without the envelope). Requests and replies are built with
  ``socklab.protocol`` (``envelope``, and the bank's types), once per scenario.

Adding a service: subclass ``Scenario`` (``name``, ``dialects``, ``source``) and add it to
``SCENARIOS``. A source may send ``setup`` probes first on every (re)connection, such as a
login; their replies are checked but not timed.
"""

from __future__ import annotations

import itertools
import json
import random
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from socklab.client.exchange import check_server_reply
from socklab.errors import PeerProtocolError
from socklab.protocol import DEFAULT_PORTS, envelope
from socklab.protocol.bank import Login, Move, Moved, read_reply
from socklab.wire.framing import Dialect, encode_json, encode_lab_frame


class ScenarioError(ValueError):
    """A scenario cannot run as asked (a dialect it does not speak, a bad option)."""


@dataclass(frozen=True, slots=True)
class Probe:
    """One request and the reply it must get (see the module docstring for each dialect)."""

    request: bytes
    reply: bytes | None = None
    accept: Callable[[Any], bool] | None = None


class ProbeSource:
    """The requests of one connection: ``setup`` once per connection, then ``next()``."""

    setup: Sequence[Probe] = ()

    def next(self) -> Probe:
        raise NotImplementedError


class CyclingSource(ProbeSource):
    """A fixed pool of probes, taken in turn from ``start``."""

    def __init__(self, probes: Sequence[Probe], start: int = 0) -> None:
        if not probes:
            raise ScenarioError("a scenario needs at least one request")
        start %= len(probes)
        self.next = itertools.cycle([*probes[start:], *probes[:start]]).__next__  # type: ignore[method-assign]


@dataclass(frozen=True, slots=True)
class ScenarioOptions:
    """What the command line may tune in a scenario."""

    digits: int | None = None
    """numbers: send numbers of this many decimal digits instead of small ones."""
    seed: int = 1
    """Seed of the payload choices, so two runs send the same requests."""
    extra: dict[str, str] = field(default_factory=dict)
    """Scenario-specific settings (bank: ``account``, ``pin``)."""


class Scenario:
    """The requests for one service in the dialects it speaks."""

    name: ClassVar[str] = ""
    dialects: ClassVar[tuple[Dialect, ...]] = ()

    def __init__(self, options: ScenarioOptions | None = None) -> None:
        self.options = options or ScenarioOptions()

    @property
    def default_port(self) -> int:
        return DEFAULT_PORTS[self.name]

    def check_dialect(self, dialect: Dialect) -> None:
        """Raise ``ScenarioError`` unless this scenario can run over ``dialect``."""
        if dialect not in self.dialects:
            spoken = ", ".join(d.value for d in self.dialects)
            raise ScenarioError(
                f"the {self.name} scenario runs over {spoken}, not {dialect.value}"
                + (
                    " (lab replies have no framing: the client must know each reply's bytes)"
                    if dialect is Dialect.LAB
                    else ""
                )
            )

    def source(self, dialect: Dialect, index: int) -> ProbeSource:
        """The requests of connection number ``index``."""
        raise NotImplementedError


# -- building probes ---------------------------------------------------------------------


def json_probe(
    body: dict[str, Any],
    reply_fields: dict[str, Any] | None,
    accept: Callable[[Any], bool] | None = None,
) -> Probe:
    """A json probe: ``body`` (with ``op``, without ``id``) and the reply's fields."""
    if "id" in body:
        raise ScenarioError("the connection numbers the requests itself")
    request = encode_json(body)[1:]
    reply = None if reply_fields is None else encode_json(envelope.ok_reply(None, reply_fields))[1:]
    return Probe(request, reply, accept)


def json_request(op: str, fields: dict[str, Any]) -> dict[str, Any]:
    """A json request without an id (``json_probe``'s ``body``)."""
    return envelope.request(op, None, fields)


def line_probe(text: str, reply: str | None, accept: Callable[[Any], bool] | None = None) -> Probe:
    return Probe(
        (text + "\n").encode("utf-8"),
        None if reply is None else (reply + "\n").encode("utf-8"),
        accept,
    )


def lab_probe(text: str, reply: str) -> Probe:
    return Probe(encode_lab_frame(text.encode("utf-8")), reply.encode("utf-8"))


# -- text --------------------------------------------------------------------------------

# None starts with a word the line dialect reads as a command (upper, lower, convert, help).
TEXT_LINES = (
    "hello world",
    "Ashik and Dibbyo",
    "this is our second networking lab",
    "And The Lab Is About Socket Programming",
    "hi",
    "The quick brown fox jumps over the lazy dog 0123456789",
    "MiXeD cAsE, punctuation; and numbers: 42!",
    "Straße in Dhaka, naïve café",
    "socket programming: send the header, then the payload",
    "A",
    "Both lower case and UPPER CASE in one line of ordinary length for a lab client",
    "ümlaut Ωmega ΣΙΓΜΑ",
)


def text_reply(text: str) -> str:
    """The text service's reply to ``text`` (lab and line)."""
    return f"[Lower Case] {text.lower()} [Upper Case] {text.upper()}"


class TextScenario(Scenario):
    """A line of text -> its lower and upper case forms."""

    name = "text"
    dialects = (Dialect.LAB, Dialect.JSON, Dialect.LINE)

    def source(self, dialect: Dialect, index: int) -> ProbeSource:
        self.check_dialect(dialect)
        probes: list[Probe] = []
        for text in TEXT_LINES:
            if dialect is Dialect.JSON:
                fields = {"lower": text.lower(), "upper": text.upper()}
                probes.append(json_probe(json_request("convert", {"text": text}), fields))
            elif dialect is Dialect.LINE:
                probes.append(line_probe(text, text_reply(text)))
            else:
                probes.append(lab_probe(text, text_reply(text)))
        return CyclingSource(probes, start=index)


# -- numbers -----------------------------------------------------------------------------


def is_prime(n: int) -> bool:
    """Whether a small ``n`` is prime (the load generator checks small numbers only)."""
    import gmpy2

    return n >= 2 and bool(gmpy2.is_prime(n))


def decimal(n: int) -> str:
    """``str(n)`` without Python's 4,300-digit limit on int-to-str conversion."""
    if n < 10**4000:
        return str(n)
    import gmpy2

    text: str = gmpy2.mpz(n).digits(10)
    return text


def is_palindrome(n: int) -> bool:
    text = decimal(n)
    return text == text[::-1]


def numbers_reply(prime: bool, palindrome: bool) -> str:
    """The numbers service's reply (lab and line)."""
    return f"[Prime] {prime} [Palindrome] {palindrome}"


SMALL_NUMBERS = (121, 10, 22, 30, 99, 23, 12, 11, 97, 7919, 12321, 104729, 1000003, 65536)

BIG_KINDS = ("mixed", "hard", "easy")
"""Pools of big numbers (``--digits``): every answer is known by construction, since the
load generator cannot afford a primality test of a 10,000-digit number per process.

- ``hard``: products of distinct primes above 2**16, so the server's trial division finds
  nothing and it must run a probable-prime test (one modular exponentiation to find out
  they are composite). Primes are not offered: knowing that one is prime costs the load
  generator the very test being measured.
- ``easy``: numbers with a factor below 256 (half of them palindromes): a cheap answer.
- ``mixed``: both, in turn (``easy`` only, below 30 digits).
"""

_SMALL_FACTOR_PRODUCT = 2 * 3 * 5 * 7 * 11 * 13 * 17 * 19 * 23 * 29 * 31 * 37 * 41 * 43 * 47


def _hard_composite(digits: int, rng: random.Random) -> int:
    """A ``digits``-digit product of distinct primes between 2**16 and 2**32."""
    import gmpy2

    if digits < 30:
        raise ScenarioError("hard numbers need at least 30 digits")
    used: set[int] = set()
    product = 1
    floor = 10 ** (digits - 20)
    while product < floor:
        p = int(gmpy2.next_prime(rng.randrange(1 << 16, 1 << 32)))
        if p not in used:
            used.add(p)
            product *= p
    # One last prime factor brings it to exactly ``digits`` digits; it is above 10**9,
    # as the product so far is below 10**(digits - 20) * 2**32 < 10**(digits - 10).
    low = -(-(10 ** (digits - 1)) // product)
    high = (10**digits - 1) // product
    while True:
        p = int(gmpy2.next_prime(rng.randrange(low, high)))
        if p <= high and p not in used and p > 1 << 16:
            return product * p


def _easy_number(digits: int, rng: random.Random, palindrome: bool) -> int:
    """A ``digits``-digit number with a factor below 256 (so not prime, unless tiny)."""
    import math

    while True:
        if palindrome:
            half = "".join(rng.choice("0123456789") for _ in range((digits + 1) // 2))
            half = rng.choice("123456789") + half[1:]
            n = _parse(half + half[: digits // 2][::-1])
        else:
            n = rng.randrange(10 ** (digits - 1), 10**digits)
        if n > 47 and math.gcd(n, _SMALL_FACTOR_PRODUCT) != 1:
            return n


def _parse(text: str) -> int:
    import gmpy2

    return int(gmpy2.mpz(text))


def big_numbers(digits: int, seed: int, kind: str = "mixed", count: int = 4) -> list[int]:
    """``count`` numbers of exactly ``digits`` digits (see ``BIG_KINDS``), none prime."""
    if kind not in BIG_KINDS:
        raise ScenarioError(f"numbers: kind is one of {', '.join(BIG_KINDS)}, not {kind!r}")
    if digits < 3:
        raise ScenarioError("--digits must be at least 3")
    if kind == "mixed" and digits < 30:
        kind = "easy"  # too short to be a product of primes above 2**16
    rng = random.Random(seed)
    numbers = []
    for i in range(count):
        if kind == "hard" or (kind == "mixed" and i % 2 == 0):
            numbers.append(_hard_composite(digits, rng))
        else:
            palindrome = i % 4 == 3 if kind == "mixed" else i % 2 == 1
            numbers.append(_easy_number(digits, rng, palindrome))
    return numbers


class NumbersScenario(Scenario):
    """An integer -> is it prime, is it a palindrome.

    Small numbers by default; ``digits`` asks for big ones (``extra["kind"]``: see
    ``BIG_KINDS``), sent as JSON strings in the json dialect.
    """

    name = "numbers"
    dialects = (Dialect.LAB, Dialect.JSON, Dialect.LINE)

    def __init__(self, options: ScenarioOptions | None = None) -> None:
        super().__init__(options)
        digits = self.options.digits
        if digits is None:
            self.answers = [(n, is_prime(n), is_palindrome(n)) for n in SMALL_NUMBERS]
        else:
            kind = self.options.extra.get("kind", "mixed")
            numbers = big_numbers(digits, self.options.seed, kind)
            self.answers = [(n, False, is_palindrome(n)) for n in numbers]

    def source(self, dialect: Dialect, index: int) -> ProbeSource:
        self.check_dialect(dialect)
        probes: list[Probe] = []
        for n, prime, palindrome in self.answers:
            if dialect is Dialect.JSON:
                fields = {"prime": prime, "palindrome": palindrome}
                # Big numbers go as strings: JSON parsers cap integers (Python at 4,300 digits).
                number: int | str = n if self.options.digits is None else decimal(n)
                probes.append(json_probe(json_request("check", {"number": number}), fields))
            elif dialect is Dialect.LINE:
                probes.append(line_probe(decimal(n), numbers_reply(prime, palindrome)))
            else:
                probes.append(lab_probe(decimal(n), numbers_reply(prime, palindrome)))
        return CyclingSource(probes, start=index)


# -- exchange ----------------------------------------------------------------------------

_EXCHANGE_LINE = re.compile(
    r"Client Name: (?P<client>.+) \| Server Name: (?P<server>.+) \| "
    r"Client Number: (?P<mine>-?\d+) \| Server Number: (?P<theirs>-?\d+) \| Sum: (?P<sum>-?\d+)"
)


def _exchange_json_check(name: str, number: int) -> Callable[[Any], bool]:
    def accept(reply: Any) -> bool:
        try:
            check_server_reply(reply, number)
        except ValueError:
            return False
        return "sum" in reply and reply.get("client_number") == number

    return accept


def _exchange_line_check(name: str, number: int) -> Callable[[Any], bool]:
    def accept(line: Any) -> bool:
        match = _EXCHANGE_LINE.fullmatch(line)
        if match is None:
            return False
        theirs = int(match["theirs"])
        return (
            match["client"] == name
            and int(match["mine"]) == number
            and 1 <= theirs <= 100
            and int(match["sum"]) == number + theirs
        )

    return accept


class ExchangeScenario(Scenario):
    """A name and a number 1..100 -> the server's name, its random number and the sum.

    The server's number is random, so replies are judged by meaning, and lab is not
    offered: a raw lab reply of unknown length has no end the client could recognise.
    """

    name = "exchange"
    dialects = (Dialect.JSON, Dialect.LINE)

    def source(self, dialect: Dialect, index: int) -> ProbeSource:
        self.check_dialect(dialect)
        client = f"bench-{index}"
        rng = random.Random(self.options.seed * 1_000_003 + index)
        probes: list[Probe] = []
        for _ in range(32):
            number = rng.randint(1, 100)
            if dialect is Dialect.JSON:
                body = json_request("exchange", {"client_name": client, "client_number": number})
                probes.append(json_probe(body, None, _exchange_json_check(client, number)))
            else:
                probes.append(
                    line_probe(f"{client} {number}", None, _exchange_line_check(client, number))
                )
        return CyclingSource(probes)


# -- bank --------------------------------------------------------------------------------


BANK_DEPOSIT_CENTS = 100
_KEY_SLOT = "k" * 32
"""Stands for the key in the pre-encoded deposit: a uuid4's 32 hex digits take its place."""


class BankSource(ProbeSource):
    """Log in once per connection, then deposits of 1.00, each with a fresh idempotency key.

    A reply must be ``"ok": true`` for a deposit of ``1.00`` to this account under this
    very key, and not a replay (every key is new). Balances are not checked: other
    connections move them at the same time.
    """

    def __init__(self, account: int, pin: str) -> None:
        self.account = account
        login = Login(account, pin)
        self.setup = (json_probe(json_request(login.op, login.to_json()), None),)
        # Encoded once from the protocol's own request; each deposit only splices its key in.
        deposit = Move("deposit", BANK_DEPOSIT_CENTS, _KEY_SLOT)
        encoded = encode_json(json_request(deposit.op, deposit.to_json()))[1:]
        self._before_key, self._after_key = encoded.split(_KEY_SLOT.encode("ascii"))

    def next(self) -> Probe:
        key = uuid.uuid4().hex
        request = self._before_key + key.encode("ascii") + self._after_key
        account = self.account

        def accept(reply: Any) -> bool:
            try:
                moved = read_reply(Moved.from_json, reply)
            except PeerProtocolError:
                return False
            return (
                moved.key == key
                and moved.op == "deposit"
                and moved.account == account
                and moved.amount_cents == BANK_DEPOSIT_CENTS
                and not moved.replayed
            )

        return Probe(request, None, accept)


class BankScenario(Scenario):
    """Keyed deposits over json, the bank's native dialect.

    ``extra``: ``account`` (default: connections spread over the seed's accounts 1, 2, 3)
    and ``pin`` (default: the demo PIN, 1234).
    """

    name = "bank"
    dialects = (Dialect.JSON,)

    def source(self, dialect: Dialect, index: int) -> ProbeSource:
        self.check_dialect(dialect)
        extra = self.options.extra
        try:
            account = int(extra["account"]) if "account" in extra else index % 3 + 1
        except ValueError:
            raise ScenarioError("bank: account must be an account number, like 1") from None
        return BankSource(account, extra.get("pin", "1234"))


SCENARIOS: dict[str, type[Scenario]] = {
    scenario.name: scenario
    for scenario in (TextScenario, NumbersScenario, ExchangeScenario, BankScenario)
}


def make_scenario(name: str, options: ScenarioOptions | None = None) -> Scenario:
    """The scenario for service ``name``. Raises ``ScenarioError`` for an unknown one."""
    try:
        cls = SCENARIOS[name]
    except KeyError:
        raise ScenarioError(f"no benchmark scenario for {name!r}") from None
    return cls(options)


def reply_fields(probe: Probe) -> dict[str, Any]:
    """The fields a json probe's reply must carry, without the envelope (from its
    predicted bytes)."""
    if probe.reply is None:
        return {}
    return envelope.unwrap(json.loads(b"{" + probe.reply), None, "the prediction")
