"""One rule for a lab header on a real connection, first frame or later."""

from __future__ import annotations

import pytest

from helpers import recv_all, running_server
from socklab.services.text import TextService
from socklab.wire.framing import encode_lab_frame


@pytest.mark.parametrize("header", [b"5\x00".ljust(64), b"5\t".ljust(64)], ids=["nul", "tab"])
def test_a_header_padded_with_other_than_spaces_is_refused_after_a_good_frame(
    header: bytes,
) -> None:
    with running_server(TextService()) as server, server.connect() as sock:
        sock.sendall(encode_lab_frame(b"Ab") + header + b"hello")
        data = recv_all(sock)  # the first answer, then one error line and the close
    answer, error = data.split(b"ERROR ", 1)
    assert answer == b"[Lower Case] ab [Upper Case] AB"
    assert error.startswith(b"bad_header: ") and error.count(b"\n") == 1
    shown = header.rstrip(b" ").replace(b"\x00", b"\\x00").replace(b"\t", b"\\x09")
    assert error.rstrip(b"\n").endswith(b"got '" + shown + b"'")


def test_a_nul_padded_header_is_refused_as_a_first_frame_too() -> None:
    with running_server(TextService()) as server, server.connect() as sock:
        sock.sendall(b"5\x00".ljust(64) + b"hello")
        assert recv_all(sock).startswith(b"ERROR ")
