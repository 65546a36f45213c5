"""Check functions the numbers tests inject into the worker processes.

A worker imports this module by name, so it stays small and imports nothing heavy.
"""

from __future__ import annotations

import time
from typing import Any

import gmpy2

from socklab.services.primality import is_prime

HANGING = int(gmpy2.next_prime(777 * 10**300))
"""A 303-digit prime that ``check_or_hang`` never finishes checking."""
ANSWERED = int(gmpy2.next_prime(10**300))
"""A 301-digit prime that ``check_or_hang`` answers at once."""


def check_or_hang(n: Any) -> bool:
    """``is_prime(n)``, except that numbers written with a leading 777 hang until killed."""
    if str(n).startswith("777"):
        time.sleep(3600)
    return is_prime(n)
