"""Redis clients built from the config, and the one place Redis errors become ours.

One set of rules for the three modes (standalone, sentinel, cluster): every command times out
after ``redis.timeout``, connection pools are bounded, and a command is never retried after a
timeout: a paused Redis would make each retry wait again and outlive Envoy's ext_authz
timeout, and a fast 503 is better. A paused or unreachable Redis surfaces as
:class:`StoreUnavailable` and the caller answers 503.

A command that fails with a *connection* error is sent once more, on a new connection
(:func:`_retry_once`; standalone and sentinel). That is what a pooled socket gives after
Redis restarted or dropped it (EOF, reset), and what a restarted Redis answers while it loads
(LOADING): without the retry every request that drew such a socket got a 503. It costs no
waiting when Redis is really gone (a refused connection fails at once; an unanswered one
times out, and timeouts are not retried), so a command still takes at most about three
timeouts (the failed send, connect, the command) before it fails. Sending twice is safe for
what the gateway does: reads, SET/PEXPIRE/DEL/HSET/HDEL and PUBLISH end in the same state
when applied twice, and the lock scripts (gateway.sessions.refresh_lock) accept their own
owner's lock. The few commands that are not idempotent fail towards caution when the first
send did arrive and only its reply was lost: a rate-limit or login-loop counter
(INCR) counts one request twice, and a login state taken with GETDEL is gone for the retry
(that callback is refused and the user starts the login again; it would have been a 503).
A WATCHed transaction is never resent: redis-py turns the lost connection into WatchError
and the store re-reads the record (gateway.sessions.store). The pub/sub subscriber does not
retry at all: a silent reconnect would hide the invalidations missed meanwhile
(gateway.sessions.changes notices the lost subscription and stops trusting its cache).

What each mode still does for us, because it costs a round trip and no waiting:

- sentinel: each new connection asks the sentinels for the current master, and so does each
  client about once a second (:data:`MASTER_CHECK_SECONDS`): the blocking client's pool as
  connections are taken, ext_authz from its session change feed via :func:`keep_current`.
  That second question matters after an operator's failover: the old master stays up and
  keeps acting as one for several seconds, so connections opened before would go on reading
  (sessions created since look absent) and writing (writes Redis later discards) there.
  When the sentinels name a new master, connections to the old one are closed (those in use
  when they come back) and the next command connects to the new one. A command caught in
  between answers 503.
- cluster: MOVED and ASK redirects are followed within the command (at most
  :data:`CLUSTER_REQUEST_HOPS` hops, each an immediate reply from a live node) and refresh
  the slot map. A node that does not answer is *not* retried: the client re-reads the
  layout and the next request goes to whichever node owns the slot then. redis-py waits
  0.25 s before raising CLUSTERDOWN, which still fits within ext_authz.timeout.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.sentinel
import redis.cluster
import redis.sentinel
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from gateway.config import RedisSettings
from gateway.errors import StoreUnavailable
from gateway.observability.metrics import timed_redis

MAX_CONNECTIONS = 64  # per client; in cluster mode per node
# How often a sentinel-mode client re-asks the sentinels which server is the master.
MASTER_CHECK_SECONDS = 1.0
# A command's hops in a cluster: to the slot's new owner (MOVED), then possibly to a
# migration's target (ASK). More than that means the layout is changing under us: 503.
CLUSTER_REQUEST_HOPS = 3

# Everything a Redis call can fail with. RedisError covers MasterNotFoundError (sentinel),
# ClusterDownError, TryAgainError, MovedError and AskError (cluster); RedisClusterException is
# not a RedisError yet means "the cluster cannot serve this now" (no reachable node, a slot
# not covered).
REDIS_FAILURES: tuple[type[BaseException], ...] = (
    redis.RedisError,
    RedisClusterException,
    OSError,
)


class _SyncCluster(redis.cluster.RedisCluster):
    RedisClusterRequestTTL = CLUSTER_REQUEST_HOPS


class _AsyncCluster(redis.asyncio.RedisCluster):
    RedisClusterRequestTTL = CLUSTER_REQUEST_HOPS


class _FollowingSentinelPool(redis.sentinel.SentinelConnectionPool):
    """A sentinel pool that re-asks the sentinels for the master as connections are taken."""

    _asked_at = 0.0

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        now = time.monotonic()
        if now - self._asked_at >= MASTER_CHECK_SECONDS:
            self._asked_at = now
            try:
                # On a change this closes idle connections to the old master; those in use
                # are closed when released (the pool no longer owns them).
                self.get_master_address()
            except REDIS_FAILURES:
                pass  # the sentinels cannot say now; keep the connections we have
        return super().get_connection(*args, **kwargs)


class _BlockingSentinelPool(
    redis.asyncio.sentinel.SentinelConnectionPool, redis.asyncio.BlockingConnectionPool
):
    """The sentinel pool, waiting for a free connection (up to its timeout) like
    :func:`async_client`'s pool instead of failing at once when all are busy."""


def _retry_once() -> Retry:
    """Send a command once more after a connection error, at once; never after a timeout."""
    return Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))


