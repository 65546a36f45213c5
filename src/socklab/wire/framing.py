"""Sans-I/O framing for the three dialects: bytes in, messages out. No sockets, no asyncio.

How this works: every decoder has ``feed(data)``, which only buffers, and ``next_*()``,
which returns one complete message, ``None`` for "need more bytes", or raises
``PeerProtocolError``. ``feed(b"")`` means the peer closed its side; after it, a
half-received message is an error (``truncated``). ``has_partial`` tells the server
whether a partial-message timeout should run.

- lab:  a 64-byte ASCII header with the decimal length of the payload, padded with
        spaces and nothing else (seed 003), then the payload. A bad header is fatal:
        the next frame boundary is unknown.
- line: bytes up to ``\\n`` (a trailing ``\\r`` is dropped): for ``nc`` and ``telnet``.
- json: one JSON object per line; an object with no newline after it also counts once
        it is complete (the original exchange client sends exactly that and waits).
        Strings holding a lone surrogate and non-finite numbers (NaN, Infinity, 1e400)
        are refused: they are not JSON text, and a reply echoing them could not be sent.
"""

from __future__ import annotations

import enum
import json
import math
import re
from typing import Any

from socklab.errors import LocalProtocolError, PeerProtocolError

LAB_HEADER_BYTES = 64
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024


class Dialect(enum.Enum):
    JSON = "json"
    LAB = "lab"
    LINE = "line"


def _too_large(size: int, limit: int) -> PeerProtocolError:
    return PeerProtocolError(
        "too_large", f"message of {size} bytes exceeds the limit of {limit} bytes", fatal=True
    )


def _truncated() -> PeerProtocolError:
    return PeerProtocolError(
        "truncated", "connection closed in the middle of a message", fatal=True
    )


class _Buffered:
    def __init__(self, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self.max_message_bytes = max_message_bytes
        self._buffer = bytearray()
        self._eof = False

    def feed(self, data: bytes) -> None:
        """Buffer ``data``; ``b""`` marks the end of the stream."""
        if data:
            self._buffer += data
        else:
            self._eof = True

    @property
    def has_partial(self) -> bool:
        return bool(self._buffer)

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer)

    def _check_eof(self) -> None:
        if self._eof and self._buffer:
            self._buffer.clear()
            raise _truncated()


# -- lab ---------------------------------------------------------------------------------


def parse_lab_header(header: bytes | bytearray, max_message_bytes: int) -> int:
    """Return the payload length a 64-byte lab header announces.

    Raises ``PeerProtocolError`` (fatal) if it is not a decimal length padded with
    spaces, or if the length is over ``max_message_bytes``.
    """
    text = header.strip(b" ")  # spaces only, as the lab clients pad: one rule with detection
    if not text or not text.isdigit():  # bytes.isdigit() is ASCII 0-9 only
        raise PeerProtocolError(
            "bad_header",
            "the 64-byte header must hold a decimal length padded with spaces, "
            f"got '{escape_bytes(header.rstrip(b' '), 20)}'",
            fatal=True,
        )
    length = int(text)
    if length > max_message_bytes:
        raise _too_large(length, max_message_bytes)
    return length


def escape_bytes(data: bytes | bytearray, limit: int | None = None) -> str:
    """``data`` for a human: printable ASCII as is, any other byte as ``\\xNN``.

    At most ``limit`` bytes are shown; ``...`` marks a cut.
    """
    shown = data if limit is None else data[:limit]
    text = "".join(chr(b) if 0x20 <= b < 0x7F and b != 0x5C else f"\\x{b:02x}" for b in shown)
    return text + "..." if len(shown) < len(data) else text


def encode_lab_frame(payload: bytes) -> bytes:
    """Frame ``payload`` the way the lab clients do: length, spaces to 64 bytes, payload."""
    header = str(len(payload)).encode("ascii")
    if len(header) > LAB_HEADER_BYTES:
        raise LocalProtocolError("payload too long for a 64-byte header")
    return header.ljust(LAB_HEADER_BYTES, b" ") + payload


