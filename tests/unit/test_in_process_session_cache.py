"""The in-memory session cache: a hit needs the credential's own secret, and memory is
trusted only while the invalidation feed is known to work."""

from __future__ import annotations

import pytest

from ext_authz.session_cache import SessionCache, entry_size
from gateway.sessions.credentials import SessionCredential
from gateway.sessions.model import Identity, Session, TokenSet

SESSION = Session(Identity("user-42"), created_at=0, expires_at=2_000_000_000)


@pytest.fixture
def cache() -> SessionCache:
    cache = SessionCache(ttl=2.0, max_entries=2)
    cache.enabled = True
    return cache


def test_a_cached_session_is_answered_for_the_same_credential(cache: SessionCache) -> None:
    credential = SessionCredential.generate()
    cache.put(credential, SESSION)
    assert cache.get(credential) is SESSION


def test_the_session_id_without_its_secret_gets_nothing_from_memory(cache: SessionCache) -> None:
    credential = SessionCredential.generate()
    cache.put(credential, SESSION)
    forged = SessionCredential(credential.session_id, SessionCredential.generate().secret)
    assert cache.get(forged) is None
    assert cache.get(credential) is None  # the entry was dropped, not merely skipped


def test_without_a_working_feed_nothing_is_stored_or_answered(cache: SessionCache) -> None:
    credential = SessionCredential.generate()
    cache.put(credential, SESSION)
    cache.disable()
    assert cache.get(credential) is None
    cache.put(credential, SESSION)
    assert len(cache) == 0


def test_an_entry_lives_at_most_the_ttl() -> None:
    now = [1000.0]
    cache = SessionCache(ttl=2.0, clock=lambda: now[0])
    cache.enabled = True
    credential = SessionCredential.generate()
    cache.put(credential, SESSION)
    now[0] += 1.9
    assert cache.get(credential) is SESSION
    now[0] += 0.1
    assert cache.get(credential) is None


def test_an_invalidation_evicts_and_starts_a_new_generation(cache: SessionCache) -> None:
    credential = SessionCredential.generate()
    cache.put(credential, SESSION)
    generation = cache.generation
    cache.evict(credential.lookup_id)
    assert cache.get(credential) is None
    assert cache.generation == generation + 1


def test_the_least_recently_stored_entry_goes_first_when_full(cache: SessionCache) -> None:
    first, second, third = (SessionCredential.generate() for _ in range(3))
    for credential in (first, second, third):
        cache.put(credential, SESSION)
    assert len(cache) == 2
    assert cache.get(first) is None
    assert cache.get(third) is SESSION


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_expired_entries_are_dropped_without_being_looked_up_again() -> None:
    clock = FakeClock()
    cache = SessionCache(ttl=2.0, clock=clock)
    cache.enabled = True
    for _ in range(100):  # sessions seen once, never again
        cache.put(SessionCredential.generate(), SESSION)
    clock.now += 1.0
    newer = SessionCredential.generate()
    cache.put(newer, SESSION)
    assert len(cache) == 101  # none has expired yet
    clock.now += 1.0
    cache.put(SessionCredential.generate(), SESSION)  # storing drops what expired
    assert len(cache) == 2
    clock.now += 1.0
    cache.sweep()  # and so does the sweep, with no traffic at all
    assert len(cache) == 1 and cache.size_bytes == entry_size(SESSION)
    clock.now += 1.0
    cache.sweep()
    assert len(cache) == 0 and cache.size_bytes == 0


def test_storing_a_session_again_gives_it_a_new_lifetime_and_keeps_expiry_in_order() -> None:
    clock = FakeClock()
    cache = SessionCache(ttl=2.0, clock=clock)
    cache.enabled = True
    renewed, other = SessionCredential.generate(), SessionCredential.generate()
    cache.put(renewed, SESSION)
    clock.now += 1.0
    cache.put(other, SESSION)
    clock.now += 0.5
    cache.put(renewed, SESSION)  # re-read from Redis: its deadline is now the latest
    clock.now += 1.7  # past other's deadline, before renewed's new one
    cache.sweep()  # stops at the first entry still valid: it must be the renewed one
    assert len(cache) == 1
    assert cache.get(renewed) is SESSION


def test_the_memory_budget_drops_the_oldest_entries_first() -> None:
    cache = SessionCache(ttl=2.0, max_bytes=3 * entry_size(SESSION))
    cache.enabled = True
    credentials = [SessionCredential.generate() for _ in range(5)]
    for credential in credentials:
        cache.put(credential, SESSION)
    assert len(cache) == 3 and cache.size_bytes == 3 * entry_size(SESSION)
    assert [cache.get(c) for c in credentials[:2]] == [None, None]
    assert all(cache.get(c) is SESSION for c in credentials[2:])


def test_a_session_with_bigger_tokens_weighs_more() -> None:
    small = Session(Identity("u"), 0, 1, {"p": TokenSet("a" * 40)})
    large = Session(Identity("u"), 0, 1, {"p": TokenSet("a" * 4000, id_token="b" * 2000)})
    assert entry_size(large) - entry_size(small) >= 5960
