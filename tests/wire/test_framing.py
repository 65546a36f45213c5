"""Byte-level tests of the sans-I/O codecs: whole, byte by byte, in every split."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from socklab.errors import LocalProtocolError, PeerProtocolError
from socklab.wire.framing import (
    LAB_HEADER_BYTES,
    Dialect,
    JsonDecoder,
    LabDecoder,
    LineDecoder,
    detect_dialect,
    encode_json,
    encode_lab_frame,
    escape_bytes,
    whole_lab_frame,
)

Decoder = JsonDecoder | LabDecoder | LineDecoder


def drain(decoder: Decoder) -> list[Any]:
    out = []
    while (message := decoder.next_frame()) is not None:
        out.append(message)
    return out


def feed_in_chunks(decoder: Decoder, data: bytes, cuts: list[int]) -> list[Any]:
    out: list[Any] = []
    start = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        if cut <= start:
            continue  # an empty feed would mean end of stream
        decoder.feed(data[start:cut])
        out.extend(drain(decoder))
        start = cut
    return out


# -- lab -----------------------------------------------------------------------------------

LAB_CASES = [
    pytest.param(b"hello world", id="ascii"),
    pytest.param(b"", id="empty"),
    pytest.param("straße ß → SS".encode(), id="utf8"),
    pytest.param(b"!DISCONNECT", id="disconnect"),
    pytest.param(b"x" * 5000, id="long"),
]


@pytest.mark.parametrize("payload", LAB_CASES)
def test_lab_frame_is_the_lab_clients_bytes(payload: bytes) -> None:
    # Exactly what the seed's client sends: str(len) padded with spaces to 64, then payload.
    header = str(len(payload)).encode() + b" " * (64 - len(str(len(payload))))
    assert encode_lab_frame(payload) == header + payload


@pytest.mark.parametrize("payload", LAB_CASES)
def test_lab_decoder_whole_and_byte_by_byte(payload: bytes) -> None:
    data = encode_lab_frame(payload)
    whole = LabDecoder()
    whole.feed(data + encode_lab_frame(b"next")[:10])  # trailing bytes stay buffered
    assert whole.next_frame() == payload
    assert whole.next_frame() is None
    assert whole.has_partial

    bytewise = LabDecoder()
    assert feed_in_chunks(bytewise, data, list(range(len(data)))) == [payload]
    assert not bytewise.has_partial


@given(st.binary(max_size=300), st.binary(max_size=3))
def test_whole_lab_frame_takes_exactly_one_frame(payload: bytes, extra: bytes) -> None:
    frame = encode_lab_frame(payload)
    assert whole_lab_frame(frame, 1024) == payload
    if extra:
        assert whole_lab_frame(frame + extra, 1024) is None
    if payload:
        assert whole_lab_frame(frame[:-1], 1024) is None  # not all of it yet
        assert whole_lab_frame(frame, len(payload) - 1) is None  # over the limit


def test_whole_lab_frame_leaves_bad_headers_to_the_decoder() -> None:
    assert whole_lab_frame(b"-3".ljust(64) + b"abc", 1024) is None
    assert whole_lab_frame(b"x".ljust(64), 1024) is None


def test_lab_several_frames_in_one_segment() -> None:
    frames = [b"a", b"bc", b"", b"def"]
    decoder = LabDecoder()
    decoder.feed(b"".join(encode_lab_frame(f) for f in frames))
    assert drain(decoder) == frames


@pytest.mark.parametrize(
    ("header", "code"),
    [
        pytest.param(b"abc".ljust(64), "bad_header", id="text"),
        pytest.param(b"-5".ljust(64), "bad_header", id="negative"),
        pytest.param(b"1.5".ljust(64), "bad_header", id="decimal"),
        pytest.param(b" " * 64, "bad_header", id="blank"),
        pytest.param(b"1 2".ljust(64), "bad_header", id="two-numbers"),
        pytest.param(b"99999999".ljust(64), "too_large", id="oversize"),
    ],
)
def test_lab_bad_header_is_fatal(header: bytes, code: str) -> None:
    decoder = LabDecoder(max_message_bytes=1024)
    decoder.feed(header)
    with pytest.raises(PeerProtocolError) as info:
        decoder.next_frame()
    assert info.value.code == code
    assert info.value.fatal


def test_lab_eof_mid_frame_is_truncated() -> None:
    decoder = LabDecoder()
    decoder.feed(encode_lab_frame(b"hello")[:-2])
    assert decoder.next_frame() is None
    decoder.feed(b"")
    with pytest.raises(PeerProtocolError) as info:
        decoder.next_frame()
    assert info.value.code == "truncated"


# -- line ----------------------------------------------------------------------------------


def test_line_decoder_strips_crlf_and_keeps_the_rest() -> None:
    decoder = LineDecoder()
    decoder.feed(b"upper hello\r\n121\nprime 9")
    assert drain(decoder) == [b"upper hello", b"121"]
    assert decoder.has_partial
    decoder.feed(b"7\n")
    assert drain(decoder) == [b"prime 97"]


def test_line_unterminated_last_line_counts_at_eof() -> None:
    decoder = LineDecoder()
    decoder.feed(b"Alice 25")
    assert decoder.next_frame() is None
    decoder.feed(b"")
    assert decoder.next_frame() == b"Alice 25"


def test_line_too_long_is_fatal() -> None:
    decoder = LineDecoder(max_message_bytes=100)
    decoder.feed(b"x" * 101)
    with pytest.raises(PeerProtocolError) as info:
        decoder.next_frame()
    assert info.value.code == "too_large" and info.value.fatal


# -- json ----------------------------------------------------------------------------------

JSON_CASES: list[dict[str, Any]] = [
    {"op": "convert", "text": "hello", "id": 1},
    {"client_name": "Amirreza Yarahmadi Client", "client_number": 25},
    {"op": "x", "text": 'braces } { and " quotes \n newline', "id": "a"},
    {"nested": {"a": [1, 2, {"b": None}]}, "unicode": "ß→SS"},
]


@pytest.mark.parametrize("message", JSON_CASES)
def test_json_round_trip_whole_and_byte_by_byte(message: dict[str, Any]) -> None:
    data = encode_json(message)
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    decoder = JsonDecoder()
    assert feed_in_chunks(decoder, data, list(range(len(data)))) == [message]


def test_json_unterminated_object_is_a_message() -> None:
    # The original exchange client: one object, no newline, then it waits for the answer.
    decoder = JsonDecoder()
    decoder.feed(json.dumps({"client_name": "A", "client_number": 7}).encode())
    assert decoder.next_frame() == {"client_name": "A", "client_number": 7}
    assert not decoder.has_partial


def test_json_brace_inside_string_waits_for_more() -> None:
    decoder = JsonDecoder()
    decoder.feed(b'{"text": "a}')
    assert decoder.next_frame() is None
    decoder.feed(b'"}')
    assert decoder.next_frame() == {"text": "a}"}


@pytest.mark.parametrize(
    ("line", "code"),
    [
        pytest.param(b"{not json}\n", "bad_json", id="invalid"),
        pytest.param(b'{"a": \xff}\n', "bad_encoding", id="bad-utf8"),
        pytest.param(b"[1, 2]\n", "bad_json", id="array"),
        pytest.param(b"{" * 5000 + b"\n", "bad_json", id="deep"),
    ],
)
def test_json_bad_line_is_an_error_and_the_stream_goes_on(line: bytes, code: str) -> None:
    decoder = JsonDecoder()
    decoder.feed(line + b'{"ok": 1}\n')
    with pytest.raises(PeerProtocolError) as info:
        decoder.next_frame()
    assert info.value.code == code and not info.value.fatal
    assert decoder.next_frame() == {"ok": 1}


def test_json_huge_integer_gets_a_helpful_message() -> None:
    decoder = JsonDecoder()
    decoder.feed(b'{"number": ' + b"7" * 5000 + b"}\n")
    with pytest.raises(PeerProtocolError, match="send it as a string"):
        decoder.next_frame()


def test_json_oversize_is_fatal() -> None:
    decoder = JsonDecoder(max_message_bytes=64)
    decoder.feed(b'{"a": "' + b"x" * 100)
    with pytest.raises(PeerProtocolError) as info:
        decoder.next_frame()
    assert info.value.fatal and info.value.code == "too_large"


def test_json_blank_lines_are_skipped() -> None:
    decoder = JsonDecoder()
    decoder.feed(b'\n\r\n  \n{"a":1}\n')
    assert drain(decoder) == [{"a": 1}]


# -- detection -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "dialect"),
    [
        pytest.param(b'{"op"', Dialect.JSON, id="json"),
        pytest.param(b"Alice 25\n", Dialect.LINE, id="line"),
        pytest.param(b"121\n", Dialect.LINE, id="number-line"),
        pytest.param(encode_lab_frame(b"hi"), Dialect.LAB, id="lab"),
        pytest.param(b"5".ljust(64), Dialect.LAB, id="lab-header-only"),
        pytest.param(b"a" * 70, Dialect.LINE, id="long-line"),
        pytest.param(b"upper " + b"a" * 70, Dialect.LINE, id="long-line-with-words"),
        pytest.param(b"-12".ljust(64), Dialect.LAB, id="negative-header-is-lab"),
        pytest.param(b"abc".ljust(64), Dialect.LAB, id="word-header-is-lab"),
        pytest.param(b"", None, id="nothing-yet"),
        pytest.param(b"12", None, id="digits-so-far"),
        pytest.param(b"12    ", None, id="header-so-far"),
        pytest.param(b"hello", None, id="text-so-far"),
    ],
)
def test_detect_dialect(prefix: bytes, dialect: Dialect | None) -> None:
    assert detect_dialect(prefix) is dialect


@pytest.mark.parametrize(
    "prefix",
    [
        pytest.param(b"\x00\x01\x02\xff", id="binary"),
        pytest.param(b"\x16\x03\x01" + b"\x00" * 61, id="tls"),
    ],
)
def test_detect_rejects_garbage(prefix: bytes) -> None:
    with pytest.raises(PeerProtocolError) as info:
        detect_dialect(prefix)
    assert info.value.fatal and info.value.code == "unknown_dialect"


def test_detect_tolerates_a_character_cut_at_64_bytes() -> None:
    text = ("a" * 63 + "ß").encode()  # ß is two bytes: the 64th byte is half of it
    assert detect_dialect(text[:64]) is Dialect.LINE


# -- properties ----------------------------------------------------------------------------

payloads = st.binary(max_size=300)
cut_lists = st.lists(st.integers(min_value=0, max_value=5000), max_size=30)


@given(st.lists(payloads, max_size=8), cut_lists)
def test_lab_any_split_yields_the_same_frames(frames: list[bytes], cuts: list[int]) -> None:
    data = b"".join(encode_lab_frame(f) for f in frames)
    cuts = [c % (len(data) + 1) for c in cuts]
    assert feed_in_chunks(LabDecoder(), data, cuts) == frames


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)


@given(
    st.lists(st.dictionaries(st.text(max_size=8), json_values, max_size=4), max_size=6), cut_lists
)
def test_json_any_split_yields_the_same_messages(
    messages: list[dict[str, Any]], cuts: list[int]
) -> None:
    data = b"".join(encode_json(m) for m in messages)
    cuts = [c % (len(data) + 1) for c in cuts]
    assert feed_in_chunks(JsonDecoder(), data, cuts) == messages


@given(
    st.lists(
        st.text(
            alphabet=st.characters(blacklist_characters="\n\r", blacklist_categories=("Cs",)),
            max_size=40,
        ),
        max_size=8,
    ),
    cut_lists,
)
def test_line_any_split_yields_the_same_lines(lines: list[str], cuts: list[int]) -> None:
    data = b"".join(line.encode() + b"\n" for line in lines)
    cuts = [c % (len(data) + 1) for c in cuts]
    assert feed_in_chunks(LineDecoder(), data, cuts) == [line.encode() for line in lines]


@given(st.binary(max_size=600), cut_lists)
def test_random_bytes_raise_only_the_codecs_error(data: bytes, cuts: list[int]) -> None:
    cuts = [c % (len(data) + 1) for c in cuts]
    for decoder in (LabDecoder(max_message_bytes=256), JsonDecoder(256), LineDecoder(256)):
        try:
            feed_in_chunks(decoder, data, cuts)
            decoder.feed(b"")
            drain(decoder)
        except PeerProtocolError:
            pass
    with contextlib.suppress(PeerProtocolError):
        detect_dialect(data)


def test_the_header_is_the_seeds_64_bytes_both_ways() -> None:
    # The seed's client: f"{len(msg):<{64}}".encode() + msg, with HEADER = 64.
    seed_frame = b"11" + b" " * 62 + b"hello world"
    assert encode_lab_frame(b"hello world") == seed_frame
    decoder = LabDecoder()
    decoder.feed(seed_frame[:63])
    assert decoder.next_frame() is None  # one byte short of a header
    decoder.feed(seed_frame[63:])
    assert decoder.next_frame() == b"hello world"
    assert LAB_HEADER_BYTES == 64


# -- one rule for a lab header, first frame or later; errors show escaped bytes ------------

NOT_SPACE_PADDED = [
    pytest.param(b"5\x00".ljust(64), id="nul-after"),
    pytest.param(b"5" + b"\x00" * 63, id="nul-padded"),
    pytest.param(b"\x005".ljust(64), id="nul-before"),
    pytest.param(b"5\t".ljust(64), id="tab"),
    pytest.param(b"5\r".ljust(64), id="carriage-return"),
    pytest.param(b"5\n".ljust(64), id="newline"),
    pytest.param(b"5\x0b".ljust(64), id="vertical-tab"),
]


@pytest.mark.parametrize("header", NOT_SPACE_PADDED)
def test_a_header_not_padded_with_spaces_is_refused_first_and_later(header: bytes) -> None:
    # As a first frame: refused outright, not taken for lab at all, or refused by the parser.
    with contextlib.suppress(PeerProtocolError):
        if detect_dialect(header + b"hello") is Dialect.LAB:
            first = LabDecoder()
            first.feed(header + b"hello")
            with pytest.raises(PeerProtocolError, match="padded with spaces"):
                first.next_frame()
    # After a valid frame: the same refusal.
    decoder = LabDecoder()
    decoder.feed(encode_lab_frame(b"first") + header + b"hello")
    assert decoder.next_frame() == b"first"
    with pytest.raises(PeerProtocolError) as info:
        decoder.next_frame()
    assert info.value.code == "bad_header" and info.value.fatal
    assert whole_lab_frame(header + b"hello", 1024) is None


def test_a_header_with_spaces_on_both_sides_is_one_rule_too() -> None:
    header = b"   5".ljust(64)
    assert detect_dialect(header) is Dialect.LAB
    decoder = LabDecoder()
    decoder.feed(encode_lab_frame(b"first") + header + b"hello")
    assert drain(decoder) == [b"first", b"hello"]


@pytest.mark.parametrize(
    ("header", "shown"),
    [
        pytest.param(b"+5".ljust(64), "'+5'", id="plus"),
        pytest.param(b"5\x00".ljust(64), "'5\\x00'", id="nul"),
        pytest.param(b"5\xff\\".ljust(64), "'5\\xff\\x5c'", id="high-byte-and-backslash"),
        pytest.param(b"1" * 30 + b"x".ljust(34), "'" + "1" * 20 + "...'", id="cut"),
    ],
)
def test_a_bad_header_is_shown_as_escaped_bytes_not_a_repr(header: bytes, shown: str) -> None:
    decoder = LabDecoder()
    decoder.feed(header)  # from the decoder's bytearray, which a repr would show
    with pytest.raises(PeerProtocolError) as info:
        decoder.next_frame()
    assert info.value.message.endswith(f"got {shown}")
    assert "bytearray" not in info.value.message and "b'" not in info.value.message


@pytest.mark.parametrize(
    ("data", "shown"),
    [
        pytest.param(b"", "", id="empty"),
        pytest.param(b"ok +5 ~", "ok +5 ~", id="printable"),
        pytest.param(b"\x00\x1f\x7f\x80\xff", "\\x00\\x1f\\x7f\\x80\\xff", id="control-and-high"),
        pytest.param(b"a\\b'c", "a\\x5cb'c", id="backslash"),
    ],
)
def test_escape_bytes(data: bytes, shown: str) -> None:
    assert escape_bytes(data) == shown
    assert escape_bytes(bytearray(data)) == shown


# -- json: what decodes is Unicode text and finite numbers ----------------------------------


@pytest.mark.parametrize(
    ("line", "code"),
    [
        pytest.param(b'{"id": "\\ud800"}', "bad_encoding", id="lone-high"),
        pytest.param(b'{"text": "a\\uDC80b"}', "bad_encoding", id="lone-low-upper-case"),
        pytest.param(b'{"text": "\\ude00\\ud83d"}', "bad_encoding", id="pair-reversed"),
        pytest.param(b'{"\\ud800": 1}', "bad_encoding", id="in-a-key"),
        pytest.param(b'{"a": [1, {"b": ["\\udfff"]}]}', "bad_encoding", id="nested"),
        pytest.param(b'{"id": NaN}', "bad_json", id="nan"),
        pytest.param(b'{"id": Infinity}', "bad_json", id="infinity"),
        pytest.param(b'{"id": -Infinity}', "bad_json", id="minus-infinity"),
        pytest.param(b'{"id": 1e400}', "bad_json", id="overflow"),
        pytest.param(b'{"id": -1e400}', "bad_json", id="negative-overflow"),
        pytest.param(b'{"id": 1' + b"0" * 400 + b".0}", "bad_json", id="long-float"),
    ],
)
def test_json_refuses_lone_surrogates_and_non_finite_numbers(line: bytes, code: str) -> None:
    decoder = JsonDecoder()
    decoder.feed(line + b'\n{"ok": 1}\n')
    with pytest.raises(PeerProtocolError) as info:
        decoder.next_frame()
    assert info.value.code == code and not info.value.fatal
    assert decoder.next_frame() == {"ok": 1}  # the stream goes on

    unterminated = JsonDecoder()  # complete without its newline: refused at once
    unterminated.feed(line)
    with pytest.raises(PeerProtocolError) as info:
        unterminated.next_frame()
    assert info.value.code == code
    assert not unterminated.has_partial


@pytest.mark.parametrize(
    ("line", "value"),
    [
        pytest.param(b'{"t": "\\ud83d\\ude00"}', {"t": "😀"}, id="surrogate-pair"),
        pytest.param(b'{"t": "\\\\ud800"}', {"t": "\\ud800"}, id="escaped-backslash"),
        pytest.param(b'{"t": "\\ud7ff\\ue000"}', {"t": "\ud7ff\ue000"}, id="around-surrogates"),
        pytest.param(b'{"n": 1e-400}', {"n": 0.0}, id="underflow-is-zero"),
        pytest.param(b'{"n": -1.5e300}', {"n": -1.5e300}, id="big-finite"),
    ],
)
def test_json_still_accepts_what_is_unicode_and_finite(line: bytes, value: dict[str, Any]) -> None:
    decoder = JsonDecoder()
    decoder.feed(line + b"\n")
    assert decoder.next_frame() == value


def test_json_unterminated_object_with_nan_waits_until_complete() -> None:
    decoder = JsonDecoder()
    decoder.feed(b'{"n": NaN, "t": "a}')  # the "}" is inside a string still arriving
    assert decoder.next_frame() is None
    decoder.feed(b'"}')
    with pytest.raises(PeerProtocolError) as info:
        decoder.next_frame()
    assert info.value.code == "bad_json"
    assert not decoder.has_partial


@pytest.mark.parametrize(
    "message",
    [
        pytest.param({"v": float("nan")}, id="nan"),
        pytest.param({"v": float("inf")}, id="infinity"),
        pytest.param({"v": "\udc80"}, id="lone-surrogate"),
        pytest.param({"\ud800": 1}, id="lone-surrogate-key"),
    ],
)
def test_encode_json_refuses_what_json_cannot_carry(message: dict[str, Any]) -> None:
    with pytest.raises(LocalProtocolError):
        encode_json(message)
