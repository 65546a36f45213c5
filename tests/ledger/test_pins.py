"""PIN hashing: salted scrypt, constant-time checks, nothing readable stored."""

from __future__ import annotations

import pytest

from socklab.errors import InvalidRequest
from socklab.ledger import pins


def test_a_hash_verifies_its_pin_only() -> None:
    stored = pins.hash_pin("1234")
    assert pins.verify_pin("1234", stored)
    for wrong in ("1235", "12345", "", "1234 ", None, 1234):
        assert not pins.verify_pin(wrong, stored)


def test_hashes_are_salted_and_carry_their_parameters() -> None:
    first, second = pins.hash_pin("1234"), pins.hash_pin("1234")
    assert first != second
    scheme, n, r, p, salt, digest = first.split("$")
    assert (scheme, int(n), int(r), int(p)) == ("scrypt", pins.SCRYPT_N, pins.SCRYPT_R, 1)
    assert len(bytes.fromhex(salt)) == pins.SALT_BYTES
    assert len(bytes.fromhex(digest)) == pins.HASH_BYTES
    assert "1234" not in first.replace(salt, "").replace(digest, "")


def test_old_parameters_still_verify() -> None:
    salt = bytes(16)
    digest = pins._scrypt("1234", salt, 2**10, 8, 1)
    stored = f"scrypt${2**10}$8$1${salt.hex()}${digest.hex()}"
    assert pins.verify_pin("1234", stored)


@pytest.mark.parametrize("stored", [None, "", "md5$abc", "scrypt$x$8$1$00$00", "scrypt$1$2"])
def test_no_or_broken_hashes_never_verify(stored: str | None) -> None:
    assert not pins.verify_pin("1234", stored)


@pytest.mark.parametrize("pin", ["1234", "000000000000", "98765"])
def test_good_pin_formats(pin: str) -> None:
    assert pins.check_pin_format(pin) == pin


@pytest.mark.parametrize("pin", ["", "123", "1234567890123", "12a4", "١٢٣٤", " 1234", None, 1234])
def test_bad_pin_formats(pin: object) -> None:
    with pytest.raises(InvalidRequest) as info:
        pins.check_pin_format(pin)
    assert str(info.value) == "a PIN must be 4 to 12 digits"  # never echoes the PIN
