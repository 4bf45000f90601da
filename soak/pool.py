"""The sessions the soak's clients share, and what each of them has seen stored for it.

A session is borrowed for one step and may be used by several clients at once (that is how
concurrent refreshes across workers happen). Retiring a session for a logout takes it out of
the pool first and waits until nobody uses it, so no client sends a request with a session it
believes live after the logout has begun.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import requests

from gateway.sessions.credentials import SessionCredential
from gateway.sessions.model import Identity, Session, TokenSet
from gateway.sessions.store import SessionStore

LOGIN = "login"  # made by a full browser login through both IdPs; its tokens refresh
DIRECT = "direct"  # written straight into Redis with fixed tokens (`gateway session create`)
PROVIDERS = ("primary", "gitlab")


@dataclass(eq=False)
class LiveSession:
    credential: SessionCredential
    origin: str
    subject: str
    browser: requests.Session | None = None  # the cookie jar of a login, for its logout
    expires_at: int = 0  # the session's absolute end, unix seconds
    resident: bool = False  # never retired: lives through the run, so its tokens refresh
    tokens_seen: dict[str, dict[str, int]] = field(default_factory=dict)  # token -> expires_at
    in_use: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def remember(self, session: Session) -> None:
        """Note every access token stored for this session, with its expiry."""
        with self._lock:
            for provider, tokens in session.tokens.items():
                self.tokens_seen.setdefault(provider, {})[tokens.access_token] = tokens.expires_at

    def seen_expiry(self, provider: str, token: str) -> int | None:
        with self._lock:
            return self.tokens_seen.get(provider, {}).get(token)


class SessionPool:
    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._sessions: list[LiveSession] = []
        self._changed = threading.Condition()

    def add(self, live: LiveSession) -> None:
        with self._changed:
            self._sessions.append(live)

    def count(self, origin: str | None = None) -> int:
        with self._changed:
            return sum(1 for s in self._sessions if origin in (None, s.origin))

    def live(self) -> list[LiveSession]:
        with self._changed:
            return list(self._sessions)

    @contextmanager
    def borrow(self, origin: str | None = None) -> Iterator[LiveSession | None]:
        """A random live session (of ``origin``) for the duration of one step."""
        with self._changed:
            choices = [s for s in self._sessions if origin in (None, s.origin)]
            live = self._rng.choice(choices) if choices else None
            if live is not None:
                live.in_use += 1
        try:
            yield live
        finally:
            if live is not None:
                with self._changed:
                    live.in_use -= 1
                    self._changed.notify_all()

    def retire(self, origin: str, keep: int, timeout: float = 30.0) -> LiveSession | None:
        """Take a random non-resident session of ``origin`` out of the pool (leaving at
        least ``keep``) once no client uses it any more; None when there are too few."""
        with self._changed:
            choices = [s for s in self._sessions if s.origin == origin and not s.resident]
            if len(choices) <= keep:
                return None
            live = self._rng.choice(choices)
            self._sessions.remove(live)
            deadline = time.monotonic() + timeout
            while live.in_use and time.monotonic() < deadline:
                self._changed.wait(deadline - time.monotonic())
            return live


def write_session(
    store: SessionStore,
    subject: str,
    *,
    tokens: dict[str, str],
    lifetime: float,
) -> tuple[SessionCredential, Session]:
    """Write a session into Redis as the login app would, through one shared store.

    ``Stack.create_session`` does the same but builds a new Redis client per call, which
    thousands of short sessions would turn into thousands of connection pools."""
    now = time.time()
    return store.create(
        Identity(subject=subject, email=f"{subject}@example.org", name="Soak Client"),
        {
            provider: TokenSet(access_token=token, expires_at=int(now + 3600))
            for provider, token in tokens.items()
        },
        now,
        lifetime=lifetime,
    )
