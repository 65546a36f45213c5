"""Primality against sympy.isprime (the reference), on the numbers that fool weaker tests."""

from __future__ import annotations

import random

import gmpy2
import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

from socklab.services.primality import (
    DETERMINISTIC_LIMIT,
    MR_BASES,
    SIEVE_LIMIT,
    is_prime,
    quick_verdict,
)

CARMICHAEL = [561, 1105, 1729, 2465, 2821, 6601, 8911, 10585, 15841, 29341, 41041, 46657,
              52633, 62745, 63973, 75361, 101101, 115921, 126217, 162401, 172081, 188461,
              252601, 278545, 294409, 314821, 334153, 340561, 399001, 410041, 449065,
              488881, 512461]  # fmt: skip


def chernick(k: int) -> int:
    """(6k+1)(12k+1)(18k+1): a Carmichael number when all three factors are prime."""
    return (6 * k + 1) * (12 * k + 1) * (18 * k + 1)


# k with three prime factors (found with a search): 22, 40, 64 and 124 digits.
CHERNICK_K = [1_000_051, 1_000_000_001_121, 10**20 + 8960, 10**40 + 32560]

# The least strong pseudoprime to all of the first 1, 2, 3, ... prime bases (OEIS A014233).
STRONG_PSEUDOPRIMES = [
    2047,
    1373653,
    25326001,
    3215031751,
    2152302898747,
    3474749660383,
    341550071728321,
    3825123056546413051,
    318665857834031151167461,
    3317044064679887385961981,
]

# Strong Lucas pseudoprimes (OEIS A217255): they fool the Lucas half of BPSW, not the other.
STRONG_LUCAS_PSEUDOPRIMES = [5459, 5777, 10877, 16109, 18971, 22499, 24569, 25199, 40309, 58519]

MERSENNE_PRIME_EXPONENTS = [61, 89, 107, 127, 521, 607, 1279, 2203]
# Prime p with 2**p - 1 composite: these are strong pseudoprimes to base 2, so only the
# Lucas half of BPSW catches them above the deterministic range.
MERSENNE_COMPOSITE_EXPONENTS = [67, 101, 103, 109, 137, 257, 523]


def test_agrees_with_sympy_below_ten_thousand() -> None:
    assert [n for n in range(-10, 10_000) if is_prime(n) != sympy.isprime(n)] == []


def test_agrees_with_sympy_around_the_sieve_limit() -> None:
    numbers = range(SIEVE_LIMIT - 2_000, SIEVE_LIMIT + 20_000)
    assert [n for n in numbers if is_prime(n) != sympy.isprime(n)] == []


def test_agrees_with_sympy_around_the_deterministic_limit() -> None:
    numbers = range(DETERMINISTIC_LIMIT - 3_000, DETERMINISTIC_LIMIT + 3_000)
    assert [n for n in numbers if is_prime(n) != sympy.isprime(n)] == []


def test_zero_one_and_negatives_are_not_prime() -> None:
    assert [n for n in (0, 1, -1, -2, -3, -7, -97, -(2**127 - 1)) if is_prime(n)] == []


def test_accepts_gmpy2_integers() -> None:
    assert is_prime(gmpy2.mpz(2**127 - 1))
    assert not is_prime(gmpy2.mpz(2**128 + 1))


@pytest.mark.parametrize("n", CARMICHAEL, ids=str)
def test_carmichael_numbers_are_composite(n: int) -> None:
    assert sympy.factorint(n) and not sympy.isprime(n)
    assert not is_prime(n)


@pytest.mark.parametrize("k", CHERNICK_K, ids=lambda k: f"{len(str(chernick(k)))}-digits")
def test_large_carmichael_numbers_are_composite(k: int) -> None:
    assert all(sympy.isprime(f) for f in (6 * k + 1, 12 * k + 1, 18 * k + 1))
    n = chernick(k)
    assert pow(2, n - 1, n) == 1  # a Fermat test would call it prime
    assert not is_prime(n)


@pytest.mark.parametrize("n", STRONG_PSEUDOPRIMES, ids=str)
def test_strong_pseudoprimes_to_small_bases_are_composite(n: int) -> None:
    assert gmpy2.is_strong_prp(n, 2)  # fools a Miller-Rabin test to base 2
    assert not sympy.isprime(n)
    assert not is_prime(n)


