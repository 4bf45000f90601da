"""In-memory, thread-safe storage for sessions, authorization codes and tokens.

The WSGI server is threaded, so every read-modify-write happens under one lock. Records
are never purged: a development provider lives for minutes, and keeping used codes and
revoked tokens around is what lets it detect replays.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterable

from devtools.dev_idp.models import AuthorizationCode, BrowserSession, Client, Token, User


class Store:
    """Holds every mutable record of one provider."""

    def __init__(self, clients: Iterable[Client], users: Iterable[User]):
        self._lock = threading.Lock()
        self._clients = {client.client_id: client for client in clients}
        self._users = {user.username: user for user in users}
        self._sessions_by_cookie: dict[str, BrowserSession] = {}
        self._codes: dict[str, AuthorizationCode] = {}
        self._nonces: set[tuple[str, str]] = set()
        self._by_access: dict[str, Token] = {}
        self._by_refresh: dict[str, Token] = {}

    # Registrations are fixed at start-up, so they need no lock.

    def client(self, client_id: str) -> Client | None:
        """The registered client with this id, if any."""
        return self._clients.get(client_id)

    def clients(self) -> list[Client]:
        """Every registered client."""
        return list(self._clients.values())

    def user(self, username: str) -> User | None:
        """The user with this username, if any."""
        return self._users.get(username)

    # Browser sessions

    def start_session(self, username: str) -> BrowserSession:
        """Create a new IdP login session for ``username``."""
        session = BrowserSession(
            cookie_value=secrets.token_urlsafe(32),
            sid=secrets.token_urlsafe(16),
            username=username,
            auth_time=int(time.time()),
        )
        with self._lock:
            self._sessions_by_cookie[session.cookie_value] = session
        return session

    def session_for_cookie(self, cookie_value: str | None) -> BrowserSession | None:
        """The live session a browser cookie points at, if any."""
        if not cookie_value:
            return None
        with self._lock:
            return self._sessions_by_cookie.get(cookie_value)

    def reauthenticate(self, session: BrowserSession) -> None:
        """Record a fresh password login in an existing session (``prompt=login``)."""
        with self._lock:
            session.auth_time = int(time.time())

    def add_client_to_session(self, sid: str, client_id: str) -> None:
        """Remember that ``client_id`` got a code in this session (for back-channel logout)."""
        with self._lock:
            session = self._find_session(sid)
            if session is not None:
                session.client_ids.add(client_id)

    def end_session(self, sid: str) -> BrowserSession | None:
        """Remove the session and revoke every token issued in it; return what was removed."""
        with self._lock:
            session = self._find_session(sid)
            if session is not None:
                del self._sessions_by_cookie[session.cookie_value]
            for token in self._by_access.values():
                if token.sid == sid:
                    token.access_revoked = token.refresh_revoked = True
            return session

    def _find_session(self, sid: str) -> BrowserSession | None:
        for session in self._sessions_by_cookie.values():
            if session.sid == sid:
                return session
        return None

    # Authorization codes

    def save_code(self, code: AuthorizationCode) -> None:
        """Store a freshly issued code and remember its nonce."""
        with self._lock:
            self._codes[code.code] = code
            if code.nonce:
                self._nonces.add((code.client_id, code.nonce))

    def nonce_was_used(self, client_id: str, nonce: str) -> bool:
        """True if a code was already issued to ``client_id`` with this nonce."""
        with self._lock:
            return (client_id, nonce) in self._nonces

    def redeem_code(self, code: str, client_id: str) -> tuple[AuthorizationCode | None, bool]:
        """Mark a code used; return it (or None if it cannot be redeemed) and whether the
        attempt was a replay.

        Marking happens on the first attempt, even one that later fails (wrong verifier,
        wrong redirect_uri): a code is single-use, as with Keycloak. A second attempt
        revokes every token issued from the code, per RFC 6749 §4.1.2.
        """
        with self._lock:
            record = self._codes.get(code)
            if record is None or record.client_id != client_id:
                return None, False
            if record.used:
                self._revoke_family(record.code)
                return None, True
            record.used = True
            if record.is_expired():
                return None, False
            return record, False

    # Tokens

    def save_token(self, token: Token) -> None:
        """Store a newly issued token response."""
        with self._lock:
            self._by_access[token.access_token] = token
            if token.refresh_token:
                self._by_refresh[token.refresh_token] = token

    def token_for_access(self, access_token: str) -> Token | None:
        """The record holding this access token, if any."""
        with self._lock:
            return self._by_access.get(access_token)

    def token_for_refresh(self, refresh_token: str) -> Token | None:
        """The record holding this refresh token, if any."""
        with self._lock:
            return self._by_refresh.get(refresh_token)

    def kind_of_token(self, value: str) -> str:
        """``access_token``, ``refresh_token`` or ``unknown``: for the stats only."""
        with self._lock:
            if value in self._by_access:
                return "access_token"
            if value in self._by_refresh:
                return "refresh_token"
            return "unknown"

    def retire_refresh_token(self, token: Token) -> None:
        """Invalidate a refresh token after it was rotated."""
        with self._lock:
            token.refresh_revoked = True
            token.rotated = True

    def access_token_records(self, access_tokens: Iterable[str]) -> dict[str, Token | None]:
        """The record of each access token (None for one never issued)."""
        with self._lock:
            return {value: self._by_access.get(value) for value in access_tokens}

    def revoke_access_token(self, token: Token) -> None:
        """Revoke one access token."""
        with self._lock:
            token.access_revoked = True

    def revoke_grant(self, grant_id: str) -> None:
        """Revoke every token descended from one authorization code."""
        with self._lock:
            self._revoke_family(grant_id)

    def _revoke_family(self, grant_id: str) -> None:
        for token in self._by_access.values():
            if token.grant_id == grant_id:
                token.access_revoked = token.refresh_revoked = True
