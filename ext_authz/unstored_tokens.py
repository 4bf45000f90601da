"""Tokens a provider has issued that Redis has not accepted yet: written until it does,
served from this worker meanwhile.

When a refresh's answer cannot be written (Redis at maxmemory, paused, restarting), the
provider has already retired the refresh token the session in Redis still carries, so the
answer must not be dropped: :class:`TokenWriter` keeps writing it (with backoff, for as long
as the session lives, the refresh lock held), and meanwhile this worker lays it over the
session it loads (:class:`UnstoredTokens`). Only over a session that still carries the refresh token
the refresh used: a logout or revocation (no session), or newer tokens written by someone
else, always win over what is held here. Nothing here stands in for Redis: a session that
cannot be loaded is not served from memory (a revocation could not be seen).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.errors import StoreUnavailable
from gateway.sessions.credentials import SessionCredential
from gateway.sessions.interface import AsyncSessions
from gateway.sessions.model import Session, TokenSet
from gateway.sessions.refresh_lock import RefreshLock

logger = logging.getLogger(__name__)

# Backoff of a write of refreshed tokens that Redis refused: soon after a blip, no faster
# than once a second during a long outage.
FIRST_WRITE_RETRY = 0.05
LAST_WRITE_RETRY = 1.0
Sleep = Callable[[float], Awaitable[None]]


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


class TokenWriter:
    """Writes a refresh's answer until Redis takes it, holding it in :class:`UnstoredTokens`
    while Redis refuses."""

    def __init__(
        self,
        store: AsyncSessions,
        unstored: UnstoredTokens,
        clock: Callable[[], float],
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._store = store
        self._unstored = unstored
        self._clock = clock
        self._sleep = sleep  # the backoff (tests count it instead)

    async def store(
        self,
        credential: SessionCredential,
        provider_id: str,
        fresh: TokenSet,
        used_refresh_token: str,
        not_after: int,
        lock: RefreshLock,
    ) -> Session | None:
        """Write the provider's answer until Redis takes it (None: the session is gone).

        The provider has retired ``used_refresh_token``; dropping its answer would leave the
        session with a refresh token that only gets ``invalid_grant``. So the write is
        retried for as long as the session lives (``not_after``: its absolute expiry), and
        this worker serves ``fresh`` meanwhile. The write stays fenced on the used token: a
        session deleted or refreshed by someone else meanwhile keeps what Redis has.
        """
        lookup_id = credential.lookup_id
        delay = FIRST_WRITE_RETRY
        attempts = 0
        try:
            while True:
                try:
                    updated = await self._store.replace_tokens(
                        credential, provider_id, fresh, used_refresh_token=used_refresh_token
                    )
                    if attempts:
                        logger.info(
                            "refreshed tokens stored after retries",
                            extra={"provider": provider_id, "attempts": attempts},
                        )
                    return updated
                except StoreUnavailable as exc:
                    attempts += 1
                    if attempts == 1:
                        self._unstored.hold(lookup_id, provider_id, used_refresh_token, fresh)
                        logger.warning(
                            "refreshed tokens not stored yet; serving them from memory and "
                            "retrying",
                            extra={"provider": provider_id, "detail": str(exc)},
                        )
                    if self._clock() >= not_after:
                        logger.error(
                            "refreshed tokens never stored: the session ended first",
                            extra={"provider": provider_id, "attempts": attempts},
                        )
                        return None
                await self._sleep(delay)
                delay = min(2 * delay, LAST_WRITE_RETRY)
                # The refresh's keeper extends the lease too; this re-takes the lock at once
                # when Redis is back after an outage longer than the lease.
                await hold(lock, quiet=True)
        finally:
            if attempts:
                self._unstored.release(lookup_id, provider_id)


async def hold(lock: RefreshLock, *, quiet: bool = False) -> None:
    """Extend the lease, or take the lock again when it ran out and nobody holds it.

    ``quiet``: Redis being unreachable is not logged (the caller retries once a second and
    has said so already).
    """
    try:
        if not await lock.extend() and not await lock.acquire():
            # Another worker may now refresh with the token this one's refresh retired; its
            # write is fenced on that token, as this one's is, so the newer tokens win.
            logger.warning("a refresh lock ran out while its result was being stored")
    except StoreUnavailable:
        if not quiet:
            logger.warning("could not extend a refresh lock")
