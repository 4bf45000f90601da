"""What a session store offers, one Protocol per flavour.

The blocking flavour (:class:`SyncSessions`, implemented by ``store.SessionStore``) serves
the login app and the operator CLI: it starts, saves and ends sessions and keeps the indexes
"log out everywhere" and back-channel logout work from. The asyncio flavour
(:class:`AsyncSessions`, ``store.AsyncSessionStore``) serves ext_authz's checks: it reads
sessions on the request path and stores refreshed tokens. A method both have means the
same in both; each flavour has only what its servers use.

Every method raises :class:`gateway.errors.StoreUnavailable` when Redis cannot answer, and
:class:`gateway.errors.SessionInvalid` where a record no longer opens.
"""

from __future__ import annotations

from typing import Protocol

from gateway.sessions.credentials import SessionCredential
from gateway.sessions.model import Identity, Session, TokenSet
from gateway.sessions.refresh_lock import RefreshLock


class SyncSessions(Protocol):
    def create(
        self,
        identity: Identity,
        tokens: dict[str, TokenSet],
        now: float,
        *,
        lifetime: float | None = None,
        not_after: int | None = None,
    ) -> tuple[SessionCredential, Session]:
        """Start a session at ``now`` under a fresh credential and save it."""
        ...

    def save(self, credential: SessionCredential, session: Session) -> None:
        """Write the session (a new one, or a new state of one) and index it."""
        ...

    def load(self, credential: SessionCredential) -> Session | None:
        """The live session; None when there is none or it has expired. (The blocking
        store's reads do not slide the idle window: only use through ext_authz does.)"""
        ...

    def delete(self, credential: SessionCredential, session: Session | None = None) -> bool:
        """End one session (and drop its index entries when ``session`` is given)."""
        ...

    def lookup_ids_of_user(self, subject: str) -> list[str]:
        """The lookup ids a user's index names."""
        ...

    def delete_user_sessions(self, subject: str) -> int:
        """End every session of a user; returns how many records existed."""
        ...

    def delete_by_lookup_id(self, lookup_id: str, subject: str) -> bool:
        """End one session known by its lookup id and user; True when it existed."""
        ...

    def lookup_ids_of_provider_session(self, provider_session_id: str) -> list[str]:
        """The lookup ids of the sessions born from one IdP session."""
        ...

    def delete_provider_session(
        self, provider_session_id: str, keep: frozenset[str] = frozenset()
    ) -> int:
        """End every session born from one IdP session but those in ``keep``."""
        ...


class AsyncSessions(Protocol):
    async def load(self, credential: SessionCredential) -> Session | None:
        """The live session; None when there is none or it has expired. Slides the session's
        idle window when due (a check is use)."""
        ...

    async def reload(self, credential: SessionCredential) -> Session | None:
        """The session as Redis has it now, without sliding anything (around refreshes)."""
        ...

    async def replace_tokens(
        self,
        credential: SessionCredential,
        provider_id: str,
        tokens: TokenSet,
        *,
        used_refresh_token: str | None = None,
    ) -> Session | None:
        """Store one provider's new tokens; None when the session is gone."""
        ...

    def refresh_lock(self, lookup_id: str, provider_id: str, lease_ms: int) -> RefreshLock:
        """A new owner's (not yet taken) hold on one provider's refresh lock of a session."""
        ...

    async def keep_current(self) -> None:
        """Follow a new sentinel master, learn a cluster's layout."""
        ...

    async def close(self) -> None: ...
