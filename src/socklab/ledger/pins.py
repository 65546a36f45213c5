"""PINs: format check, salted scrypt hash, constant-time verification.

Hashing costs ~30 ms of CPU on purpose (an offline guesser pays it too), so callers run
these functions in a thread, never on the event loop, through a ``PinHasher``: it bounds
the hashes computed at once, so that a flood of logins cannot take every core from the
event loop and the other clients. A PIN never leaves this module in
a message, a log line or a repr; the stored form is ``scrypt$n$r$p$salt_hex$hash_hex``,
so the cost can be raised later without invalidating stored hashes.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import re

from socklab.errors import InvalidRequest

SCRYPT_N = 2**13
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32
_MAXMEM = 64 * 1024 * 1024
_PIN_RE = re.compile(r"[0-9]{4,12}")


def check_pin_format(pin: object) -> str:
    """Return ``pin`` if it is 4 to 12 ASCII digits. Raises ``InvalidRequest``."""
    if isinstance(pin, str) and _PIN_RE.fullmatch(pin):
        return pin
    raise InvalidRequest("a PIN must be 4 to 12 digits")


def _scrypt(pin: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        pin.encode("utf-8", "surrogatepass"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        maxmem=_MAXMEM,
        dklen=HASH_BYTES,
    )


def hash_pin(pin: str) -> str:
    """The stored form of ``pin`` with a fresh salt. Slow: call it in a thread."""
    salt = os.urandom(SALT_BYTES)
    digest = _scrypt(pin, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


_DUMMY_HASH = hash_pin("0000")


def verify_pin(pin: object, stored: str | None) -> bool:
    """Whether ``pin`` matches ``stored``. Slow: call it in a thread.

    With ``stored=None`` (unknown account, or an account without a PIN) it still spends
    the time of a real check and returns False, so timing does not reveal which accounts
    exist.
    """
    if stored is None:
        stored, usable = _DUMMY_HASH, False
    else:
        usable = True
    try:
        scheme, n, r, p, salt_hex, digest_hex = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = bytes.fromhex(digest_hex)
        candidate = pin if isinstance(pin, str) else ""
        actual = _scrypt(candidate, bytes.fromhex(salt_hex), int(n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected) and usable and isinstance(pin, str)


class PinHasher:
    """``hash_pin`` and ``verify_pin`` in threads, at most ``concurrency`` at once; the
    others wait their turn (in order). Create it on the event loop that uses it."""

    def __init__(self, concurrency: int) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._slots = asyncio.Semaphore(concurrency)

    async def hash(self, pin: str) -> str:
        """``hash_pin(pin)`` in a thread."""
        async with self._slots:
            return await asyncio.to_thread(hash_pin, pin)

    async def verify(self, pin: object, stored: str | None) -> bool:
        """``verify_pin(pin, stored)`` in a thread (as slow for ``stored=None``)."""
        async with self._slots:
            return await asyncio.to_thread(verify_pin, pin, stored)
