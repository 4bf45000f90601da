"""Redis clients built from the config, and the one place Redis errors become ours.

Clients never retry on their own: a retry inside the client would outlive Envoy's
ext_authz timeout. A paused or unreachable Redis surfaces as :class:`StoreUnavailable`
within ``redis.timeout`` and the caller answers 503.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from gateway.config import RedisSettings
from gateway.errors import StoreUnavailable
from gateway.metrics import timed_redis

MAX_CONNECTIONS = 64


def _options(settings: RedisSettings) -> dict[str, object]:
    return {
        "socket_timeout": settings.timeout,
        "socket_connect_timeout": settings.timeout,
        "retry_on_timeout": False,
        "health_check_interval": 0,
    }


def sync_client(settings: RedisSettings) -> redis.Redis:
    """A blocking client for the login app and the CLI."""
    return redis.Redis.from_url(
        settings.url,
        retry=Retry(NoBackoff(), 0),
        max_connections=MAX_CONNECTIONS,
        **_options(settings),  # type: ignore[arg-type]  # kwargs are forwarded verbatim
    )


def async_client(settings: RedisSettings) -> redis.asyncio.Redis:
    """An asyncio client for ext_authz.

    The pool blocks (up to the command timeout) instead of opening unbounded connections,
    so a stalled Redis cannot make every waiting check open a socket of its own.
    """
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        settings.url,
        max_connections=MAX_CONNECTIONS,
        timeout=settings.timeout,
        retry=AsyncRetry(NoBackoff(), 0),
        **_options(settings),
    )
    return redis.asyncio.Redis(connection_pool=pool)


@contextmanager
def translate_redis_errors(action: str) -> Iterator[None]:
    """Turn any Redis failure into :class:`StoreUnavailable` (deny with 503, never log out).

    Also times the operation for the metrics; ``action`` is a fixed phrase from the code.
    """
    try:
        with timed_redis(action):
            yield
    except (redis.RedisError, OSError) as exc:
        raise StoreUnavailable(f"redis unavailable while {action}: {type(exc).__name__}") from exc


def async_subscriber_client(settings: RedisSettings) -> redis.asyncio.Redis:
    """A client for one long-lived pub/sub connection: reads wait as long as they must (the
    subscriber pings to notice a silent server), connecting is bounded like everything else."""
    return redis.asyncio.Redis.from_url(
        settings.url,
        socket_timeout=None,
        socket_connect_timeout=settings.timeout,
        retry=AsyncRetry(NoBackoff(), 0),
    )
