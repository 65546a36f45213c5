"""Per-address limits of the bank: a token bucket of logins per client address.

A login costs a salted scrypt check (about 30 ms of CPU, on purpose), also for an account
that does not exist (so that timing does not reveal which accounts exist). Without a
limit, one client sending logins as fast as it can keeps the hashing busy and the other
clients wait. Each client address gets ``burst`` logins at once and ``rate_per_s`` more
per second after that. A login past the limit waits for its token if that takes at most
``max_wait_s`` (a delay that grows with the excess), else it is refused at once
(``TooManyLogins``); either way before any hashing, whatever the account.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

MAX_TRACKED_CLIENTS = 65_536
"""Addresses remembered at most; past that, the least recently seen are forgotten (a
forgotten address starts again with a full bucket)."""


class LoginRateLimiter:
    """A token bucket per client address, on an injected monotonic clock."""

    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        *,
        max_wait_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = MAX_TRACKED_CLIENTS,
    ) -> None:
        """Raises ``ValueError`` for a rate, burst or client count that is not positive,
        or a negative ``max_wait_s``."""
        if not rate_per_s > 0 or burst < 1 or max_clients < 1 or not max_wait_s >= 0:
            raise ValueError("the login rate, burst and client count must be positive")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_wait_s = max_wait_s
        self._clock = clock
        self._max_clients = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}
        """address -> (tokens, when counted), least recently used first. Tokens go below
        zero for logins waiting for theirs."""

    def acquire(self, client: str) -> float | None:
        """Take a login token for ``client``: the seconds to wait for it (0.0: at once),
        or ``None`` if that would be more than ``max_wait_s`` (nothing taken)."""
        now = self._clock()
        tokens, then = self._buckets.pop(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + max(0.0, now - then) * self.rate_per_s)
        wait_s: float | None = max(0.0, (1.0 - tokens) / self.rate_per_s)
        if wait_s is not None and wait_s > self.max_wait_s:
            wait_s = None
        else:
            tokens -= 1.0
        self._buckets[client] = (tokens, now)  # now the most recently used
        while len(self._buckets) > self._max_clients:
            del self._buckets[next(iter(self._buckets))]
        return wait_s

    def retry_after(self, client: str) -> float:
        """Seconds until ``client`` could get a token without waiting."""
        tokens, then = self._buckets.get(client, (float(self.burst), self._clock()))
        tokens += max(0.0, self._clock() - then) * self.rate_per_s
        return max(0.0, (1.0 - tokens) / self.rate_per_s)

    def __len__(self) -> int:
        return len(self._buckets)


def whole_seconds(wait_s: float) -> int:
    """A wait for a message: whole seconds, at least 1."""
    return max(1, math.ceil(wait_s))
