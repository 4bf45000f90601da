"""A short-lived in-process cache of decrypted sessions, invalidated by the change feed.

Most checks are for a session seen a moment ago; serving those from memory saves the Redis
round trip and the decryption. Correctness rests on three rules:

- every change to a session in Redis (logout, revocation, refresh, re-login) is published on
  the change feed (:mod:`gateway.sessions.changes`), and each worker drops that entry the
  moment it hears it;
- while the subscription is not known to be working (starting, reconnecting, Redis down),
  the cache is bypassed and emptied, so a missed message can never keep a revoked session
  alive;
- an entry lives at most ``ttl`` seconds in any case, which bounds staleness even if a
  message were lost in flight.

Entries are keyed by lookup id and also hold the session secret: a hit requires the same
secret, so knowing a session id alone never authorizes from the cache.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

import redis.asyncio

from ext_authz.metrics import SESSION_CACHE
from gateway.sessions.changes import ChangeFeed
from gateway.sessions.credentials import SessionCredential
from gateway.sessions.interface import AsyncSessions
from gateway.sessions.keyspace import Keyspace
from gateway.sessions.model import Session

logger = logging.getLogger(__name__)

_HIT, _MISS = SESSION_CACHE.labels("hit"), SESSION_CACHE.labels("miss")


class SessionCache:
    """Bounded LRU of (secret, session, deadline) by lookup id."""

    def __init__(
        self,
        ttl: float,
        max_entries: int = 100_000,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._clock = clock  # only measures how long an entry has been kept
        self._max_entries = max_entries
        self._entries: OrderedDict[str, tuple[bytes, Session, float]] = OrderedDict()
        self.enabled = False  # only while invalidations are known to arrive
        # Bumped by every invalidation: a load that started before one must not cache what
        # it read, which may be the very state the invalidation announced the end of.
        self.generation = 0

    def get(self, credential: SessionCredential) -> Session | None:
        if not self.enabled:
            return None
        lookup_id = credential.lookup_id
        entry = self._entries.get(lookup_id)
        if entry is None:
            return None
        secret, session, deadline = entry
        if self._clock() >= deadline or not hmac.compare_digest(secret, credential.secret):
            self._entries.pop(lookup_id, None)
            return None
        return session

    def put(self, credential: SessionCredential, session: Session) -> None:
        if not self.enabled or self._ttl <= 0:  # with ttl 0 the feed only reports health
            return
        lookup_id = credential.lookup_id
        self._entries[lookup_id] = (credential.secret, session, self._clock() + self._ttl)
        self._entries.move_to_end(lookup_id)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def evict(self, lookup_id: str) -> None:
        self.generation += 1
        self._entries.pop(lookup_id, None)

    def disable(self) -> None:
        self.generation += 1
        self.enabled = False
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class CachedSessions:
    """The session source ext_authz checks use: cache first, then the store.

    The cache is on only while the change feed (:mod:`gateway.sessions.changes`) is known to
    deliver; ``on_feed_change`` hears each time that changes.
    """

    def __init__(
        self,
        store: AsyncSessions,
        cache: SessionCache,
        client: redis.asyncio.Redis,
        keys: Keyspace,
    ) -> None:
        self._store = store
        self._cache = cache
        self._feed = ChangeFeed(
            client,
            keys,
            on_subscribed=self._feed_up,
            on_change=cache.evict,
            on_lost=self._feed_lost,
            keep_current=store.keep_current,
        )
        self.on_feed_change: Callable[[bool], None] = lambda healthy: None

    async def load(self, credential: SessionCredential) -> Session | None:
        cached = self._cache.get(credential)
        if cached is not None:
            _HIT.inc()
            return cached
        _MISS.inc()
        generation = self._cache.generation
        session = await self._store.load(credential)
        if session is not None and self._cache.generation == generation:
            self._cache.put(credential, session)
        return session

    def evict(self, credential: SessionCredential) -> None:
        """Drop this worker's copy of a session it just changed (refreshed tokens): the next
        check reads the new one from Redis (caching it here could race a logout's
        invalidation)."""
        self._cache.evict(credential.lookup_id)

    def start(self) -> None:
        self._feed.start()

    async def stop(self) -> None:
        await self._feed.stop()
        self._cache.disable()

    def _feed_up(self) -> None:
        self._cache.enabled = True  # from now on no change goes unheard
        self.on_feed_change(True)

    def _feed_lost(self) -> None:
        self._cache.disable()
        self.on_feed_change(False)
