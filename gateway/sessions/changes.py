"""The session change feed: both halves of it.

Every write that changes or ends a session in Redis (save, delete, revocation, refreshed
tokens) announces the session's lookup id on the keyspace's invalidation channel; ext_authz
workers hold decrypted sessions in memory and drop their copy the moment they hear it.

:class:`ChangeFeed` is the listening half. It tells its owner three things: the subscription
is confirmed (from now on no change goes unheard), a session changed, and the feed was lost
(whatever may have been missed since). It reconnects for as long as it runs: a dead listener
would leave the cache off and ext_authz's health NOT_SERVING for good.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

import redis
import redis.asyncio

from gateway.redis.clients import (
    MASTER_CHECK_SECONDS,
    REDIS_FAILURES,
    fresh_pubsub,
    is_cluster,
    subscription_is_current,
)
from gateway.sessions.keyspace import Keyspace

logger = logging.getLogger(__name__)

RECONNECT_SECONDS = 1.0
PING_SECONDS = 0.5
# No reply to our pings for this long: the feed is presumed dead.
SILENCE_SECONDS = 1.5
# How often the feed makes sure its server is still the one PUBLISHes go to (sentinel mode).
SERVER_CHECK_SECONDS = MASTER_CHECK_SECONDS


def publish_changes(client: redis.Redis, keys: Keyspace, lookup_ids: Iterable[str]) -> None:
    """Announce that these sessions changed; in one round trip where Redis allows it.

    A cluster pipeline refuses PUBLISH, so there they go one at a time (any node forwards
    a classic PUBLISH to the whole cluster).
    """
    channel = keys.invalidation_channel()
    if is_cluster(client):
        for lookup_id in lookup_ids:
            client.publish(channel, lookup_id)
        return
    pipe = client.pipeline(transaction=False)
    for lookup_id in lookup_ids:
        pipe.publish(channel, lookup_id)
    pipe.execute()


async def publish_change(client: redis.asyncio.Redis, keys: Keyspace, lookup_id: str) -> None:
    """Announce that one session changed (the asyncio store's refreshed tokens)."""
    await client.publish(keys.invalidation_channel(), lookup_id)


class ChangeFeed:
    """Listens for session changes on a dedicated subscriber client, reconnecting as needed.

    ``keep_current`` is awaited about once a second while the feed runs: the loop runs in
    every worker whatever the traffic, so it is where the store's view of the servers
    (sentinel master, cluster layout) is kept current too.
    """

    def __init__(
        self,
        client: redis.asyncio.Redis,
        keys: Keyspace,
        *,
        on_subscribed: Callable[[], None],
        on_change: Callable[[str], None],
        on_lost: Callable[[], None],
        keep_current: Callable[[], Awaitable[None]],
    ) -> None:
        self._client = client
        self._channel = keys.invalidation_channel()
        self._on_subscribed = on_subscribed
        self._on_change = on_change
        self._on_lost = on_lost
        self._keep_current = keep_current
        self._listener: asyncio.Task[None] | None = None

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
                # Whatever went wrong, the feed must come back (see the module doc).
                logger.exception("session invalidation feed failed; cache off")
            finally:
                self._on_lost()
                if pubsub is not None:
                    try:
                        await pubsub.aclose()
                    except REDIS_FAILURES:
                        pass
            await asyncio.sleep(RECONNECT_SECONDS)

    async def _follow(self, pubsub: redis.asyncio.client.PubSub) -> None:
        """Pass changes on; ping so that a silent (paused, failed-over) Redis is noticed,
        and leave a server that is answering but no longer the master."""
        last_heard = time.monotonic()
        next_ping = next_server_check = last_heard
        while True:
            now = time.monotonic()
            if now >= next_ping:
                await pubsub.ping()
                next_ping = now + PING_SECONDS
            if now >= next_server_check:
                await self._keep_current()
                if not await subscription_is_current(self._client, pubsub):
                    raise redis.ConnectionError("the invalidation feed's server is not the master")
                next_server_check = now + SERVER_CHECK_SECONDS
            message = await pubsub.get_message(timeout=PING_SECONDS / 2)
            if message is not None:
                last_heard = time.monotonic()
                kind = message["type"]
                if kind == "subscribe":
                    self._on_subscribed()
                elif kind == "message":
                    data = message["data"]
                    # Anyone who can publish can send garbage; it only evicts nothing.
                    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
                    self._on_change(text)
            elif time.monotonic() - last_heard > SILENCE_SECONDS:
                raise TimeoutError("the invalidation feed went silent")
