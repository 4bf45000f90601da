"""A short-lived in-process cache of decrypted sessions, invalidated through Redis pub/sub.

Most checks are for a session seen a moment ago; serving those from memory saves the Redis
round trip and the decryption. Correctness rests on three rules:

- every change to a session in Redis (logout, revocation, refresh, re-login) is published on
  the invalidation channel, and each worker drops that entry the moment it hears it;
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
import hmac
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

import redis
import redis.asyncio

from ext_authz.metrics import SESSION_CACHE
from gateway.redis.clients import (
    MASTER_CHECK_SECONDS,
    REDIS_FAILURES,
    fresh_pubsub,
    subscription_is_current,
)
from gateway.sessions.credentials import SessionCredential
from gateway.sessions.model import Session
from gateway.sessions.store import AsyncSessionStore

logger = logging.getLogger(__name__)

_HIT, _MISS = SESSION_CACHE.labels("hit"), SESSION_CACHE.labels("miss")
_RECONNECT_SECONDS = 1.0
_PING_SECONDS = 0.5
# No reply to our pings for this long: the feed is presumed dead and the cache goes off.
_SILENCE_SECONDS = 1.5
# How often the feed makes sure its server is still the one PUBLISHes go to (sentinel mode).
_SERVER_CHECK_SECONDS = MASTER_CHECK_SECONDS


class SessionCache:
    """Bounded LRU of (secret, session, deadline) by lookup id."""

    def __init__(self, ttl: float, max_entries: int = 100_000) -> None:
        self._ttl = ttl
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
        if time.monotonic() >= deadline or not hmac.compare_digest(secret, credential.secret):
            self._entries.pop(lookup_id, None)
            return None
        return session

    def put(self, credential: SessionCredential, session: Session) -> None:
        if not self.enabled or self._ttl <= 0:  # with ttl 0 the feed only reports health
            return
        lookup_id = credential.lookup_id
        self._entries[lookup_id] = (credential.secret, session, time.monotonic() + self._ttl)
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
    """The session source ext_authz checks use: cache first, then the store."""

    def __init__(
        self,
        store: AsyncSessionStore,
        cache: SessionCache,
        client: redis.asyncio.Redis,
        channel: str,
    ) -> None:
        self._store = store
        self._cache = cache
        self._client = client
        self._channel = channel
        self._listener: asyncio.Task[None] | None = None
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
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen())

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            try:
                await self._listener
            except asyncio.CancelledError:
                pass
            self._listener = None
        self._cache.disable()

    async def _listen(self) -> None:
        while True:
            pubsub = None
            try:
                # Each (re)connection goes to whichever server serves the channel now: the
                # master the sentinels name, a live cluster node. A failover that leaves the
                # old connection silent is caught by _follow's pings.
                pubsub = await fresh_pubsub(self._client)
                await pubsub.subscribe(self._channel)
                await self._follow(pubsub)
            except asyncio.CancelledError:
                raise
            except REDIS_FAILURES as exc:  # TimeoutError from _follow is an OSError
                logger.warning(
                    "session invalidation feed lost; cache off",
                    extra={"detail": type(exc).__name__},
                )
            except Exception:
                # Whatever went wrong, the feed must come back: a dead listener would leave
                # the cache off and health NOT_SERVING for good.
                logger.exception("session invalidation feed failed; cache off")
            finally:
                self._cache.disable()
                self.on_feed_change(False)
                if pubsub is not None:
                    try:
                        await pubsub.aclose()
                    except REDIS_FAILURES:
                        pass
            await asyncio.sleep(_RECONNECT_SECONDS)

    async def _follow(self, pubsub: redis.asyncio.client.PubSub) -> None:
        """Apply invalidations; ping so that a silent (paused, failed-over) Redis is noticed,
        and leave a server that is answering but no longer the master."""
        last_heard = time.monotonic()
        next_ping = next_server_check = last_heard
        while True:
            now = time.monotonic()
            if now >= next_ping:
                await pubsub.ping()
                next_ping = now + _PING_SECONDS
            if now >= next_server_check:
                # This loop runs in every worker whatever the traffic, so it also keeps the
                # store's view of the servers current (sentinel master, cluster layout).
                await self._store.keep_current()
                if not await subscription_is_current(self._client, pubsub):
                    raise redis.ConnectionError("the invalidation feed's server is not the master")
                next_server_check = now + _SERVER_CHECK_SECONDS
            message = await pubsub.get_message(timeout=_PING_SECONDS / 2)
            if message is not None:
                last_heard = time.monotonic()
                kind = message["type"]
                if kind == "subscribe":
                    self._cache.enabled = True  # from now on no change goes unheard
                    self.on_feed_change(True)
                elif kind == "message":
                    data = message["data"]
                    # Anyone who can publish can send garbage; it only evicts nothing.
                    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
                    self._cache.evict(text)
            elif time.monotonic() - last_heard > _SILENCE_SECONDS:
                raise TimeoutError("the invalidation feed went silent")
