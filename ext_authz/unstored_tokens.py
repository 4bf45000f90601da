"""Tokens a provider has issued that Redis has not accepted yet, served from this worker.

When a refresh's answer cannot be written (Redis at maxmemory, paused, restarting), the
provider has already retired the refresh token the session in Redis still carries, so the
answer must not be dropped: ext_authz.refresh keeps writing it, and meanwhile this worker
lays it over the session it loads. Only over a session that still carries the refresh token
the refresh used: a logout or revocation (no session), or newer tokens written by someone
else, always win over what is held here. Nothing here stands in for Redis: a session that
cannot be loaded is not served from memory (a revocation could not be seen).
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.sessions.model import Session, TokenSet


@dataclass(frozen=True)
class UnstoredRefresh:
    used_refresh_token: str
    tokens: TokenSet


class UnstoredTokens:
    """(session lookup id, provider) -> the refresh whose write Redis has not taken yet.

    An entry lives only while its refresh task retries the write, so there are at most as
    many as refreshes in flight.
    """

    def __init__(self) -> None:
        self._by_session: dict[str, dict[str, UnstoredRefresh]] = {}

    def hold(self, lookup_id: str, provider_id: str, used_refresh_token: str, tokens: TokenSet):
        """Serve ``tokens`` over sessions that still carry ``used_refresh_token``."""
        held = self._by_session.setdefault(lookup_id, {})
        held[provider_id] = UnstoredRefresh(used_refresh_token, tokens)

    def release(self, lookup_id: str, provider_id: str) -> None:
        """The write was accepted (or will never be): Redis is the truth again."""
        held = self._by_session.get(lookup_id)
        if held is not None:
            held.pop(provider_id, None)
            if not held:
                del self._by_session[lookup_id]

    def over(self, lookup_id: str, session: Session) -> Session:
        """``session`` (as loaded from Redis) with the tokens held for it laid over it."""
        held = self._by_session.get(lookup_id)
        if not held:
            return session
        for provider_id, refresh in held.items():
            stored = session.tokens.get(provider_id)
            if stored is not None and stored.refresh_token == refresh.used_refresh_token:
                session = session.with_tokens(provider_id, refresh.tokens)
        return session

    def __len__(self) -> int:
        return sum(len(held) for held in self._by_session.values())
