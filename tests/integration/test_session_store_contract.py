"""The session stores' contract: every test here runs against standalone Redis, Sentinel and
Cluster, and where both stores offer the behaviour, against the blocking and the asyncio one.

The stores read the time from a clock the test moves, so a lifetime ends because the test
says so, never because the test slept. Redis counts key TTLs down in real time: where Redis
itself must forget a key (the idle timeout, a dead holder's lock), the tests assert the TTL
the store set, and lower it by hand to stand for the time that passed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest

from gateway.redis.clients import async_subscriber_client, sync_client
from gateway.sessions.changes import ChangeFeed
from gateway.sessions.credentials import SessionCredential
from gateway.sessions.factory import keyspace
from gateway.sessions.model import Identity, Session, TokenSet
from gateway.sessions.store import TOUCH_FRACTION
from tests.support.redis_topologies import RedisCluster3, SentinelGroup
from tests.support.session_stores import (
    FakeClock,
    Stores,
    Topology,
    cluster,
    sentinel,
    standalone,
)

pytestmark = pytest.mark.integration

IDLE = 600  # seconds: session.idle_timeout below
LIFETIME = 3600  # seconds: session.absolute_lifetime below
MARGIN_MS = 30_000  # what a busy machine may take between a write and the test's look at it


@pytest.fixture(scope="module")
def sentinel_group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    group = SentinelGroup(tmp_path_factory.mktemp("contract-sentinel")).start()
    yield group
    group.stop()


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster3]:
    nodes = RedisCluster3(tmp_path_factory.mktemp("contract-cluster")).start()
    yield nodes
    nodes.stop()


@pytest.fixture(scope="module", params=["standalone", "sentinel", "cluster"])
def topology(request: pytest.FixtureRequest) -> Topology:
    if request.param == "standalone":
        return standalone(request.getfixturevalue("redis_server"))
    if request.param == "sentinel":
        return sentinel(request.getfixturevalue("sentinel_group"))
    return cluster(request.getfixturevalue("redis_cluster"))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def stores(topology: Topology, clock: FakeClock) -> Iterator[Stores]:
    config = topology.config(idle_timeout=f"{IDLE}s", absolute_lifetime=f"{LIFETIME}s")
    both = Stores(config, clock)
    yield both
    both.close()


@pytest.fixture(params=["sync", "async"])
def load(request: pytest.FixtureRequest, stores: Stores):
    """A session read the way one flavour of store reads it."""
    if request.param == "sync":
        return stores.sync.load
    return lambda credential: stores.run(stores.aio.load(credential))


def tokens(access: str = "access-1", refresh: str = "refresh-1") -> TokenSet:
    return TokenSet(access, refresh_token=refresh)


def start(
    stores: Stores,
    subject: str = "alice",
    provider_session_id: str = "",
    *,
    lifetime: float | None = None,
    not_after: int | None = None,
) -> tuple[SessionCredential, Session]:
    """A session of ``subject`` started now (by the test's clock) and saved."""
    identity = Identity(
        subject,
        email=f"{subject}@example.org",
        groups=("staff",),
        provider_session_id=provider_session_id,
    )
    return stores.sync.create(
        identity, {"primary": tokens()}, stores.clock(), lifetime=lifetime, not_after=not_after
    )


def record_pttl(stores: Stores, credential: SessionCredential) -> int:
    """Milliseconds Redis still keeps the session's record (-2: none)."""
    key = keyspace(stores.config).session_record(credential.lookup_id)
    return int(sync_client(stores.config.redis).pttl(key))


def set_record_pttl(stores: Stores, credential: SessionCredential, ms: int) -> None:
    """Stand for time passing in Redis: the record has ``ms`` left to live."""
    key = keyspace(stores.config).session_record(credential.lookup_id)
    assert sync_client(stores.config.redis).pexpire(key, ms)


# -- saving and loading ---------------------------------------------------------------------


def test_a_saved_session_loads_as_it_was_saved(stores, load):
    credential, session = start(stores)
    assert load(credential) == session
    assert load(SessionCredential.generate()) is None


def test_a_session_ends_at_its_absolute_lifetime_however_recently_used(stores, load, clock):
    credential, session = start(stores)
    assert session.expires_at == int(clock()) + LIFETIME
    clock.advance(LIFETIME - 1)
    assert load(credential) == session
    clock.advance(1)
    assert load(credential) is None


def test_a_session_started_with_a_shorter_lifetime_or_a_bound_ends_then(stores, load, clock):
    short, _ = start(stores, lifetime=120)
    bounded, _ = start(stores, not_after=int(clock()) + 60)
    clock.advance(60)
    assert load(bounded) is None
    assert load(short) is not None
    clock.advance(60)
    assert load(short) is None


def test_redis_keeps_a_record_for_the_idle_timeout_and_never_past_the_lifetime(stores, clock):
    credential, _ = start(stores)
    assert IDLE * 1000 - MARGIN_MS < record_pttl(stores, credential) <= IDLE * 1000
    # Saved again 100 s before its absolute end: Redis keeps it 100 s, not an idle window.
    clock.advance(LIFETIME - 100)
    stores.sync.save(credential, stores.sync.load(credential))
    assert 100_000 - MARGIN_MS < record_pttl(stores, credential) <= 100_000


def test_a_session_redis_forgot_for_idleness_is_gone(stores, load):
    credential, _ = start(stores)
    set_record_pttl(stores, credential, 1)  # its idle timeout ran out
    deadline = time.monotonic() + 10
    while record_pttl(stores, credential) != -2:
        assert time.monotonic() < deadline, "Redis kept a record past its TTL"
        time.sleep(0.01)
    assert load(credential) is None


# -- the idle slide (asyncio store: a check is use) ------------------------------------------


def test_use_slides_the_idle_window_once_a_tenth_of_it_has_passed(stores):
    credential, _ = start(stores)
    unused_a_little = int(IDLE * 1000 * (1 - TOUCH_FRACTION / 2))
    set_record_pttl(stores, credential, unused_a_little)
    assert stores.run(stores.aio.load(credential)) is not None
    assert record_pttl(stores, credential) <= unused_a_little  # not slid yet

    unused_long_enough = int(IDLE * 1000 * (1 - 2 * TOUCH_FRACTION))
    set_record_pttl(stores, credential, unused_long_enough)
    assert stores.run(stores.aio.load(credential)) is not None
    assert record_pttl(stores, credential) > IDLE * 1000 - MARGIN_MS  # a fresh idle window


def test_the_blocking_stores_reads_do_not_slide_the_idle_window(stores):
    credential, _ = start(stores)
    unused = int(IDLE * 1000 * (1 - 2 * TOUCH_FRACTION))
    set_record_pttl(stores, credential, unused)
    assert stores.sync.load(credential) is not None
    assert stores.run(stores.aio.reload(credential)) is not None
    assert record_pttl(stores, credential) <= unused


def test_the_idle_slide_never_extends_a_session_past_its_lifetime(stores, clock):
    credential, _ = start(stores)
    clock.advance(LIFETIME - 200)
    set_record_pttl(stores, credential, 150_000)  # unused for longer than a tenth of IDLE
    assert stores.run(stores.aio.load(credential)) is not None
    assert 150_000 < record_pttl(stores, credential) <= 200_000


def test_a_busy_session_costs_one_write_per_tenth_of_the_idle_window(stores, topology):
    credential, _ = start(stores)
    set_record_pttl(stores, credential, int(IDLE * 1000 * (1 - 2 * TOUCH_FRACTION)))
    topology.reset_stats()
    for _ in range(50):
        assert stores.run(stores.aio.load(credential)) is not None
    assert topology.command_calls("pexpire") == 1
    assert topology.command_calls("set") == 0


# -- ending sessions ------------------------------------------------------------------------


def test_a_deleted_session_is_gone_and_leaves_its_users_index(stores, load):
    credential, session = start(stores)
    other, _ = start(stores)
    assert stores.sync.delete(credential, session) is True
    assert load(credential) is None
    assert stores.sync.lookup_ids_of_user("alice") == [other.lookup_id]
    assert stores.sync.delete(credential, session) is False


def test_a_users_sessions_are_listed_and_ended_together(stores, load):
    bob = [start(stores, "bob")[0] for _ in range(3)]
    carol, _ = start(stores, "carol")
    assert stores.sync.lookup_ids_of_user("bob") == sorted(c.lookup_id for c in bob)

    assert stores.sync.delete_by_lookup_id(bob[0].lookup_id, "bob") is True
    assert load(bob[0]) is None
    assert stores.sync.lookup_ids_of_user("bob") == sorted(c.lookup_id for c in bob[1:])
    assert stores.sync.delete_by_lookup_id(bob[0].lookup_id, "bob") is False

    assert stores.sync.delete_user_sessions("bob") == 2
    assert [load(c) for c in bob] == [None, None, None]
    assert stores.sync.lookup_ids_of_user("bob") == []
    assert stores.sync.delete_user_sessions("bob") == 0
    assert load(carol) is not None


def test_a_users_index_forgets_sessions_past_their_lifetime(stores, clock):
    for _ in range(3):
        start(stores, "dave", lifetime=60)
    clock.advance(61)
    kept, _ = start(stores, "dave")
    assert stores.sync.lookup_ids_of_user("dave") == [kept.lookup_id]


def test_an_idp_sessions_sessions_end_together_but_those_kept(stores, load):
    born = [start(stores, user, provider_session_id="sid-1")[0] for user in ("erin", "frank")]
    kept, _ = start(stores, "gina", provider_session_id="sid-1")
    unrelated, _ = start(stores, "erin", provider_session_id="sid-2")
    assert stores.sync.lookup_ids_of_provider_session("sid-1") == sorted(
        c.lookup_id for c in [*born, kept]
    )

    assert stores.sync.delete_provider_session("sid-1", keep=frozenset({kept.lookup_id})) == 2
    assert [load(c) for c in born] == [None, None]
    assert load(kept) is not None and load(unrelated) is not None
    assert stores.sync.lookup_ids_of_provider_session("sid-1") == [kept.lookup_id]


# -- refreshed tokens -------------------------------------------------------------------------


def test_refreshed_tokens_replace_one_providers_and_keep_the_records_ttl(stores):
    credential, session = start(stores)
    before = record_pttl(stores, credential)
    fresh = tokens("access-2", "refresh-2")
    updated = stores.run(
        stores.aio.replace_tokens(credential, "primary", fresh, used_refresh_token="refresh-1")
    )
    assert updated == session.with_tokens("primary", fresh)
    assert stores.sync.load(credential) == updated
    assert 0 < record_pttl(stores, credential) <= before


def test_tokens_refreshed_from_a_superseded_refresh_token_do_not_overwrite_newer_ones(stores):
    credential, _ = start(stores)
    newer = tokens("access-2", "refresh-2")
    stores.run(
        stores.aio.replace_tokens(credential, "primary", newer, used_refresh_token="refresh-1")
    )
    late = replace(newer, access_token="access-1b", refresh_token="", needs_login=True)
    kept = stores.run(
        stores.aio.replace_tokens(credential, "primary", late, used_refresh_token="refresh-1")
    )
    assert kept is not None and kept.tokens["primary"] == newer
    assert stores.sync.load(credential).tokens["primary"] == newer


def test_refreshed_tokens_never_bring_back_a_deleted_session(stores):
    credential, session = start(stores)
    stores.sync.delete(credential, session)
    stored = stores.run(stores.aio.replace_tokens(credential, "primary", tokens("access-2")))
    assert stored is None
    assert stores.run(stores.aio.reload(credential)) is None


# -- the refresh lock ---------------------------------------------------------------------------


def test_one_owner_at_a_time_holds_a_refresh_lock_and_only_it_extends_or_releases(stores):
    lease_ms = 60_000
    first = stores.aio.refresh_lock("session-1", "primary", lease_ms)
    second = stores.aio.refresh_lock("session-1", "primary", lease_ms)
    other_provider = stores.aio.refresh_lock("session-1", "gitlab", lease_ms)
    client = sync_client(stores.config.redis)

    assert stores.run(first.acquire()) is True
    assert lease_ms - MARGIN_MS < client.pttl(first.key) <= lease_ms
    assert stores.run(second.acquire()) is False
    assert stores.run(other_provider.acquire()) is True

    assert stores.run(second.extend()) is False
    client.pexpire(first.key, 1_000)
    assert stores.run(first.extend()) is True
    assert client.pttl(first.key) > lease_ms - MARGIN_MS  # a full lease again

    stores.run(second.release())  # not its lock: nothing happens
    assert stores.run(second.acquire()) is False
    stores.run(first.release())
    assert stores.run(second.acquire()) is True


def test_a_refresh_lock_whose_holder_vanished_is_free_once_its_lease_ends(stores):
    lease_ms = 300
    vanished = stores.aio.refresh_lock("session-2", "primary", lease_ms)
    successor = stores.aio.refresh_lock("session-2", "primary", lease_ms)
    assert stores.run(vanished.acquire()) is True
    taken_at = time.monotonic()
    # Redis's own timer is what this is about: the wait is real, bounded generously above.
    while not stores.run(successor.acquire()):
        assert time.monotonic() - taken_at < 30, "the lock outlived its lease"
        time.sleep(0.02)
    assert time.monotonic() - taken_at >= lease_ms / 1000 * 0.8  # not before, either


def test_a_refresh_lock_left_without_a_lease_blocks_for_one_lease_at_most(stores):
    lease_ms = 300
    client = sync_client(stores.config.redis)
    for holder in ("a-lock-someone-persisted", None):
        wanting = stores.aio.refresh_lock("session-3", "primary", lease_ms)
        if holder is None:  # not even a string: an operator's mistake
            client.hset(wanting.key, "owner", "x")
        else:
            client.set(wanting.key, holder)  # no TTL
        assert stores.run(wanting.acquire()) is False  # held, but now for one lease only
        assert 0 < client.pttl(wanting.key) <= lease_ms
        taken_at = time.monotonic()
        while not stores.run(wanting.acquire()):  # Redis's timer, bounded generously
            assert time.monotonic() - taken_at < 30, "the lock without a lease blocked for good"
            time.sleep(0.02)
        assert client.get(wanting.key) == wanting.owner.encode()
        stores.run(wanting.release())


def test_a_resent_acquire_of_its_own_lock_still_holds_it(stores):
    """A connection lost after Redis took the lock but before its reply came back: the
    client sends the acquire again, which finds the owner's own token."""
    lock = stores.aio.refresh_lock("session-4", "primary", 60_000)
    assert stores.run(lock.acquire()) is True
    assert stores.run(lock.acquire()) is True
    assert stores.run(stores.aio.refresh_lock("session-4", "primary", 60_000).acquire()) is False


# -- the change feed ------------------------------------------------------------------------------


def test_the_change_feed_announces_every_ending_and_every_refresh(stores):
    credential, session = start(stores)
    revoked, _ = start(stores, "bob")
    logged_out, _ = start(stores, "carol", provider_session_id="sid-9")
    heard: list[str] = []

    async def follow() -> None:
        subscribed = asyncio.Event()
        feed = ChangeFeed(
            async_subscriber_client(stores.config.redis),
            keyspace(stores.config),
            on_subscribed=subscribed.set,
            on_change=heard.append,
            on_lost=lambda: None,
            keep_current=stores.aio.keep_current,
        )
        feed.start()
        try:
            await asyncio.wait_for(subscribed.wait(), 30)
            await stores.aio.replace_tokens(credential, "primary", tokens("access-2"))
            # The blocking store's calls, from a thread: the feed goes on listening meanwhile.
            await asyncio.to_thread(stores.sync.delete, credential, session)
            await asyncio.to_thread(stores.sync.delete_user_sessions, "bob")
            await asyncio.to_thread(stores.sync.delete_provider_session, "sid-9")
            expected = [credential.lookup_id] * 2 + [revoked.lookup_id, logged_out.lookup_id]
            deadline = time.monotonic() + 30
            while len(heard) < len(expected):
                assert time.monotonic() < deadline, heard
                await asyncio.sleep(0.02)
            # A cluster relays each PUBLISH over its bus from the node that took it: the
            # order they arrive in is not the order they were sent in.
            assert sorted(heard) == sorted(expected)
        finally:
            await feed.stop()

    stores.run(follow())
