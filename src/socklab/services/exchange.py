"""The name/number exchange of seed 000.

A client sends its name and an integer 1..100; the server answers with its own name, a
random integer 1..100 and the sum, and both sides log the seed's lines. A number out of
range terminates the exchange server (``on_out_of_range="terminate"``, the seed's way) or
is refused (``"reject"``).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any, Literal

from socklab.errors import InvalidRequest, OutOfRange, RequestRejected, UnknownOperation
from socklab.protocol import DEFAULT_PORTS
from socklab.services.base import ConnectionInfo, JsonReply, Service, Session

log = logging.getLogger(__name__)
HANDLE_CLIENT = {"function": "handle_client"}

MIN_NUMBER = 1
MAX_NUMBER = 100
MAX_NAME_CHARS = 100

OutOfRangePolicy = Literal["terminate", "reject"]

LINE_HELP = "usage: NAME NUMBER   (e.g. 'Alice 25'; NUMBER is an integer 1..100)"


@dataclass(frozen=True, slots=True)
class Exchanged:
    """The outcome of one exchange."""

    client_name: str
    server_name: str
    client_number: int
    server_number: int

    @property
    def total(self) -> int:
        return self.client_number + self.server_number

    def as_json(self) -> JsonReply:
        return {
            "server_name": self.server_name,
            "server_number": self.server_number,
            "client_number": self.client_number,
            "sum": self.total,
        }

    def as_text(self) -> str:
        return (
            f"Client Name: {self.client_name} | Server Name: {self.server_name} | "
            f"Client Number: {self.client_number} | Server Number: {self.server_number} | "
            f"Sum: {self.total}"
        )


def validate_name(name: Any) -> str:
    """The client's name, or ``InvalidRequest`` if it is not a short non-empty text."""
    if not isinstance(name, str):
        raise InvalidRequest("client_name must be a string")
    text = name.strip()
    if not text:
        raise InvalidRequest("client_name must not be empty")
    if len(text) > MAX_NAME_CHARS:
        raise InvalidRequest(f"client_name must be at most {MAX_NAME_CHARS} characters")
    if not text.isprintable():
        raise InvalidRequest("client_name must be printable text")
    return text


def validate_number(number: Any) -> int:
    """The client's number as an int (range unchecked), or ``InvalidRequest``."""
    if isinstance(number, bool) or not isinstance(number, int):
        raise InvalidRequest("client_number must be an integer")
    return number


def parse_number_text(text: str) -> int:
    """An integer typed by a human (``25``, ``-3``), or ``InvalidRequest``."""
    text = text.strip()
    digits = text[1:] if text[:1] in "+-" else text
    if not digits.isascii() or not digits.isdigit() or len(digits) > 20:
        raise InvalidRequest(f"{text[:30]!r} is not an integer")
    return int(text)


class ExchangeService(Service):
    name = "exchange"
    default_port = DEFAULT_PORTS["exchange"]

    def __init__(
        self,
        server_name: str = "Socklab Server",
        *,
        seed: int | None = None,
        on_out_of_range: OutOfRangePolicy = "terminate",
    ) -> None:
        self.server_name = validate_name(server_name)
        self.display_name = self.server_name
        self.on_out_of_range = on_out_of_range
        self._rng = random.Random(seed)

    def open_session(self, conn: ConnectionInfo) -> Session:
        return ExchangeSession(self, conn)

    def exchange(self, conn: ConnectionInfo, name: Any, number: Any) -> Exchanged:
        """Validate, log the seed's lines and draw the server's number.

        Raises ``InvalidRequest`` for a bad name or number, ``OutOfRange`` for a number
        outside 1..100 (and, under ``terminate``, asks the server to stop first).
        """
        log.debug("Message received from client", extra=HANDLE_CLIENT)
        client_name = validate_name(name)
        client_number = validate_number(number)
        if not MIN_NUMBER <= client_number <= MAX_NUMBER:
            shown = str(client_number) if abs(client_number) < 10**30 else "(a huge number)"
            if self.on_out_of_range == "terminate":
                log.warning(
                    "Client int out of range: %s. Terminating the server.",
                    shown,
                    extra=HANDLE_CLIENT,
                )
                conn.request_stop()
                raise OutOfRange(
                    f"{shown} is not in {MIN_NUMBER}..{MAX_NUMBER}; the server terminates"
                )
            log.warning("Client int out of range: %s. Rejected.", shown, extra=HANDLE_CLIENT)
            raise OutOfRange(f"{shown} is not in {MIN_NUMBER}..{MAX_NUMBER}")
        result = Exchanged(
            client_name=client_name,
            server_name=self.server_name,
            client_number=client_number,
            server_number=self._rng.randint(MIN_NUMBER, MAX_NUMBER),
        )
        log.info(
            "Client Name: %s | Server Name: %s",
            result.client_name,
            result.server_name,
            extra=HANDLE_CLIENT,
        )
        log.info(
            "Client Number: %d | Server Number: %d | Sum: %d",
            result.client_number,
            result.server_number,
            result.total,
            extra=HANDLE_CLIENT,
        )
        log.debug("Sending client response", extra=HANDLE_CLIENT)
        return result


class ExchangeSession(Session):
    """Every refusal is logged once, as a WARNING, here."""

    def __init__(self, service: ExchangeService, conn: ConnectionInfo) -> None:
        self.service = service
        self.conn = conn

    def handle_json(self, request: dict[str, Any]) -> JsonReply:
        try:
            op = request.get("op", "exchange")
            if op != "exchange":
                raise UnknownOperation(
                    f"unknown op {str(op)[:30]!r}; the exchange service knows 'exchange'"
                )
            if "client_name" not in request or "client_number" not in request:
                raise InvalidRequest("the request needs client_name and client_number")
            name, number = request["client_name"], request["client_number"]
            return self.service.exchange(self.conn, name, number).as_json()
        except (InvalidRequest, UnknownOperation) as exc:
            self._warn(exc)
            raise

    def handle_line(self, line: str) -> str:
        text = line.strip()
        if text.lower() in ("", "help", "?"):
            return LINE_HELP
        name, _, number_text = text.rpartition(" ")
        try:
            number = parse_number_text(number_text)
            return self.service.exchange(self.conn, name, number).as_text()
        except InvalidRequest as exc:
            self._warn(exc)
            raise InvalidRequest(f"{exc.message}; {LINE_HELP}") from None

    def _warn(self, exc: RequestRejected) -> None:
        log.warning("Invalid message from %s: %s", self.conn.peer, exc.message, extra=HANDLE_CLIENT)
