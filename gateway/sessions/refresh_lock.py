"""The lock that lets one process at a time refresh one (session, provider)'s tokens.

A lock is a Redis key (:meth:`Keyspace.refresh_lock`, in the session's hash slot) holding a
random owner token, with a lease: a crashed holder blocks nobody for longer than the lease,
and a live one extends it while the provider answers. A lock found without a lease is given
one by the next process that wants it. Only the owner may extend or release
it: after its lease ran out another process may hold it, and deleting that one's lock would
let a third refresh concurrently. The refresh logic itself is ext_authz's (ext_authz/refresh.py).
"""

from __future__ import annotations

import secrets

import redis.asyncio

from gateway.redis.clients import translate_redis_errors
from gateway.sessions.keyspace import Keyspace

# Each script touches its one KEYS[1] only (in the session's hash slot), as Redis Cluster
# requires, and reads it only once it is a string (a GET of another type is an error).

# Take the lock when it is free. A lock without a TTL (persisted by hand, restored from a
# dump, written by an old bug) would block the session's refreshes forever: it gets one lease
# here, so it blocks for one lease at most, like a crashed holder's; whatever value it holds
# (even another type) is not ours and is left to its lease. Our own owner token already
# there means a resent acquire whose first reply was lost: still ours.
_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
if redis.call('PTTL', KEYS[1]) == -1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 0
end
if redis.call('TYPE', KEYS[1])['ok'] == 'string' and redis.call('GET', KEYS[1]) == ARGV[1] then
  return 1
end
return 0
"""
_EXTEND_IF_OWNER = """
if redis.call('TYPE', KEYS[1])['ok'] == 'string' and redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_DELETE_IF_OWNER = """
if redis.call('TYPE', KEYS[1])['ok'] == 'string' and redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RefreshLock:
    """One attempt's hold on a refresh lock: a fresh owner token, one lease length.

    Every method raises :class:`StoreUnavailable` when Redis cannot answer.
    """

    def __init__(
        self,
        client: redis.asyncio.Redis,
        keys: Keyspace,
        lookup_id: str,
        provider_id: str,
        lease_ms: int,
        owner: str | None = None,
    ) -> None:
        self._redis = client
        self.key = keys.refresh_lock(lookup_id, provider_id)
        self.owner = owner or secrets.token_hex(12)
        self._lease_ms = lease_ms

    async def acquire(self) -> bool:
        """Take the lock if nobody holds it; True when this owner now does."""
        with translate_redis_errors("taking a refresh lock"):
            return bool(await self._redis.eval(_ACQUIRE, 1, self.key, self.owner, self._lease_ms))

    async def extend(self) -> bool:
        """Renew the lease; False when this owner no longer holds the lock."""
        with translate_redis_errors("extending a refresh lock"):
            return bool(
                await self._redis.eval(_EXTEND_IF_OWNER, 1, self.key, self.owner, self._lease_ms)
            )

    async def release(self) -> None:
        """Let go, unless the lease ran out and someone else holds the lock now."""
        with translate_redis_errors("releasing a refresh lock"):
            await self._redis.eval(_DELETE_IF_OWNER, 1, self.key, self.owner)