def _async_retry_once() -> AsyncRetry:
    return AsyncRetry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))


def _timeouts(settings: RedisSettings) -> dict[str, Any]:
    return {
        "socket_timeout": settings.timeout,
        "socket_connect_timeout": settings.timeout,
        "health_check_interval": 0,
    }


def _options(settings: RedisSettings) -> dict[str, Any]:
    # The cluster clients take no retry_on_timeout (their retries are `retry` alone).
    return {**_timeouts(settings), "retry_on_timeout": False}


def _url_credentials(settings: RedisSettings) -> dict[str, Any]:
    """What the URL says besides where Redis is: username, password, db, TLS and query options.

    In sentinel and cluster mode the servers are found elsewhere (sentinels, startup nodes),
    so only these are taken from the URL.
    """
    options = parse_url(settings.url)
    for where in ("host", "port", "path"):
        options.pop(where, None)
    connection_class = options.pop("connection_class", None)
    if connection_class is not None and issubclass(connection_class, redis.SSLConnection):
        options["ssl"] = True
    if settings.mode == "cluster":
        options.pop("db", None)  # validated to be 0; the cluster clients refuse the argument
    return options


def _sentinel_options(settings: RedisSettings) -> dict[str, Any]:
    """How to talk to the sentinels themselves: same timeouts, no retries."""
    assert settings.sentinel is not None
    options: dict[str, Any] = {
        "socket_timeout": settings.timeout,
        "socket_connect_timeout": settings.timeout,
    }
    if settings.sentinel.password:
        options["password"] = settings.sentinel.password
    return options


def sync_client(settings: RedisSettings) -> redis.Redis:
    """A blocking client for the login app and the CLI.

    In cluster mode the client learns the cluster's layout here, so an unreachable cluster
    raises :class:`StoreUnavailable` now rather than at the first command.
    """
    if settings.mode == "sentinel":
        assert settings.sentinel is not None
        sentinel = redis.sentinel.Sentinel(
            settings.sentinel_addresses(),
            sentinel_kwargs={**_sentinel_options(settings), "retry": Retry(NoBackoff(), 0)},
        )
        client = sentinel.master_for(
            settings.sentinel.master_name,
            connection_pool_class=_FollowingSentinelPool,
            retry=_retry_once(),
            max_connections=MAX_CONNECTIONS,
            **_options(settings),
            **_url_credentials(settings),
        )
        return cast(redis.Redis, client)
    if settings.mode == "cluster":
        with translate_redis_errors("connecting to the Redis cluster"):
            cluster = _SyncCluster(
                startup_nodes=[
                    redis.cluster.ClusterNode(host, port) for host, port in settings.startup_nodes()
                ],
                retry=Retry(NoBackoff(), 0),
                max_connections=MAX_CONNECTIONS,
                **_timeouts(settings),
                **_url_credentials(settings),
            )
        # The cluster client has the same command methods; callers that must treat it
        # differently (pipelines, SCAN, PUBLISH) check for RedisCluster themselves.
        return cast(redis.Redis, cluster)
    return redis.Redis.from_url(
        settings.url,
        retry=_retry_once(),
        max_connections=MAX_CONNECTIONS,
        **_options(settings),
    )


def async_client(settings: RedisSettings) -> redis.asyncio.Redis:
    """An asyncio client for ext_authz.

    The pool blocks (up to the command timeout) instead of opening unbounded connections,
    so a stalled Redis cannot make every waiting check open a socket of its own. (The
    cluster client's per-node pools cannot wait: when one is exhausted the check gets 503.)
    """
    if settings.mode == "sentinel":
        return _async_sentinel_master(
            settings,
            connection_pool_class=_BlockingSentinelPool,
            retry=_async_retry_once(),
            max_connections=MAX_CONNECTIONS,
            timeout=settings.timeout,
            **_options(settings),
        )
    if settings.mode == "cluster":
        return cast(redis.asyncio.Redis, _async_cluster(settings, _timeouts(settings)))
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        settings.url,
        max_connections=MAX_CONNECTIONS,
        timeout=settings.timeout,
        retry=_async_retry_once(),
        **_options(settings),
    )
    return redis.asyncio.Redis(connection_pool=pool)


def _async_sentinel_master(settings: RedisSettings, **options: Any) -> redis.asyncio.Redis:
    """An asyncio client of the master the sentinels name; ``options`` shape its pool."""
    assert settings.sentinel is not None  # the config requires it in sentinel mode
    sentinel = redis.asyncio.sentinel.Sentinel(
        settings.sentinel_addresses(),
        sentinel_kwargs={**_sentinel_options(settings), "retry": AsyncRetry(NoBackoff(), 0)},
    )
    options.setdefault("retry", AsyncRetry(NoBackoff(), 0))
    client = sentinel.master_for(
        settings.sentinel.master_name,
        **options,
        **_url_credentials(settings),
    )
    return cast(redis.asyncio.Redis, client)


