"""A refresh that was sent is completed and kept: around a fake Redis and a fake provider.

The fake provider rotates refresh tokens as real ones do (a retired one gets invalid_grant),
the fake store refuses writes while told to (Redis at maxmemory, paused, restarting), and the
clock is the test's.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import pytest

from ext_authz.authorizer import Authorizer
from ext_authz.decision import Allow, Decider, Deny
from ext_authz.provider_calls import PROVIDER_THREADS, ProviderCalls
from ext_authz.refresh import Refresher, SessionGone
from ext_authz.request import CheckRequest
from ext_authz.unstored_tokens import FIRST_WRITE_RETRY, LAST_WRITE_RETRY
from gateway.config import GatewayConfig, TokenSettings, parse_config
from gateway.errors import ConfigError, ProviderRejected, StoreUnavailable
from gateway.sessions.credentials import SessionCredential
from gateway.sessions.model import Identity, Session, TokenSet

COOKIE = "gw_session"
NOW = 1_700_000_000.0
SETTINGS = TokenSettings(refresh_margin=60, refresh_lock_lease=5, refresh_wait=0.2)


class FakeLock:
    def __init__(self, store: FakeStore, key: str, owner: str) -> None:
        self._store, self.key, self.owner = store, key, owner

    async def acquire(self) -> bool:
        if self.key in self._store.locks:
            return False
        self._store.locks[self.key] = self.owner
        self._store.taken_by.append(self.owner)
        return True

    async def extend(self) -> bool:
        return self._store.locks.get(self.key) == self.owner

    async def release(self) -> None:
        if self._store.locks.get(self.key) == self.owner:
            del self._store.locks[self.key]


class FakeStore:
    """Redis as the refresher sees it: records, locks, and writes that fail on demand."""

    def __init__(self) -> None:
        self.records: dict[str, Session] = {}
        self.locks: dict[str, str] = {}
        self.taken_by: list[str] = []  # each lock acquisition's owner
        self.refuse_writes = 0  # how many writes fail before one is accepted
        self.writes_allowed = asyncio.Event()
        self.writes_allowed.set()
        self.unreadable = False
        self.write_attempts = 0
        self._owners = 0

    async def load(self, credential: SessionCredential) -> Session | None:
        if self.unreadable:
            raise StoreUnavailable("connection refused")
        return self.records.get(credential.lookup_id)

    reload = load

    def evict(self, credential: SessionCredential) -> None:
        pass

    async def replace_tokens(
        self,
        credential: SessionCredential,
        provider_id: str,
        tokens: TokenSet,
        *,
        used_refresh_token: str | None = None,
    ) -> Session | None:
        self.write_attempts += 1
        if self.refuse_writes or not self.writes_allowed.is_set():
            self.refuse_writes = max(0, self.refuse_writes - 1)
            raise StoreUnavailable("OOM command not allowed when used memory > 'maxmemory'")
        current = self.records.get(credential.lookup_id)
        if current is None:
            return None
        stored = current.tokens.get(provider_id)
        if stored is not None and stored.refresh_token != used_refresh_token:
            return current
        updated = current.with_tokens(provider_id, tokens)
        self.records[credential.lookup_id] = updated
        return updated

    def refresh_lock(self, lookup_id: str, provider_id: str, lease_ms: int) -> FakeLock:
        self._owners += 1
        return FakeLock(self, f"lock:{lookup_id}:{provider_id}", f"owner-{self._owners}")


class RotatingProvider:
    """Issues ``access-N``/``refresh-N`` and retires each refresh token it was given."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.gate = gate
        self.retired: set[str] = set()
        self.calls: list[dict[str, Any]] = []
        self.running = 0
        self.most_running = 0
        self._lock = threading.Lock()

    def refresh(self, tokens: TokenSet, now: float, *, read_timeout: float | None = None):
        with self._lock:
            self.calls.append({"refresh_token": tokens.refresh_token, "timeout": read_timeout})
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            if self.gate is not None:
                assert self.gate.wait(30), "the test never opened the provider's gate"
            with self._lock:
                if tokens.refresh_token in self.retired:
                    raise ProviderRejected("retired", provider="primary", error="invalid_grant")
                self.retired.add(tokens.refresh_token)
                n = len(self.retired)
            return TokenSet(f"access-{n}", f"refresh-{n}", expires_at=int(now + 300))
        finally:
            with self._lock:
                self.running -= 1


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def gateway_config() -> GatewayConfig:
    backend = "http://backend.test"
    return parse_config(
        {
            "public_url": "http://gateway.test:8080",
            "session": {"cookie_name": COOKIE},
            "providers": [
                {"id": "primary", "kind": "oidc", "issuer": "https://idp.test", "client_id": "gw"}
            ],
            "routes": [
                {"name": "api", "prefix": "/api/", "upstream": backend, "provider": "primary"}
            ],
        },
        {"GATEWAY_SECRET_KEYS": "x" * 40},
    )


