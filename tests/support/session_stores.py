"""What the session store contract suite runs on: a clock the test moves, every Redis
topology the gateway supports, and the asyncio store driven from a plain test function."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import redis

from gateway.config import GatewayConfig, parse_config
from gateway.sessions.factory import async_store, sync_store
from gateway.sessions.store import AsyncSessionStore, SessionStore
from tests.support.redis_topologies import RedisCluster3, SentinelGroup
from tests.support.servers import TEST_SECRET, RedisServer, base_config

T = TypeVar("T")


class FakeClock:
    """Unix time that only moves when the test says so."""

    def __init__(self, start: float | None = None) -> None:
        # Near the real time: Redis TTLs the stores derive from it stay plausible.
        self.now = float(int(time.time())) if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Topology:
    """One way of running Redis, as the gateway's ``redis`` config block names it."""

    name: str
    settings: dict[str, Any]
    # Clients of every node that takes writes (for command statistics).
    masters: Callable[[], list[redis.Redis]]

    def config(self, **session: str) -> GatewayConfig:
        """A gateway config on this topology under a key prefix of its own."""
        raw = base_config(redis_url="redis://127.0.0.1:1/0", backend_url="http://127.0.0.1:1")
        raw["redis"].update(self.settings)
        raw["redis"]["key_prefix"] = f"c{secrets.token_hex(6)}:"
        # A busy machine is no outage here (ext_authz's own timeout must stay above Redis's).
        raw["redis"]["timeout"] = "2s"
        raw["ext_authz"]["timeout"] = "3s"
        raw["session"].update(session)
        return parse_config(raw, {"GATEWAY_SECRET_KEYS": TEST_SECRET})

    def command_calls(self, command: str) -> int:
        """How often the masters ran ``command`` since :meth:`reset_stats`."""
        total = 0
        for node in self.masters():
            with node:
                stats = node.info("commandstats")
            total += int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))
        return total

    def reset_stats(self) -> None:
        for node in self.masters():
            with node:
                node.config_resetstat()


def standalone(server: RedisServer) -> Topology:
    return Topology(
        "standalone",
        {"url": server.url},
        lambda: [redis.Redis.from_url(server.url, socket_timeout=2)],
    )


def sentinel(group: SentinelGroup) -> Topology:
    return Topology("sentinel", group.redis_settings(), lambda: [group.master()])


def cluster(nodes: RedisCluster3) -> Topology:
    return Topology(
        "cluster",
        nodes.redis_settings(),
        lambda: [redis.Redis(port=port, socket_timeout=2) for port in nodes.ports],
    )


class Stores:
    """Both stores over one config and clock; the asyncio one runs on a loop of its own, so
    a test calls it as ``stores.run(stores.aio.load(credential))``."""

    def __init__(self, config: GatewayConfig, clock: FakeClock) -> None:
        self.config = config
        self.clock = clock
        self.sync: SessionStore = sync_store(config, clock=clock)
        self._runner = asyncio.Runner()
        self.aio: AsyncSessionStore = self.run(self._open_async())

    async def _open_async(self) -> AsyncSessionStore:
        return async_store(self.config, self.clock)  # its connections belong to this loop

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(coroutine)

    def close(self) -> None:
        try:
            self.run(self.aio.close())
        finally:
            self._runner.close()
