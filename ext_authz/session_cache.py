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

import asyncio
import contextlib
import hmac
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

import redis.asyncio

from ext_authz.metrics import SESSION_CACHE, SESSION_CACHE_BYTES, SESSION_CACHE_ENTRIES
from gateway.sessions.changes import ChangeFeed
from gateway.sessions.credentials import SessionCredential
from gateway.sessions.interface import AsyncSessions
from gateway.sessions.keyspace import Keyspace
from gateway.sessions.model import Session

logger = logging.getLogger(__name__)

_HIT, _MISS = SESSION_CACHE.labels("hit"), SESSION_CACHE.labels("miss")
SWEEP_SECONDS = 1.0


def _report(cache: SessionCache) -> None:
    SESSION_CACHE_ENTRIES.set(len(cache))
    SESSION_CACHE_BYTES.set(cache.size_bytes)


# What one entry costs beyond the characters of its strings (objects, dict slots, the key,
# the secret), measured with tracemalloc on decoded sessions; each character is one byte
# more (tokens are ASCII). An estimate, so that ``max_bytes`` means roughly what it says.
ENTRY_OVERHEAD_BYTES = 1600
DEFAULT_MAX_BYTES = 2 * 1024 * 1024


def entry_size(session: Session) -> int:
    """About how many bytes of memory a cached copy of ``session`` takes."""
    identity = session.identity
    size = ENTRY_OVERHEAD_BYTES + len(identity.subject) + len(identity.email)
    size += len(identity.name) + len(identity.provider_session_id)
    size += sum(map(len, identity.groups)) + sum(map(len, identity.claims.values()))
    for tokens in session.tokens.values():
        size += 200 + len(tokens.access_token) + len(tokens.refresh_token)
        size += len(tokens.id_token) + len(tokens.scope)
    return size


class _Entry(NamedTuple):
    secret: bytes
    session: Session
    deadline: float
    size: int


class SessionCache:
    """Bounded (entries and estimated bytes) map of (secret, session, deadline) by lookup id.

    Entries are kept in the order of their deadlines: the ttl is one constant and the clock
    monotonic, and a re-stored entry moves to the end with its new deadline. So the expired
    ones are always at the front, and dropping them costs O(1) per entry, done on every
    store and by :meth:`sweep`; an entry nobody asks for again does not outlive its ttl.
    """

    def __init__(
        self,
        ttl: float,
        max_entries: int = 100_000,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._clock = clock  # only measures how long an entry has been kept
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self.size_bytes = 0  # the estimated memory of the entries held
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
        if self._clock() >= entry.deadline or not hmac.compare_digest(
            entry.secret, credential.secret
        ):
            self._drop(lookup_id)
            return None
        return entry.session

    def put(self, credential: SessionCredential, session: Session) -> None:
        if not self.enabled or self._ttl <= 0:  # with ttl 0 the feed only reports health
            return
        lookup_id = credential.lookup_id
        now = self._clock()
        self._drop(lookup_id)  # re-inserted below at the end, where its new deadline belongs
        entry = _Entry(credential.secret, session, now + self._ttl, entry_size(session))
        self._entries[lookup_id] = entry
        self.size_bytes += entry.size
        self._drop_expired(now)
        while len(self._entries) > self._max_entries or self.size_bytes > self._max_bytes:
            self._drop_oldest()

    def sweep(self) -> None:
        """Drop every expired entry now (also done on each store)."""
        self._drop_expired(self._clock())

    def evict(self, lookup_id: str) -> None:
        self.generation += 1
        self._drop(lookup_id)

    def disable(self) -> None:
        self.generation += 1
        self.enabled = False
        self._entries.clear()
        self.size_bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def _drop(self, lookup_id: str) -> None:
        entry = self._entries.pop(lookup_id, None)
        if entry is not None:
            self.size_bytes -= entry.size

    def _drop_oldest(self) -> None:
        _, entry = self._entries.popitem(last=False)
        self.size_bytes -= entry.size

    def _drop_expired(self, now: float) -> None:
        entries = self._entries
        while entries and entries[next(iter(entries))].deadline <= now:
            self._drop_oldest()


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
        self._sweeper: asyncio.Task[None] | None = None

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
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_forever())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await self._feed.stop()
        self._cache.disable()
        _report(self._cache)

    async def _sweep_forever(self) -> None:
        # Stores drop expired entries as they go; this is for when they stop coming (a
        # burst, then quiet): memory still falls back, and the gauges say so.
        while True:
            self._cache.sweep()
            _report(self._cache)
            await asyncio.sleep(SWEEP_SECONDS)

    def _feed_up(self) -> None:
        self._cache.enabled = True  # from now on no change goes unheard
        self.on_feed_change(True)

    def _feed_lost(self) -> None:
        self._cache.disable()
        self.on_feed_change(False)
