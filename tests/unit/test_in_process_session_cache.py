"""The in-memory session cache: a hit needs the credential's own secret, and memory is
trusted only while the invalidation feed is known to work."""

from __future__ import annotations

import pytest

from ext_authz.session_cache import SessionCache
from gateway.sessions.credentials import SessionCredential
from gateway.sessions.model import Identity, Session

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