class LabDecoder(_Buffered):
    """Frames of seed 003: header, then payload."""

    def __init__(self, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        super().__init__(max_message_bytes)
        self._length: int | None = None

    @property
    def has_partial(self) -> bool:
        return bool(self._buffer) or self._length is not None

    def next_frame(self) -> bytes | None:
        """The next complete payload, or ``None`` if more bytes are needed."""
        buffer = self._buffer
        length = self._length
        if length is None:
            if len(buffer) < LAB_HEADER_BYTES:
                self._check_eof()
                return None
            length = parse_lab_header(buffer[:LAB_HEADER_BYTES], self.max_message_bytes)
            end = LAB_HEADER_BYTES + length
            if len(buffer) >= end:  # the whole frame is here: one copy, one cut
                payload = bytes(buffer[LAB_HEADER_BYTES:end])
                del buffer[:end]
                return payload
            del buffer[:LAB_HEADER_BYTES]
            self._length = length
        if len(buffer) < length:
            if self._eof:
                buffer.clear()
                self._length = None
                raise _truncated()
            return None
        payload = bytes(buffer[:length])
        del buffer[:length]
        self._length = None
        return payload


def whole_lab_frame(data: bytes, max_message_bytes: int) -> bytes | None:
    """The payload if ``data`` is exactly one valid lab frame, else ``None`` (decode it the
    ordinary way, which also reports what is wrong with it)."""
    if len(data) < LAB_HEADER_BYTES:
        return None
    text = data[:LAB_HEADER_BYTES].rstrip(b" ")
    if not text.isdigit():
        return None
    length = int(text)
    if length > max_message_bytes or len(data) != LAB_HEADER_BYTES + length:
        return None
    return data[LAB_HEADER_BYTES:]


# -- line --------------------------------------------------------------------------------


class LineDecoder(_Buffered):
    """Newline-terminated lines; at the end of the stream an unterminated line still counts."""

    def next_frame(self) -> bytes | None:
        buffer = self._buffer
        end = buffer.find(b"\n")
        if end < 0:
            if len(buffer) > self.max_message_bytes:
                size = len(buffer)
                buffer.clear()
                raise _too_large(size, self.max_message_bytes)
            if self._eof and buffer:
                line = bytes(buffer).rstrip(b"\r")
                buffer.clear()
                return line
            return None
        if end > self.max_message_bytes:
            buffer.clear()
            raise _too_large(end, self.max_message_bytes)
        line = bytes(buffer[:end])
        del buffer[: end + 1]
        return line[:-1] if line.endswith(b"\r") else line


# -- json --------------------------------------------------------------------------------


class _RefusedObject(PeerProtocolError):
    """A complete JSON object refused for what it holds (so not one still arriving)."""


class _NotFinite(ValueError):
    """A number JSON cannot hold: ``NaN``, ``Infinity``, or one out of a double's range."""


def _refuse_constant(name: str) -> float:
    raise _NotFinite(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses as inf
        raise _NotFinite(text)
    return value


_json_decoder = json.JSONDecoder(parse_float=_finite_float, parse_constant=_refuse_constant)
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _has_lone_surrogate(value: Any) -> bool:
    """Whether a string anywhere in ``value`` (keys included) holds a lone surrogate.

    A valid pair of ``\\u`` escapes decodes to one character, so any surrogate left in a
    string is a lone one: not Unicode text, and no UTF-8 encoder will send it back.
    """
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def decode_json_object(raw: bytes) -> dict[str, Any]:
    """Parse one JSON object; raise ``PeerProtocolError`` (not fatal) if it is not one.

    Refused besides bad syntax: text that is not UTF-8 and strings holding a lone surrogate
    (``bad_encoding``), ``NaN``, ``Infinity`` and numbers out of a double's range
    (``bad_json``).
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PeerProtocolError("bad_encoding", "the message is not valid UTF-8") from None
    try:
        value = _json_decoder.decode(text)
    except _NotFinite:
        raise _RefusedObject(
            "bad_json", "NaN, Infinity and numbers out of range are not JSON numbers"
        ) from None
    except ValueError as exc:
        if "integer string conversion" in str(exc):  # Python's guard against huge ints
            raise PeerProtocolError(
                "bad_json", "an integer in the message is too long for JSON; send it as a string"
            ) from None
        raise PeerProtocolError("bad_json", "the message is not valid JSON") from None
    except RecursionError:
        raise PeerProtocolError("bad_json", "the message is nested too deeply") from None
    if not isinstance(value, dict):
        raise PeerProtocolError("bad_json", "the message must be a JSON object")
    # Strict UTF-8 decoding already refused raw surrogates, so only a \ud800-\udfff escape
    # can make one: look at the bytes first, walk the object only when one may be there.
    if b"\\u" in raw and _SURROGATE_ESCAPE.search(raw) and _has_lone_surrogate(value):
        raise _RefusedObject(
            "bad_encoding", "a string in the message holds a lone surrogate (not Unicode text)"
        )
    return value


def _is_complete_json(raw: bytes) -> bool:
    """Whether ``raw`` parses with Python's lenient defaults (NaN, lone surrogates allowed)."""
    try:
        json.loads(raw)
    except (ValueError, RecursionError):
        return False
    return True


class JsonDecoder(_Buffered):
    """JSON objects, one per line, or one unterminated object at a time."""

    def next_frame(self) -> dict[str, Any] | None:
        buffer = self._buffer
        while True:
            end = buffer.find(b"\n")
            if end < 0:
                return self._next_unterminated()
            if end > self.max_message_bytes:
                buffer.clear()
                raise _too_large(end, self.max_message_bytes)
            raw = bytes(buffer[:end])
            del buffer[: end + 1]
            if raw.strip():
                return decode_json_object(raw)

    def _next_unterminated(self) -> dict[str, Any] | None:
        buffer = self._buffer
        if len(buffer) > self.max_message_bytes:
            size = len(buffer)
            buffer.clear()
            raise _too_large(size, self.max_message_bytes)
        stripped = bytes(buffer).strip()
        if not stripped:
            buffer.clear()
            return None
        if self._eof:
            buffer.clear()
            return decode_json_object(stripped)
        # Cheap test first: a complete object ends with "}".
        if not stripped.endswith(b"}"):
            return None
        try:
            value = decode_json_object(stripped)
        except _RefusedObject:
            if not _is_complete_json(stripped):
                return None  # e.g. a NaN early in an object that is still arriving
            buffer.clear()  # complete, and refused: waiting would not change that
            raise
        except PeerProtocolError:
            return None  # maybe a "}" inside a string that is still growing: wait for more
        buffer.clear()
        return value


_json_encoder = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":")
)  # built once


