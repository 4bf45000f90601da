"""Refreshing a session's access token before it expires, exactly once across replicas.

Providers rotate refresh tokens: the first refresh invalidates the old one, so two processes
refreshing at once would leave one of them with ``invalid_grant`` and, done naively, wipe
the user's credentials. Here, for one (session, provider):

- within a process, concurrent checks share one in-flight refresh task;
- across processes, a Redis lock with an owner token and a lease
  (:mod:`gateway.sessions.refresh_lock`) decides who refreshes; the holder extends the lease
  while the provider answers, and a crashed holder blocks nobody for longer than the lease;
- everyone else waits for the lock to go, then re-reads the session instead of refreshing.

The refresh task is detached from the check that started it: a check waits at most
``tokens.refresh_wait`` and then answers with the still-valid old token (or 503 when it has
expired), while the refresh finishes and stores its result for the next request.

Outcomes: new tokens are merged into the session; ``invalid_grant`` marks only that
provider as needing a new login; anything transient keeps the session untouched. A refresh
the provider refuses for another reason (``invalid_scope``, ...) is a request problem that
asking again will not cure: the old token serves while it lasts, with no further attempt
from this worker until it expires; refused once more then, the provider is marked as needing
a login, exactly as for ``invalid_grant``. So a broken refresh costs the provider at most two
requests per session and worker, never one per check. A refusal of the gateway's own client
(``invalid_client``: a wrong secret or key) blames no session: it is logged as an error, and
this worker asks that provider for no refresh for ``CLIENT_REFUSAL_PAUSE`` seconds; sessions
keep their refresh tokens (503 once a token expires), so fixing the secret ends it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from ext_authz.metrics import REFRESHES
from gateway.config import Provider, TokenSettings
from gateway.errors import ClientRefused, ProviderRejected, ProviderUnavailable, StoreUnavailable
from gateway.sessions.credentials import SessionCredential
from gateway.sessions.interface import AsyncSessions
from gateway.sessions.model import Session
from gateway.sessions.refresh_lock import RefreshLock

if TYPE_CHECKING:
    from gateway.providers.client import ProviderClient

logger = logging.getLogger(__name__)

_POLL_SECONDS = 0.05
# Sessions whose refresh was refused, remembered per worker; the oldest go first past this.
_MAX_REFUSED = 10_000
CLIENT_REFUSAL_PAUSE = 30.0


class RefreshFailed(Exception):
    """The refresh did not happen now; the session is unchanged. ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SessionGone(Exception):
    """The session was deleted (logout, revocation) while its tokens were refreshed."""