def _async_cluster(settings: RedisSettings, options: dict[str, Any]) -> _AsyncCluster:
    # Connects lazily, at the first command, like the other asyncio clients.
    return _AsyncCluster(
        startup_nodes=[
            redis.asyncio.cluster.ClusterNode(host, port) for host, port in settings.startup_nodes()
        ],
        retry=AsyncRetry(NoBackoff(), 0),
        max_connections=MAX_CONNECTIONS,
        **options,
        **_url_credentials(settings),
    )


@contextmanager
def translate_redis_errors(action: str) -> Iterator[None]:
    """Turn any Redis failure into :class:`StoreUnavailable` (deny with 503, never log out).

    Also times the operation for the metrics; ``action`` is a fixed phrase from the code.
    """
    try:
        with timed_redis(action):
            yield
    except REDIS_FAILURES as exc:
        raise StoreUnavailable(f"redis unavailable while {action}: {type(exc).__name__}") from exc


def is_wrong_type(error: object) -> bool:
    """True for Redis's WRONGTYPE reply: one of our keys holds another type of value (an
    operator's mistake, a restore, an old bug). Callers treat such a key as holding nothing
    of ours; translated like other failures it would be a 503 for as long as it stays."""
    return isinstance(error, redis.ResponseError) and str(error).startswith("WRONGTYPE")


def is_cluster(client: object) -> bool:
    """True for a Redis Cluster client (sync or asyncio)."""
    return isinstance(client, redis.cluster.RedisCluster | redis.asyncio.RedisCluster)


def reply_text(value: bytes | str) -> str:
    """A key or hash field from a reply (our clients never decode them) as text. Bytes that
    are not UTF-8, which the gateway never writes, give replacement characters, not an error."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def async_subscriber_client(settings: RedisSettings) -> redis.asyncio.Redis:
    """A client for one long-lived pub/sub connection: reads wait as long as they must (the
    subscriber pings to notice a silent server), connecting is bounded like everything else."""
    options: dict[str, Any] = {"socket_timeout": None, "socket_connect_timeout": settings.timeout}
    if settings.mode == "sentinel":
        return _async_sentinel_master(settings, **options)
    if settings.mode == "cluster":
        return cast(redis.asyncio.Redis, _async_cluster(settings, options))
    return redis.asyncio.Redis.from_url(
        settings.url,
        retry=AsyncRetry(NoBackoff(), 0),
        **options,
    )


async def keep_current(client: redis.asyncio.Redis) -> None:
    """Bring the client's view of the servers up to date, off the check path (the session
    change feed, gateway.sessions.changes, calls this about once a second).

    Sentinel: ask the sentinels for the master now and close the client's connections to any
    other server (those in use when they are released); redis-py asks only when it opens a
    connection, which an idle or busy pool rarely does. Cluster: learn the slot layout now
    when the client has none yet or dropped it after an error, rather than in the next check.
    Failures change nothing here: the commands themselves report them.
    """
    if isinstance(client, redis.asyncio.RedisCluster):
        try:
            await client.initialize()  # a no-op while the layout is known
        except REDIS_FAILURES:
            pass
        return
    pool = getattr(client, "connection_pool", None)
    if not isinstance(pool, redis.asyncio.sentinel.SentinelConnectionPool):
        return
    try:
        master = await pool.get_master_address()  # on a change, closes idle connections
    except REDIS_FAILURES:
        return
    for connection in list(pool._in_use_connections):
        # (Sentinel-managed connections are TCP ones: they have a host and a port.)
        if (getattr(connection, "host", None), getattr(connection, "port", None)) != master:
            connection.mark_for_reconnect()  # closed when released


async def subscription_is_current(
    client: redis.asyncio.Redis, pubsub: redis.asyncio.client.PubSub
) -> bool:
    """False once the PubSub's server is no longer the one to listen to.

    Sentinel mode only: after an operator's failover the old master keeps answering pings
    (as a master, for a while), so a silent feed alone would not tell that PUBLISHes now go
    to the new master. Unanswered sentinels do not count as a move.
    """
    pool = getattr(client, "connection_pool", None)
    connection = pubsub.connection
    if not isinstance(pool, redis.asyncio.sentinel.SentinelConnectionPool) or connection is None:
        return True
    try:
        master = await pool.sentinel_manager.discover_master(pool.service_name)
    except REDIS_FAILURES:
        return True
    return bool((connection.host, connection.port) == master)


async def fresh_pubsub(client: redis.asyncio.Redis) -> redis.asyncio.client.PubSub:
    """A new PubSub on the subscriber client, bound to whichever server serves it now.

    Sentinel: its pool asks the sentinels for the master when the PubSub connects. Cluster:
    the layout is read again first (a lost subscription often means a node went away); the
    PubSub then uses the node owning the channel's slot, which is as good as any since a
    classic PUBLISH reaches every node.
    """
    if isinstance(client, redis.asyncio.RedisCluster):
        await client.aclose()  # drops the old layout and connections; the next use re-reads
        await client.initialize()
    return client.pubsub(ignore_subscribe_messages=False)