def test_the_deterministic_limit_is_a_strong_pseudoprime_to_every_base_used() -> None:
    assert all(gmpy2.is_strong_prp(DETERMINISTIC_LIMIT, base) for base in MR_BASES)
    assert not is_prime(DETERMINISTIC_LIMIT)


@pytest.mark.parametrize("n", STRONG_LUCAS_PSEUDOPRIMES, ids=str)
def test_strong_lucas_pseudoprimes_are_composite(n: int) -> None:
    assert gmpy2.is_strong_selfridge_prp(n)  # fools the Lucas test alone
    assert not is_prime(n)


@pytest.mark.parametrize("p", MERSENNE_PRIME_EXPONENTS, ids=lambda p: f"2**{p}-1")
def test_mersenne_primes_and_their_neighbours(p: int) -> None:
    m = 2**p - 1
    assert is_prime(m)
    for neighbour in (m - 2, m + 2, m - 1, m + 1, 2**p + 3):
        assert is_prime(neighbour) == sympy.isprime(neighbour), neighbour


@pytest.mark.parametrize("p", MERSENNE_COMPOSITE_EXPONENTS, ids=lambda p: f"2**{p}-1")
def test_composite_mersenne_numbers_are_caught_by_the_lucas_test(p: int) -> None:
    m = 2**p - 1
    assert gmpy2.is_strong_prp(m, 2)  # a strong pseudoprime to base 2
    assert quick_verdict(m) is None  # no small factor: trial division does not settle it
    assert not is_prime(m)


@pytest.mark.parametrize("n", [5, 6, 7, 8, 9, 10, 11], ids=lambda n: f"F{n}")
def test_composite_fermat_numbers_are_composite(n: int) -> None:
    fermat = 2 ** (2**n) + 1
    assert gmpy2.is_strong_prp(fermat, 2)  # every composite Fermat number fools base 2
    assert not is_prime(fermat)


@pytest.mark.parametrize("digits", [10, 13, 20, 30, 60, 100, 200], ids=lambda d: f"{d}-digit")
def test_products_of_two_large_primes_are_composite(digits: int) -> None:
    rng = random.Random(digits)
    p = int(gmpy2.next_prime(rng.randrange(10 ** (digits - 1), 10**digits)))
    q = int(gmpy2.next_prime(rng.randrange(10 ** (digits - 1), 10**digits)))
    r = int(gmpy2.next_prime(2 * p))
    assert is_prime(p) and is_prime(q) and is_prime(r)
    for composite in (p * q, p * p, p * r, p * p * p):
        assert not is_prime(composite)


def test_squares_of_large_primes_are_settled_before_the_probable_prime_tests() -> None:
    p = int(gmpy2.next_prime(10**30))
    assert quick_verdict(p * p) is False
    assert not is_prime(p * p)


@pytest.mark.parametrize("digits", [25, 40, 100, 300], ids=lambda d: f"{d}-digit")
def test_primes_and_next_composites_agree_with_sympy(digits: int) -> None:
    rng = random.Random(digits)
    for _ in range(20):
        n = int(gmpy2.next_prime(rng.randrange(10 ** (digits - 1), 10**digits)))
        assert is_prime(n) and sympy.isprime(n)
        assert not is_prime(n + 2) or sympy.isprime(n + 2)


def test_a_ten_thousand_digit_number_is_decided_by_trial_division_in_milliseconds() -> None:
    n = 10**9999 + 1  # divisible by 11
    assert quick_verdict(n) is False
    assert not is_prime(n)


BIT_SIZES = [2, 8, 16, 17, 24, 32, 48, 64, 65, 80, 81, 82, 100, 128, 200, 256, 512]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(BIT_SIZES).flatmap(lambda bits: st.integers(0, 2**bits)))
def test_random_numbers_of_many_sizes_agree_with_sympy(n: int) -> None:
    assert is_prime(n) == sympy.isprime(n)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(BIT_SIZES).flatmap(lambda bits: st.integers(0, 2**bits)))
def test_numbers_near_primes_agree_with_sympy(start: int) -> None:
    """Random numbers are mostly even or have small factors; these are harder."""
    p = int(gmpy2.next_prime(start))
    for n in (p, p + 2, p * int(gmpy2.next_prime(p))):
        assert is_prime(n) == sympy.isprime(n), n


@settings(max_examples=200, deadline=None)
@given(st.integers(-(2**300), 2**300))
def test_quick_verdict_never_contradicts_is_prime(n: int) -> None:
    verdict = quick_verdict(n)
    assert verdict is None or verdict == is_prime(n)