CONFIG = gateway_config()


class World:
    """One worker's refresher and authorizer over the fake store and provider."""

    def __init__(self, provider: RotatingProvider | None = None) -> None:
        self.store = FakeStore()
        self.provider = provider or RotatingProvider()
        self.clock = Clock()
        self.backoff: list[float] = []
        self.time_per_retry = 0.0  # how far the clock moves while a retry waits
        self.refresher = Refresher(
            self.store,  # type: ignore[arg-type]
            {p.id: p for p in CONFIG.providers},
            SETTINGS,
            self.clock,
            sleep=self._sleep,
            client_for=lambda _: self.provider,  # type: ignore[arg-type,return-value]
        )
        self.authorizer = Authorizer(Decider(CONFIG), self.store, self.refresher, self.clock)

    async def _sleep(self, seconds: float) -> None:
        self.backoff.append(seconds)
        self.clock.now += self.time_per_retry
        if not self.store.writes_allowed.is_set():
            await self.store.writes_allowed.wait()
        await asyncio.sleep(0)

    def session(
        self, refresh_token: str = "refresh-0", expires_in: float = 30
    ) -> SessionCredential:
        """A session whose token is due for a refresh (it expires within the margin)."""
        credential = SessionCredential.generate()
        tokens = TokenSet("access-0", refresh_token, expires_at=int(self.clock() + expires_in))
        self.store.records[credential.lookup_id] = Session(
            Identity("user-42"), int(NOW), int(NOW + 3600), {"primary": tokens}
        )
        return credential

    async def bearer(self, credential: SessionCredential) -> str | int:
        """The token a check injects, or the status of its denial."""
        request = CheckRequest(
            "GET", "/api/x", {"cookie": f"{COOKIE}={credential.encode()}"}, "api"
        )
        decision = await self.authorizer.check(request)
        if isinstance(decision, Allow):
            return dict(decision.set_headers)["authorization"]
        assert isinstance(decision, Deny)
        return decision.status

    async def settled(self) -> None:
        """Every refresh task has finished."""
        tasks = list(self.refresher._in_flight.values())
        if tasks:
            await asyncio.wait(tasks, timeout=10)

    def stored(self, credential: SessionCredential) -> TokenSet:
        return self.store.records[credential.lookup_id].tokens["primary"]


def test_a_refused_write_is_retried_with_backoff_until_redis_takes_it() -> None:
    async def scenario() -> None:
        world = World()
        credential = world.session()
        world.store.refuse_writes = 7
        assert await world.bearer(credential) == "Bearer access-1"
        await world.settled()
        assert world.stored(credential).refresh_token == "refresh-1"
        assert world.backoff == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
        assert len(world.provider.calls) == 1 and len(world.refresher.unstored) == 0

    asyncio.run(scenario())
    assert (FIRST_WRITE_RETRY, LAST_WRITE_RETRY) == (0.05, 1.0)


