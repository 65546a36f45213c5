"""The case converter of seed 003, Problem A.1: a line of text -> its lower and upper case.

Conversion is exactly Python's ``str.lower()`` and ``str.upper()``: full Unicode case
mapping, so ``Straße`` becomes ``STRASSE``; empty text is valid.

- lab: the payload is the text, always (the lab's clients send arbitrary lines); the reply
  is ``[Lower Case] {lower} [Upper Case] {upper}``, and ``!DISCONNECT`` is answered with
  its own conversion before the server closes, as the lab's server did.
- line: the same, plus commands for people typing into ``nc``: ``help`` or ``?`` (any
  case, surrounding spaces ignored) answers a usage line; ``upper TEXT`` / ``lower TEXT``
  (the command in lower case, then one space) answer just that form; ``convert TEXT``
  answers both forms of any text, ``help`` and ``upper x`` included. A line that is not
  a command, ``Upper case`` or a bare ``upper`` included, is text to convert.
- json: ``{"op": "convert", "text": ...}`` (``op`` optional) -> ``{"lower", "upper"}``;
  ``{"op": "upper" | "lower", "text": ...}`` -> just that field.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from socklab.errors import InvalidRequest, UnknownOperation
from socklab.protocol import DEFAULT_PORTS
from socklab.services.base import DISCONNECT_MESSAGE, ConnectionInfo, JsonReply, Service, Session

log = logging.getLogger(__name__)

_FN = {"function": "handle_client"}

OPS = ("convert", "upper", "lower")

LINE_HELP = (
    "usage: TEXT (replies its lower and upper case) | upper TEXT | lower TEXT | convert TEXT"
)

MAX_LOGGED_CHARS = 200


@dataclass(frozen=True, slots=True)
class CaseConverted:
    """Both case forms of one text."""

    lower: str
    upper: str

    def as_text(self) -> str:
        """The lab's reply: ``[Lower Case] {lower} [Upper Case] {upper}``."""
        return f"[Lower Case] {self.lower} [Upper Case] {self.upper}"


def convert_case(text: str) -> CaseConverted:
    """``text`` in lower and in upper case (Python's full Unicode mapping); never raises."""
    return CaseConverted(lower=text.lower(), upper=text.upper())


def shorten(text: str, limit: int = MAX_LOGGED_CHARS) -> str:
    """``text`` for a log line: cut after ``limit`` characters, saying how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


class TextService(Service):
    name = "text"
    default_port = DEFAULT_PORTS["text"]
    display_name = "Text Server"

    def open_session(self, conn: ConnectionInfo) -> Session:
        return TextSession(conn)


class TextSession(Session):
    def __init__(self, conn: ConnectionInfo) -> None:
        self.conn = conn

    def convert(self, text: str) -> CaseConverted:
        """Convert ``text``, logging the lab's two lines of conversation."""
        result = convert_case(text)
        if log.isEnabledFor(logging.INFO):  # skip shorten() on the hot path when quiet
            log.info("Message received: %s", shorten(text), extra=_FN)
            log.info("[%s] %s", self.conn.peer, shorten(result.upper), extra=_FN)
        return result

    def handle_lab(self, payload: str) -> str:
        return self.convert(payload).as_text()

    def handle_line(self, line: str) -> str:
        if line.strip().lower() in ("help", "?"):
            return LINE_HELP
        command, space, rest = line.partition(" ")
        if space and command == "upper":
            return self.convert(rest).upper
        if space and command == "lower":
            return self.convert(rest).lower
        if space and command == "convert":
            return self.convert(rest).as_text()
        return self.convert(line).as_text()

    def handle_json(self, request: dict[str, Any]) -> JsonReply:
        """``{"lower", "upper"}`` of ``request["text"]``, or one of them for op upper/lower.

        Raises ``UnknownOperation`` for another op and ``InvalidRequest`` when ``text``
        is missing or not a string.
        """
        op = request.get("op", "convert")
        if not isinstance(op, str) or op not in OPS:
            raise UnknownOperation(
                f"unknown op {str(op)[:30]!r}; the text service knows {', '.join(OPS)}"
            )
        if "text" not in request:
            raise InvalidRequest("the request needs a 'text' field (a string)")
        text = request["text"]
        if not isinstance(text, str):
            raise InvalidRequest(f"'text' must be a string, not {json_type_name(text)}")
        result = self.convert(text)
        if op == "upper":
            return {"upper": result.upper}
        if op == "lower":
            return {"lower": result.lower}
        return {"lower": result.lower, "upper": result.upper}

    def farewell(self) -> str:
        return self.convert(DISCONNECT_MESSAGE).as_text()


def json_type_name(value: Any) -> str:
    """The JSON name of ``value``'s type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
