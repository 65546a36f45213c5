"""Primality of integers of any size, fast, on GMP (through gmpy2).

How this works, cheapest step first:

1. ``n < 2`` is not prime; ``n < 2**16`` is looked up in a sieve.
2. Trial division by the primes below 256 in one ``gcd`` with their product.
3. ``n < 3,317,044,064,679,887,385,961,981``: Miller–Rabin to the 13 prime bases
   2, 3, ..., 41, which is *deterministic* in that range (Sorenson and Webster, 2015:
   that number is the least strong pseudoprime to all of them).
4. Above it: trial division by every prime below 2**16 (one ``gcd`` with their product,
   ~2 ms at 10,000 digits), a perfect-square check, then BPSW (``gmpy2.is_strong_bpsw_prp``:
   a strong probable-prime test to base 2, then a strong Lucas test with Selfridge's
   parameters). No composite is known to pass BPSW.

Cost: the base-2 test is one modular exponentiation and rejects almost every composite;
a prime also pays the Lucas test, about three times as much. Both grow like digits**2.6
or so: milliseconds at 200-300 digits, seconds at 10,000 (the numbers service runs big
checks in worker processes). Every function here is a plain module-level function so
that it pickles into a ``ProcessPoolExecutor``.
"""

from __future__ import annotations

from typing import Any

import gmpy2

SIEVE_LIMIT = 1 << 16
"""Below this, primality is a table lookup."""

DETERMINISTIC_LIMIT = 3_317_044_064_679_887_385_961_981
"""Below this, Miller–Rabin to :data:`MR_BASES` is a proof."""

MR_BASES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41)


def _sieve(limit: int) -> bytearray:
    flags = bytearray([1]) * limit
    flags[0:2] = b"\x00\x00"
    for p in range(2, int(limit**0.5) + 1):
        if flags[p]:
            flags[p * p :: p] = bytes(len(range(p * p, limit, p)))
    return flags


_IS_SMALL_PRIME = _sieve(SIEVE_LIMIT)
_TINY_PRIMORIAL = gmpy2.primorial(255)  # the primes below 256: ~350 bits
_SMALL_PRIMORIAL = gmpy2.primorial(SIEVE_LIMIT - 1)  # the 6,542 primes below 2**16: ~94,000 bits


def quick_verdict(n: Any) -> bool | None:
    """``True``/``False`` when cheap steps settle whether ``n`` is prime, else ``None``.

    "Cheap" is at most a few milliseconds at 10,000 digits: everything but the
    probable-prime tests of step 4. ``n`` is an ``int`` or a ``gmpy2.mpz``; never raises.
    """
    if n < SIEVE_LIMIT:
        return n >= 2 and bool(_IS_SMALL_PRIME[n])
    if gmpy2.gcd(n, _TINY_PRIMORIAL) != 1:
        return False
    if n < DETERMINISTIC_LIMIT:
        return None
    if gmpy2.gcd(n, _SMALL_PRIMORIAL) != 1 or gmpy2.is_square(n):
        return False
    return None


def is_prime(n: Any) -> bool:
    """Whether ``n`` is prime: proven below :data:`DETERMINISTIC_LIMIT`, BPSW above.

    ``n`` is an ``int`` or a ``gmpy2.mpz`` of any sign; never raises.
    """
    verdict = quick_verdict(n)
    if verdict is not None:
        return verdict
    n = gmpy2.mpz(n)
    if n < DETERMINISTIC_LIMIT:
        return all(gmpy2.is_strong_prp(n, base) for base in MR_BASES)
    return bool(gmpy2.is_strong_bpsw_prp(n))