def test_while_redis_refuses_the_write_the_new_token_is_served_and_never_refreshed_again() -> None:
    async def scenario() -> None:
        world = World()
        credential = world.session()
        world.store.writes_allowed.clear()
        # The first check stops waiting after refresh_wait, with the provider's answer.
        assert await world.bearer(credential) == "Bearer access-1"
        assert world.stored(credential).refresh_token == "refresh-0"  # not in Redis yet
        # The new token is due too now: later checks join the refresh under way rather
        # than send the retired refresh-0 (or refresh-1, which Redis does not have).
        world.clock.now += 270
        for _ in range(3):
            assert await world.bearer(credential) == "Bearer access-1"
        assert [call["refresh_token"] for call in world.provider.calls] == ["refresh-0"]
        world.store.writes_allowed.set()  # Redis takes writes again
        await world.settled()
        assert world.stored(credential).refresh_token == "refresh-1"
        assert len(world.refresher.unstored) == 0
        # The rotated token was kept: the next refresh uses it and succeeds.
        assert await world.bearer(credential) == "Bearer access-2"
        assert world.provider.calls[-1]["refresh_token"] == "refresh-1"

    asyncio.run(scenario())


def test_a_logout_during_the_pending_write_wins_and_the_session_is_not_recreated() -> None:
    async def scenario() -> None:
        world = World()
        credential = world.session()
        world.store.writes_allowed.clear()
        assert await world.bearer(credential) == "Bearer access-1"
        del world.store.records[credential.lookup_id]  # logged out meanwhile
        assert await world.bearer(credential) == 401
        world.store.writes_allowed.set()
        task = next(iter(world.refresher._in_flight.values()))
        with pytest.raises(SessionGone):
            await task
        assert credential.lookup_id not in world.store.records
        assert len(world.refresher.unstored) == 0

    asyncio.run(scenario())


def test_newer_tokens_written_elsewhere_win_over_the_ones_held_in_memory() -> None:
    async def scenario() -> None:
        world = World()
        credential = world.session()
        world.store.writes_allowed.clear()
        assert await world.bearer(credential) == "Bearer access-1"
        session = world.store.records[credential.lookup_id]
        elsewhere = TokenSet("access-other", "refresh-other", expires_at=int(NOW + 300))
        world.store.records[credential.lookup_id] = session.with_tokens("primary", elsewhere)
        assert await world.bearer(credential) == "Bearer access-other"
        world.store.writes_allowed.set()
        await world.settled()
        assert world.stored(credential).refresh_token == "refresh-other"  # the write is fenced

    asyncio.run(scenario())


def test_a_session_that_redis_cannot_read_is_not_served_from_memory() -> None:
    async def scenario() -> None:
        world = World()
        credential = world.session()
        world.store.writes_allowed.clear()
        assert await world.bearer(credential) == "Bearer access-1"
        world.store.unreadable = True
        assert await world.bearer(credential) == 503
        world.store.unreadable = False
        world.store.writes_allowed.set()
        await world.settled()
        assert world.stored(credential).refresh_token == "refresh-1"

    asyncio.run(scenario())


def test_the_write_is_retried_no_longer_than_the_session_lives() -> None:
    async def scenario() -> None:
        world = World()
        credential = world.session()
        world.store.refuse_writes = 10**9
        world.store.writes_allowed.set()
        world.time_per_retry = 600  # the session's absolute expiry is an hour away
        await world.bearer(credential)
        task = next(iter(world.refresher._in_flight.values()), None)
        if task is not None:
            with pytest.raises(SessionGone):
                await task
        assert len(world.backoff) == 6  # an attempt at each 10 minutes of the hour
        assert len(world.refresher.unstored) == 0

    asyncio.run(scenario())


def test_a_lock_whose_lease_ran_out_during_the_outage_is_taken_again() -> None:
    async def scenario() -> None:
        world = World()
        credential = world.session()
        world.store.writes_allowed.clear()
        assert await world.bearer(credential) == "Bearer access-1"
        ((key, owner),) = world.store.locks.items()
        del world.store.locks[key]  # the lease ran out on Redis's clock
        world.store.writes_allowed.set()
        await world.settled()
        # Taken again by the same refresh before its next write, released once stored.
        assert world.store.taken_by == [owner, owner]
        assert world.stored(credential).refresh_token == "refresh-1"
        assert world.store.locks == {}

    asyncio.run(scenario())


