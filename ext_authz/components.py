"""Everything a worker needs to decide checks, built once from the config."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ext_authz.authorizer import Authorizer
from ext_authz.decision import Decider
from ext_authz.refresh import Refresher
from ext_authz.session_cache import CachedSessions, SessionCache
from gateway.config import GatewayConfig
from gateway.redis.clients import async_subscriber_client
from gateway.sessions.factory import async_store, keyspace
from gateway.sessions.store import TOUCH_FRACTION, AsyncSessionStore, Clock


@dataclass
class Components:
    authorizer: Authorizer
    store: AsyncSessionStore
    sessions: CachedSessions
    refresher: Refresher
    # The wall clock everything here reads (sessions and tokens expire in unix seconds).
    clock: Clock = field(default=time.time)

    async def close(self) -> None:
        # Refreshes under way first: they may still have tokens to store in Redis.
        await self.refresher.close()
        await self.sessions.stop()
        await self.store.close()


def decision_parts(
    config: GatewayConfig,
    store: AsyncSessionStore,
    clock: Clock = time.time,
    refresher: Refresher | None = None,
) -> tuple[Decider, Refresher]:
    """What a config reload replaces: routes and policy, providers for refresh. A running
    ``refresher`` is reconfigured rather than replaced: refreshes under way, and tokens they
    have not stored yet, must survive a reload."""
    providers = {p.id: p for p in config.providers}
    if refresher is None:
        refresher = Refresher(store, providers, config.tokens, clock)
    else:
        refresher.reconfigure(providers, config.tokens)
    return Decider(config), refresher


def build_components(
    config: GatewayConfig, clock: Clock = time.time, cache_clock: Clock = time.monotonic
) -> Components:
    """Wire store, cache, refresher and decider; starts the invalidation feed (which also
    tells whether Redis is reachable). ``clock`` tells the time of day (lifetimes, token
    expiry); ``cache_clock`` only measures how long a cache entry has been kept."""
    store = async_store(config, clock)
    decider, refresher = decision_parts(config, store, clock)
    # Entries never outlive a tenth of the idle window, so a busy session is re-read (and
    # its idle timeout slid, see gateway.sessions.store) before Redis could forget it.
    cache_ttl = min(
        config.ext_authz.session_cache_ttl, config.session.idle_timeout * TOUCH_FRACTION
    )
    sessions = CachedSessions(
        store,
        SessionCache(
            cache_ttl, max_bytes=config.ext_authz.session_cache_max_bytes, clock=cache_clock
        ),
        async_subscriber_client(config.redis),
        keyspace(config),
    )
    sessions.start()
    authorizer = Authorizer(decider, sessions, refresher, clock)
    return Components(authorizer, store, sessions, refresher, clock)