def encode_json(message: dict[str, Any]) -> bytes:
    """One JSON message as one line.

    Raises ``LocalProtocolError`` for what JSON or UTF-8 cannot carry (``NaN``, a lone
    surrogate, an integer past Python's digit limit) and ``TypeError`` for a value of a type
    JSON does not have.
    """
    try:
        return _json_encoder.encode(message).encode("utf-8") + b"\n"
    except ValueError as exc:  # UnicodeEncodeError is one
        raise LocalProtocolError(f"cannot send this as JSON: {exc}") from None


# -- detection ---------------------------------------------------------------------------


def detect_dialect(prefix: bytes) -> Dialect | None:
    """Tell the dialect of a connection from its first bytes, or ``None`` if too few arrived.

    ``{`` first means json; a newline within the first 64 bytes means line; 64 bytes of one
    word padded with spaces mean lab (the header parser then says whether the word is a
    valid length). 64 bytes of other printable text with no newline are a long line.
    Anything else raises ``PeerProtocolError`` (fatal).
    """
    if not prefix:
        return None
    if prefix[:1] == b"{":
        return Dialect.JSON
    head = prefix[:LAB_HEADER_BYTES]
    if b"\n" in head:
        return Dialect.LINE
    if not _is_text(head, partial=True):
        raise _unknown_dialect()
    if len(head) < LAB_HEADER_BYTES:
        return None
    if _is_padded_word(head):
        return Dialect.LAB
    return Dialect.LINE


def _is_padded_word(head: bytes) -> bool:
    word = head.strip(b" ")
    return head.endswith(b" ") and b" " not in word


def _is_text(data: bytes, *, partial: bool) -> bool:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        # The last character may be cut in half at the 64-byte boundary.
        if not (partial and exc.start >= len(data) - 3 and exc.reason == "unexpected end of data"):
            return False
        text = data[: exc.start].decode("utf-8")
    return all(ch.isprintable() or ch in "\t\r" for ch in text)


def _unknown_dialect() -> PeerProtocolError:
    return PeerProtocolError(
        "unknown_dialect",
        "expected a JSON object, a line of text, or a 64-byte lab header",
        fatal=True,
    )
