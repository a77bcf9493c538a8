"""Who may use the dashboard: one login token, sessions kept in memory, a CSRF token per session.

The login token is compared in constant time. A session is a random id in an HttpOnly,
SameSite=Strict cookie (Secure under TLS); every POST but the login must carry the session's
CSRF token. Sessions end after SESSION_S or at logout, and all of them when the process stops.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

#: How long a session lasts from login.
SESSION_S = 12 * 3600
#: Sessions kept at most (the oldest goes first): a bound on memory, whoever logs in.
MAX_SESSIONS = 1000
COOKIE = "queuectl_session"


@dataclass
class Session:
    """One logged-in browser."""

    id: str
    csrf: str
    expires_at: float  #: monotonic
    flashes: list[tuple[str, str]] = field(default_factory=list)  #: (kind, message) shown once


class Sessions:
    """The sessions of one web process, and the token that opens one."""

    def __init__(self, token: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._token = token.encode()
        self._clock = clock
        self._by_id: dict[str, Session] = {}

    def _now(self) -> float:
        return self._clock()

    def token_ok(self, token: str) -> bool:
        """Whether `token` is the login token (constant time)."""
        return bool(token) and hmac.compare_digest(token.encode(), self._token)

    def login(self, token: str) -> Session | None:
        """A new session for the right token; None for a wrong one."""
        if not self.token_ok(token):
            return None
        while len(self._by_id) >= MAX_SESSIONS:
            self._by_id.pop(next(iter(self._by_id)))
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), self._now() + SESSION_S)
        self._by_id[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session of a cookie's value, or None."""
        session = self._by_id.get(session_id or "")
        if session is None:
            return None
        if session.expires_at <= self._now():
            del self._by_id[session.id]
            return None
        return session

    def logout(self, session_id: str | None) -> None:
        """End a session (no error when there is none)."""
        self._by_id.pop(session_id or "", None)


def csrf_ok(session: Session, sent: str) -> bool:
    """Whether a form's CSRF token is its session's (constant time)."""
    return bool(sent) and hmac.compare_digest(sent.encode(), session.csrf.encode())
