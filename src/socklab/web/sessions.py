"""Server-side web sessions: a random cookie token -> the browser's state.

The browser holds only an opaque token (cookie: HttpOnly, SameSite=Strict, Secure under
TLS) and the CSRF token the page was rendered with. The bank conversation (a
``BankSession``, logged in or not) lives here, so the PIN crosses the wire once, at login,
and is kept nowhere. Sessions idle for ``idle_s`` are dropped; past ``max_sessions`` the
least recently used one goes.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from socklab.services.base import Session

COOKIE_NAME = "socklab_session"
DEFAULT_IDLE_S = 15 * 60.0
DEFAULT_MAX_SESSIONS = 10_000


@dataclass(slots=True)
class WebSession:
    """One browser's state on the server."""

    token: str
    csrf: str
    client: str
    """The browser's address: the bank's per-address login limits count it."""
    last_used: float
    bank: Session | None = None
    account: int | None = None
    name: str = ""
    sessions: dict[str, Session] = field(default_factory=dict)
    """Playground sessions, one per service, opened on first use."""

    def is_csrf_valid(self, token: str | None) -> bool:
        """Whether ``token`` is this session's CSRF token (constant-time compare)."""
        return token is not None and hmac.compare_digest(token.encode(), self.csrf.encode())

    def close(self) -> None:
        """Close every service session this browser had open."""
        if self.bank is not None:
            self.bank.close()
            self.bank = None
        for session in self.sessions.values():
            session.close()
        self.sessions.clear()
        self.account = None


class SessionStore:
    """Every live web session, least recently used first."""

    def __init__(
        self,
        *,
        idle_s: float = DEFAULT_IDLE_S,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.idle_s = idle_s
        self.max_sessions = max_sessions
        self._clock = clock
        self._sessions: OrderedDict[str, WebSession] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, client: str) -> WebSession:
        """A new anonymous session for a browser at ``client``."""
        self.expire()
        while len(self._sessions) >= self.max_sessions:
            _, oldest = self._sessions.popitem(last=False)
            oldest.close()
        session = WebSession(
            token=secrets.token_urlsafe(32),
            csrf=secrets.token_urlsafe(32),
            client=client,
            last_used=self._clock(),
        )
        self._sessions[session.token] = session
        return session

    def get(self, token: str | None) -> WebSession | None:
        """The live session of ``token``, or ``None`` (unknown or expired)."""
        if not token:
            return None
        session = self._sessions.get(token)
        if session is None:
            return None
        now = self._clock()
        if now - session.last_used > self.idle_s:
            self.drop(session)
            return None
        session.last_used = now
        self._sessions.move_to_end(token)
        return session

    def rotate(self, session: WebSession) -> None:
        """New cookie and CSRF tokens for ``session`` (at login: no session fixation)."""
        self._sessions.pop(session.token, None)
        session.token = secrets.token_urlsafe(32)
        session.csrf = secrets.token_urlsafe(32)
        self._sessions[session.token] = session

    def drop(self, session: WebSession) -> None:
        """Forget ``session`` and close what it had open."""
        self._sessions.pop(session.token, None)
        session.close()

    def expire(self) -> None:
        """Drop the sessions idle for longer than ``idle_s``."""
        now = self._clock()
        while self._sessions:
            token, oldest = next(iter(self._sessions.items()))
            if now - oldest.last_used <= self.idle_s:
                return
            del self._sessions[token]
            oldest.close()

    def close_all(self) -> None:
        """Close every session (the web server stops)."""
        for session in self._sessions.values():
            session.close()
        self._sessions.clear()