def test_a_slow_provider_is_waited_for_to_the_refresh_timeout_not_abandoned() -> None:
    async def scenario() -> None:
        gate = threading.Event()
        world = World(RotatingProvider(gate))
        credential = world.session()
        # The check stops waiting after refresh_wait and answers with the old token...
        assert await world.bearer(credential) == "Bearer access-0"
        gate.set()  # ...the provider answers later...
        await world.settled()
        # ...and its answer is stored.
        assert world.stored(credential).refresh_token == "refresh-1"
        assert world.provider.calls == [{"refresh_token": "refresh-0", "timeout": 30.0}]

    asyncio.run(scenario())


def test_stalled_provider_calls_leave_the_default_executor_free_for_dns() -> None:
    async def scenario() -> None:
        gate = threading.Event()
        world = World(RotatingProvider(gate))
        try:
            # More stalled refreshes than asyncio's default executor has threads (at most 32).
            credentials = [world.session() for _ in range(40)]
            await asyncio.gather(*(world.bearer(c) for c in credentials))
            loop = asyncio.get_running_loop()
            resolved = await asyncio.wait_for(
                loop.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM), 5
            )
            assert resolved
            assert world.provider.most_running <= PROVIDER_THREADS
        finally:
            gate.set()
        await world.settled()
        assert all(world.stored(c).refresh_token.startswith("refresh-") for c in credentials)
        assert {world.stored(c).refresh_token for c in credentials} != {"refresh-0"}

    asyncio.run(scenario())


def test_refreshes_under_way_and_their_unstored_tokens_survive_a_reload() -> None:
    async def scenario() -> None:
        world = World()
        credential = world.session()
        world.store.writes_allowed.clear()
        assert await world.bearer(credential) == "Bearer access-1"
        world.refresher.reconfigure(
            {p.id: p for p in CONFIG.providers},
            SETTINGS.model_copy(update={"refresh_margin": 120.0}),
        )
        world.clock.now += 270
        assert await world.bearer(credential) == "Bearer access-1"
        assert len(world.provider.calls) == 1
        world.store.writes_allowed.set()
        await world.settled()
        assert world.stored(credential).refresh_token == "refresh-1"

    asyncio.run(scenario())


def test_closing_lets_a_pending_write_finish_within_the_grace() -> None:
    async def scenario() -> None:
        world = World()
        credential = world.session()
        world.store.refuse_writes = 3
        world.store.writes_allowed.set()
        await world.bearer(credential)
        await world.refresher.close(grace=5)
        assert world.stored(credential).refresh_token == "refresh-1"

    asyncio.run(scenario())


def test_the_pool_runs_calls_in_named_threads_of_its_own() -> None:
    async def scenario() -> None:
        calls = ProviderCalls(2)
        try:
            name = await calls.run(lambda: threading.current_thread().name)
        finally:
            calls.shutdown()
        assert name.startswith("provider-call")

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("tokens", "accepted"),
    [
        ({}, True),
        ({"refresh_timeout": "30s", "refresh_wait": "500ms"}, True),
        ({"refresh_timeout": "200ms", "refresh_wait": "500ms"}, False),
        ({"refresh_timeout": "10m"}, False),
        ({"refresh_timeout": 0}, False),
    ],
)
def test_refresh_timeout_is_validated(tokens: dict[str, Any], accepted: bool) -> None:
    raw = CONFIG.model_dump(mode="json")
    raw["tokens"] = tokens
    if accepted:
        assert parse_config(raw, {"GATEWAY_SECRET_KEYS": "x" * 40}).tokens.refresh_timeout > 0
    else:
        with pytest.raises(ConfigError, match="refresh_timeout"):
            parse_config(raw, {"GATEWAY_SECRET_KEYS": "x" * 40})