class Refresher:
    def __init__(
        self,
        store: AsyncSessions,
        providers: dict[str, Provider],
        settings: TokenSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        # (session lookup id, provider) -> expiry of the token whose refresh was refused.
        self._refused_until: OrderedDict[tuple[str, str], int] = OrderedDict()
        # provider -> until when it is not asked (it refused this gateway's client).
        self._client_refused_until: dict[str, float] = {}
        self._store = store
        self._providers = providers
        self._clients: dict[str, ProviderClient] = {}
        self._settings = settings
        self._lease_ms = int(settings.refresh_lock_lease * 1000)
        self._in_flight: dict[tuple[str, str], asyncio.Task[Session]] = {}

    def needs_refresh(
        self, session: Session, provider_id: str, now: float, lookup_id: str | None = None
    ) -> bool:
        """True when a refresh is due and worth trying (``lookup_id``: not one refused lately)."""
        tokens = session.tokens.get(provider_id)
        return (
            tokens is not None
            and provider_id in self._providers
            and tokens.needs_refresh(now, self._settings.refresh_margin)
            and not (
                lookup_id is not None
                and self._refused_lately(lookup_id, provider_id, tokens.expires_at, now)
            )
        )

    def _refused_lately(
        self, lookup_id: str, provider_id: str, expires_at: int, now: float
    ) -> bool:
        """True while the token whose refresh was refused is the session's and still valid."""
        refused = self._refused_until.get((lookup_id, provider_id))
        if refused is None:
            return False
        if refused == expires_at and now < refused:
            return True
        del self._refused_until[(lookup_id, provider_id)]
        return False

    def _remember_refusal(self, lookup_id: str, provider_id: str, expires_at: int) -> None:
        key = (lookup_id, provider_id)
        self._refused_until[key] = expires_at
        self._refused_until.move_to_end(key)
        while len(self._refused_until) > _MAX_REFUSED:
            self._refused_until.popitem(last=False)

    async def refreshed(self, credential: SessionCredential, provider_id: str) -> Session:
        """The session with fresh tokens for ``provider_id``.

        Raises RefreshFailed (answer with the old token or 503), SessionGone, or
        SessionInvalid when the record re-read around the refresh no longer opens.
        """
        if self._clock() < self._client_refused_until.get(provider_id, 0.0):
            raise RefreshFailed("refresh_unavailable")  # the provider refuses our client
        key = (credential.lookup_id, provider_id)
        task = self._in_flight.get(key)
        if task is None:
            task = asyncio.create_task(self._refresh_once(credential, provider_id))
            self._in_flight[key] = task
            task.add_done_callback(lambda _: self._in_flight.pop(key, None))
            task.add_done_callback(_consume_exception)
        try:
            return await asyncio.wait_for(asyncio.shield(task), self._settings.refresh_wait)
        except TimeoutError:
            raise RefreshFailed("refresh_pending") from None

    async def _refresh_once(self, credential: SessionCredential, provider_id: str) -> Session:
        lock = self._store.refresh_lock(credential.lookup_id, provider_id, self._lease_ms)
        try:
            current = await self._wait_for_lock(credential, provider_id, lock)
        except StoreUnavailable as exc:
            raise RefreshFailed("redis_unavailable") from exc
        if current is not None:
            return current  # someone else refreshed while we waited
        keeper = asyncio.create_task(self._keep_lock(lock))
        try:
            return await self._refresh_holding_lock(credential, provider_id)
        except StoreUnavailable as exc:
            raise RefreshFailed("redis_unavailable") from exc
        finally:
            keeper.cancel()
            try:
                await lock.release()
            except StoreUnavailable:
                logger.warning("refresh lock not released; its lease will end it")

    async def _wait_for_lock(
        self, credential: SessionCredential, provider_id: str, lock: RefreshLock
    ) -> Session | None:
        """Take the lock (returns None) or, when another refresh happened, its result."""
        # Waiting longer than a lease means the holder is stuck beyond what leases allow.
        deadline = time.monotonic() + 2 * self._settings.refresh_lock_lease
        while not await lock.acquire():
            await asyncio.sleep(_POLL_SECONDS)
            current = await self._store.reload(credential)
            if current is None:
                raise SessionGone()
            if not self.needs_refresh(current, provider_id, self._clock()):
                return current
            if time.monotonic() > deadline:
                raise RefreshFailed("refresh_pending")
        return None

    async def _keep_lock(self, lock: RefreshLock) -> None:
        while True:
            await asyncio.sleep(self._settings.refresh_lock_lease / 3)
            try:
                await lock.extend()
            except StoreUnavailable:
                logger.warning("could not extend a refresh lock")

    async def _refresh_holding_lock(
        self, credential: SessionCredential, provider_id: str
    ) -> Session:
        # Re-read under the lock: the previous holder may have just stored fresh tokens.
        current = await self._store.reload(credential)
        if current is None:
            raise SessionGone()
        if not self.needs_refresh(current, provider_id, self._clock()):
            return current
        tokens = current.tokens[provider_id]
        client = self._client(provider_id)
        try:
            # requests is blocking; a refresh is rare enough for a worker thread.
            fresh = await asyncio.to_thread(client.refresh, tokens, self._clock())
            outcome = "refreshed"
        except ClientRefused as exc:
            REFRESHES.labels(provider_id, "client_refused").inc()
            logger.error(
                "the provider refuses this gateway's client: check its secret, key and method",
                extra={"provider": provider_id, "error": exc.error},
            )
            self._client_refused_until[provider_id] = self._clock() + CLIENT_REFUSAL_PAUSE
            raise RefreshFailed("refresh_unavailable") from exc
        except ProviderRejected as exc:
            now = self._clock()
            if exc.error != "invalid_grant":
                REFRESHES.labels(provider_id, "refused").inc()
                logger.warning(
                    "refresh refused by the provider",
                    extra={"provider": provider_id, "error": exc.error or "no_error_code"},
                )
                if not tokens.expired_at(now):
                    # Not again from here while the old token serves (see the module doc).
                    self._remember_refusal(credential.lookup_id, provider_id, tokens.expires_at)
                    raise RefreshFailed("refresh_refused") from exc
            # The refresh token is revoked, expired or refused again: only this provider
            # needs a login.
            fresh = replace(tokens, needs_login=True)
            outcome = "needs_login"
        except ProviderUnavailable as exc:
            logger.warning("refresh failed", extra={"provider": provider_id, "detail": str(exc)})
            REFRESHES.labels(provider_id, "unavailable").inc()
            raise RefreshFailed("refresh_unavailable") from exc
        updated = await self._store.replace_tokens(
            credential, provider_id, fresh, used_refresh_token=tokens.refresh_token
        )
        if updated is None:
            raise SessionGone()
        logger.info("token refresh", extra={"provider": provider_id, "outcome": outcome})
        REFRESHES.labels(provider_id, outcome).inc()
        return updated

    def _client(self, provider_id: str) -> ProviderClient:
        """The provider's client, built at its first refresh: the OAuth libraries it needs
        (Authlib, requests) cost a worker ~15 MB, which workers that never refresh keep."""
        client = self._clients.get(provider_id)
        if client is None:
            from gateway.providers.client import ProviderClient

            client = ProviderClient(self._providers[provider_id], redirect_uri="")
            self._clients[provider_id] = client
        return client


def _consume_exception(task: asyncio.Task[Session]) -> None:
    """A refresh nobody waited for any more must not log 'exception never retrieved'."""
    if not task.cancelled():
        task.exception()
