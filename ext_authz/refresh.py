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

A refresh that was sent is completed and kept. The provider call runs in a pool of its own
(:mod:`ext_authz.provider_calls`) to its own read timeout, ``tokens.refresh_timeout``, never
abandoned because no check waits any more (a provider that answers late has usually rotated
the refresh token all the same). Once it answered, its result is written until Redis takes
it, with backoff, for as long as the session lives, the lock held (and re-taken when its
lease ran out and it is free) all along; meanwhile this worker serves the new tokens from
memory (:mod:`ext_authz.unstored_tokens`) over sessions it can still load from Redis, and
its other checks of that session join the refresh under way instead of starting another
with the retired refresh token. Other workers are kept from using it by the lock.

What remains possible: a worker killed while its write is pending loses that write (the
lock's lease then lets another worker refresh with the retired token: ``invalid_grant``);
a lease that ran out during an outage longer than it, while another worker took the lock
and refreshed first, marks the provider as needing a login until this worker's write lands
(it is fenced on the same old refresh token, so the new tokens win), or for good where the
provider revokes the whole grant when a retired token is reused; and a
Redis that loses acknowledged writes (restored from an older snapshot, or persistence
weaker than ``appendfsync always``) brings back a retired refresh token.

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
from ext_authz.provider_calls import ProviderCalls
from ext_authz.unstored_tokens import Sleep, TokenWriter, UnstoredTokens, hold
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
# How long closing a worker waits for refreshes under way to store what they got.
CLOSE_GRACE = 5.0


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
        *,
        calls: ProviderCalls | None = None,
        sleep: Sleep = asyncio.sleep,
        client_for: Callable[[Provider], ProviderClient] | None = None,
    ) -> None:
        self._clock = clock
        self._client_for = client_for  # tests give a fake provider
        self._store = store
        self._calls = calls if calls is not None else ProviderCalls()
        # Refreshes under way and their unstored results outlive a reload: a refresh that
        # was sent before it is still completed and kept after it.
        self._in_flight: dict[tuple[str, str], asyncio.Task[Session]] = {}
        self.unstored = UnstoredTokens()
        self._writer = TokenWriter(store, self.unstored, clock, sleep)
        self.reconfigure(providers, settings)

    def reconfigure(self, providers: dict[str, Provider], settings: TokenSettings) -> None:
        """New providers and settings for refreshes from now on; those under way finish
        with what they started with."""
        # (session lookup id, provider) -> expiry of the token whose refresh was refused.
        self._refused_until: OrderedDict[tuple[str, str], int] = OrderedDict()
        # provider -> until when it is not asked (it refused this gateway's client).
        self._client_refused_until: dict[str, float] = {}
        self._providers = providers
        self._clients: dict[str, ProviderClient] = {}
        self._settings = settings

    async def close(self, grace: float = CLOSE_GRACE) -> None:
        """Give refreshes under way ``grace`` seconds to finish and store what they got,
        then let the provider threads go (without waiting for them)."""
        tasks = list(self._in_flight.values())
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        self._calls.shutdown()

    def with_unstored(self, lookup_id: str, session: Session) -> Session:
        """``session`` as loaded, with refreshed tokens Redis has not taken yet laid over it
        (only where it still carries the refresh token those came from)."""
        return self.unstored.over(lookup_id, session)

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
        # Read once: a reload during this refresh must not change its lease under its lock.
        settings = self._settings
        lease_ms = int(settings.refresh_lock_lease * 1000)
        lock = self._store.refresh_lock(credential.lookup_id, provider_id, lease_ms)
        try:
            current = await self._wait_for_lock(credential, provider_id, lock, settings)
        except StoreUnavailable as exc:
            raise RefreshFailed("redis_unavailable") from exc
        if current is not None:
            return current  # someone else refreshed while we waited
        keeper = asyncio.create_task(self._keep_lock(lock, settings.refresh_lock_lease))
        try:
            return await self._refresh_holding_lock(credential, provider_id, lock, settings)
        except StoreUnavailable as exc:
            raise RefreshFailed("redis_unavailable") from exc
        finally:
            keeper.cancel()
            try:
                await lock.release()
            except StoreUnavailable:
                logger.warning("refresh lock not released; its lease will end it")

    async def _wait_for_lock(
        self,
        credential: SessionCredential,
        provider_id: str,
        lock: RefreshLock,
        settings: TokenSettings,
    ) -> Session | None:
        """Take the lock (returns None) or, when another refresh happened, its result."""
        # Waiting longer than a lease means the holder is stuck beyond what leases allow.
        deadline = time.monotonic() + 2 * settings.refresh_lock_lease
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

    async def _keep_lock(self, lock: RefreshLock, lease: float) -> None:
        """Extend the lease while the provider answers and the result is being stored."""
        while True:
            # Real time, not the writer's sleep: the lease runs on Redis's clock.
            await asyncio.sleep(lease / 3)
            await hold(lock)

    async def _refresh_holding_lock(
        self,
        credential: SessionCredential,
        provider_id: str,
        lock: RefreshLock,
        settings: TokenSettings,
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
            fresh = await self._calls.run(
                client.refresh, tokens, self._clock(), read_timeout=settings.refresh_timeout
            )
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
        updated = await self._writer.store(
            credential, provider_id, fresh, tokens.refresh_token, current.expires_at, lock
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
            if self._client_for is not None:
                client = self._client_for(self._providers[provider_id])
            else:
                from gateway.providers.client import ProviderClient

                client = ProviderClient(self._providers[provider_id], redirect_uri="")
            self._clients[provider_id] = client
        return client


def _consume_exception(task: asyncio.Task[Session]) -> None:
    """A refresh nobody waited for any more must not log 'exception never retrieved'."""
    if not task.cancelled():
        task.exception()
