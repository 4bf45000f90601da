"""Session stores over Redis: a blocking one (login app, CLI) and an asyncio one (ext_authz).

What each offers is written down in :mod:`gateway.sessions.interface`. Both share
:class:`SessionCodec` for encryption (key names come from its :class:`Keyspace`) and the
lifetime rules below; each only does its own I/O. A record's Redis TTL is the smaller of
the idle timeout and the time left before its absolute expiry, so Redis itself forgets idle
sessions. Use slides the idle window, but only once a tenth of it has passed, so a busy
session costs one write per ``idle_timeout / 10`` rather than one per request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import redis
import redis.asyncio

from gateway.config import SessionSettings
from gateway.errors import StoreUnavailable
from gateway.redis.clients import is_wrong_type, keep_current, translate_redis_errors
from gateway.sessions.changes import publish_change, publish_changes
from gateway.sessions.credentials import SessionCredential
from gateway.sessions.indexes import IndexEntry, SessionIndexes, warn_wrong_type
from gateway.sessions.interface import AsyncSessions, SyncSessions
from gateway.sessions.model import Identity, Session, SessionCodec, TokenSet
from gateway.sessions.refresh_lock import RefreshLock

TOUCH_FRACTION = 0.1
Clock = Callable[[], float]
logger = logging.getLogger(__name__)


def ttl_ms_for(session: Session, settings: SessionSettings, now: float) -> int:
    """Milliseconds the record may live in Redis from ``now`` (at least 1)."""
    remaining = min(settings.idle_timeout, session.expires_at - now)
    return max(1, int(remaining * 1000))


def touch_ttl_ms(
    session: Session, settings: SessionSettings, now: float, remaining_ttl_ms: int
) -> int | None:
    """The new TTL when the idle window should slide now, else None."""
    idle_ms = settings.idle_timeout * 1000
    unused_for_ms = idle_ms - remaining_ttl_ms
    if unused_for_ms < idle_ms * TOUCH_FRACTION:
        return None
    new_ttl = ttl_ms_for(session, settings, now)
    return new_ttl if new_ttl > remaining_ttl_ms else None


def new_session_times(settings: SessionSettings, now: float) -> tuple[int, int]:
    """(created_at, expires_at) for a session starting at ``now``."""
    return int(now), int(now + settings.absolute_lifetime)


def new_session(
    settings: SessionSettings,
    identity: Identity,
    tokens: dict[str, TokenSet],
    now: float,
    *,
    lifetime: float | None = None,
    not_after: int | None = None,
) -> Session:
    """A session starting at ``now``: it lasts ``session.absolute_lifetime`` (or ``lifetime``)
    and never past ``not_after`` (the session a login only adds providers to)."""
    created_at, expires_at = new_session_times(settings, now)
    if lifetime is not None:
        expires_at = int(now + lifetime)
    if not_after is not None:
        expires_at = min(expires_at, not_after)
    return Session(identity, created_at, expires_at, dict(tokens))


class SessionStore:
    """Blocking store for the login app and the operator CLI."""

    def __init__(
        self,
        client: redis.Redis,
        codec: SessionCodec,
        settings: SessionSettings,
        clock: Clock = time.time,
    ) -> None:
        self._redis = client
        self._codec = codec
        self._settings = settings
        self._keys = codec.keys
        self._clock = clock
        self._indexes = SessionIndexes(client, codec.keys)

    @property
    def indexes(self) -> SessionIndexes:
        """The indexes beside the records (operators list sessions from them)."""
        return self._indexes

    def create(
        self,
        identity: Identity,
        tokens: dict[str, TokenSet],
        now: float,
        *,
        lifetime: float | None = None,
        not_after: int | None = None,
    ) -> tuple[SessionCredential, Session]:
        """Start a session (see :func:`new_session`) under a fresh credential and save it."""
        session = new_session(
            self._settings, identity, tokens, now, lifetime=lifetime, not_after=not_after
        )
        credential = SessionCredential.generate()
        self.save(credential, session)
        return credential, session

    def save(self, credential: SessionCredential, session: Session) -> None:
        """Store the session and add it to its indexes (see gateway.sessions.indexes)."""
        sealed = self._codec.encode(credential, session)
        now = self._clock()
        ttl = ttl_ms_for(session, self._settings, now)
        with translate_redis_errors("saving a session"):
            # The record and its index entries live in different hash slots (different nodes
            # of a cluster), so they cannot be one transaction; they are written in this order
            # instead. Failing in between leaves a record whose credential was never handed
            # out (save raised) and that expires on its own; never a handed-out session
            # missing from the index that "log out everywhere" works from. (SET replaces a
            # value of any type: a damaged record key is simply overwritten.)
            self._redis.set(self._codec.record_key(credential), sealed, px=ttl)
            self._indexes.add(credential.lookup_id, session, now)
            publish_changes(self._redis, self._keys, [credential.lookup_id])

    def load(self, credential: SessionCredential) -> Session | None:
        with translate_redis_errors("loading a session"):
            try:
                sealed = self._redis.get(self._codec.record_key(credential))
            except redis.ResponseError as exc:
                _tolerate_wrong_type(exc)
                sealed = None
        return _live(self._codec, credential, sealed, self._clock())

    def delete(self, credential: SessionCredential, session: Session | None = None) -> bool:
        """Delete one session (and its index entries when the session is known)."""
        with translate_redis_errors("deleting a session"):
            # The record first: deleting it is what ends the session (DEL removes a value of
            # any type). Index entries are in other hash slots; one left behind by a failure
            # below only names a session that no longer exists.
            deleted = self._redis.delete(self._codec.record_key(credential))
            if session is not None:
                indexes = self._indexes.of_session(credential.lookup_id, session)
                self._indexes.remove([credential.lookup_id], indexes)
            publish_changes(self._redis, self._keys, [credential.lookup_id])
            return bool(deleted)

    def lookup_ids_of_user(self, subject: str) -> list[str]:
        with translate_redis_errors("reading a user's sessions"):
            found = self._indexes.lookup_ids(self._keys.user_index(subject), "user index")
        return sorted(found)

    def delete_user_sessions(self, subject: str) -> int:
        """End every session of a user; returns how many records existed."""
        with translate_redis_errors("deleting indexed sessions"):
            return self._end_indexed(self._keys.user_index(subject), "user index")

    def delete_by_lookup_id(self, lookup_id: str, subject: str) -> bool:
        """End one session known only by its lookup id and user (the operator CLI: records
        are sealed with a secret only their owner holds); True when it still existed."""
        with translate_redis_errors("revoking a session"):
            # The record, then its index entries (other hash slots): see _end_indexed.
            deleted = self._redis.delete(self._keys.session_record(lookup_id))
            self._indexes.remove([lookup_id], [(self._keys.user_index(subject), "user index")])
            self._indexes.remove_from_directory([lookup_id])
            publish_changes(self._redis, self._keys, [lookup_id])
        return bool(deleted)

    def sessions_in_directory(self, lookup_id_prefix: str) -> dict[str, IndexEntry]:
        """The sessions whose lookup id starts with the prefix (lower-case hex, at least
        ``keyspace.DIRECTORY_DIGITS`` long), by lookup id, as the directory has them: one
        small hash read, however many sessions there are."""
        with translate_redis_errors("looking up a session"):
            return self._indexes.in_directory(lookup_id_prefix)

    def lookup_ids_of_provider_session(self, provider_session_id: str) -> list[str]:
        index = self._keys.provider_session_index(provider_session_id)
        with translate_redis_errors("reading a provider session's sessions"):
            found = self._indexes.lookup_ids(index, "provider session index")
        return sorted(found)

    def delete_provider_session(
        self, provider_session_id: str, keep: frozenset[str] = frozenset()
    ) -> int:
        """End every session born from one IdP session (OIDC back-channel logout by sid)
        except those whose lookup ids are in ``keep``."""
        index = self._keys.provider_session_index(provider_session_id)
        with translate_redis_errors("deleting indexed sessions"):
            return self._end_indexed(index, "provider session index", keep)

    def _end_indexed(self, index: str, kind: str, keep: frozenset[str] = frozenset()) -> int:
        """End every session ``index`` names but those in ``keep``; returns how many records
        existed.

        The records are in many hash slots (a cluster splits the pipeline between its nodes) and
        none is atomic with the index. So every record is deleted before any index entry goes:
        a failure part-way leaves sessions that are still indexed and can be ended again, never
        a live session missing from its index. Only the entries read are removed (not the whole
        index), so a session added meanwhile stays indexed. An index of the wrong type names
        nobody and is deleted.
        """
        found = self._indexes.lookup_ids(index, kind, delete_damaged=True)
        lookup_ids = [lookup_id for lookup_id in found if lookup_id not in keep]
        if not lookup_ids:
            return 0
        pipe = self._redis.pipeline(transaction=False)
        for lookup_id in lookup_ids:
            pipe.delete(self._keys.session_record(lookup_id))
        existed = sum(int(n) for n in pipe.execute())
        self._indexes.remove(lookup_ids, [(index, kind)])
        self._indexes.remove_from_directory(lookup_ids)
        publish_changes(self._redis, self._keys, lookup_ids)
        return existed


class AsyncSessionStore:
    """Asyncio store for ext_authz: one round trip per load, an occasional touch."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        codec: SessionCodec,
        settings: SessionSettings,
        clock: Clock = time.time,
    ) -> None:
        self._redis = client
        self._codec = codec
        self._settings = settings
        self._clock = clock

    async def load(self, credential: SessionCredential) -> Session | None:
        """The live session, or None when Redis has no (or an expired) record."""
        key = self._codec.record_key(credential)
        with translate_redis_errors("loading a session"):
            pipe = self._redis.pipeline(transaction=False)
            pipe.get(key)
            pipe.pttl(key)
            sealed, remaining_ms = await pipe.execute(raise_on_error=False)
            if isinstance(remaining_ms, Exception):
                raise remaining_ms
            if isinstance(sealed, redis.ResponseError):
                _tolerate_wrong_type(sealed)
                sealed = None
        now = self._clock()
        session = _live(self._codec, credential, sealed, now)
        if session is None:
            return None
        new_ttl = touch_ttl_ms(session, self._settings, now, int(remaining_ms))
        if new_ttl is not None:
            try:
                with translate_redis_errors("sliding a session's idle timeout"):
                    await self._redis.pexpire(key, new_ttl)
            except StoreUnavailable:
                # The record was read and is valid; a missed slide only shortens its idle
                # window, so this request is still answered.
                logger.warning("could not slide a session's idle timeout", exc_info=True)
        return session

    async def reload(self, credential: SessionCredential) -> Session | None:
        """The session as Redis has it now (no idle slide): used around refreshes."""
        with translate_redis_errors("reloading a session"):
            try:
                sealed = await self._redis.get(self._codec.record_key(credential))
            except redis.ResponseError as exc:
                _tolerate_wrong_type(exc)
                sealed = None
        return _live(self._codec, credential, sealed, self._clock())

    async def replace_tokens(
        self,
        credential: SessionCredential,
        provider_id: str,
        tokens: TokenSet,
        *,
        used_refresh_token: str | None = None,
    ) -> Session | None:
        """Store one provider's new tokens, keeping everything else of the session as it is.

        Optimistic: WATCH the record, merge into what is there now, write only if nobody
        wrote in between (another provider's refresh, a logout) and never re-create a
        session that was deleted meanwhile. Returns None when the session is gone. The
        transaction touches the record's key alone, so it is valid on a cluster too.

        ``used_refresh_token`` fences the write: when the stored tokens no longer carry the
        refresh token this refresh started from, someone else already stored a newer set
        (a holder whose lock lease ran out), and that set is kept and returned instead.
        """
        key = self._codec.record_key(credential)
        with translate_redis_errors("storing refreshed tokens"):
            for _ in range(5):
                async with self._redis.pipeline(transaction=True) as pipe:
                    try:
                        await pipe.watch(key)
                        try:
                            sealed = await pipe.get(key)
                        except redis.ResponseError as exc:
                            _tolerate_wrong_type(exc)
                            sealed = None
                        if sealed is None:
                            return None
                        current = self._codec.decode(credential, _raw(sealed))
                        stored = current.tokens.get(provider_id)
                        if (
                            used_refresh_token is not None
                            and stored is not None
                            and stored.refresh_token != used_refresh_token
                        ):
                            return current
                        updated = current.with_tokens(provider_id, tokens)
                        pipe.multi()
                        pipe.set(
                            key, self._codec.encode(credential, updated), xx=True, keepttl=True
                        )
                        await pipe.execute()
                    except redis.WatchError:
                        continue
                # Other workers hold this session in memory: tell them it changed.
                await publish_change(self._redis, self._codec.keys, credential.lookup_id)
                return updated
        raise StoreUnavailable("the session kept changing while refreshed tokens were stored")

    def refresh_lock(self, lookup_id: str, provider_id: str, lease_ms: int) -> RefreshLock:
        """A new owner's hold (not yet taken) on one provider's refresh lock of a session."""
        return RefreshLock(self._redis, self._codec.keys, lookup_id, provider_id, lease_ms)

    async def keep_current(self) -> None:
        """Follow a new sentinel master, learn a cluster's layout (see redis_client)."""
        await keep_current(self._redis)

    async def close(self) -> None:
        await self._redis.aclose()


def _tolerate_wrong_type(exc: redis.ResponseError) -> None:
    """Return (the record reads as missing) when the record key held another type of value;
    raise any other error."""
    if not is_wrong_type(exc):
        raise exc
    warn_wrong_type("session record")


def _live(
    codec: SessionCodec, credential: SessionCredential, sealed: bytes | str | None, now: float
) -> Session | None:
    """The session a stored record holds, None when there is none or it has expired."""
    if sealed is None:
        return None
    session = codec.decode(credential, _raw(sealed))
    return None if session.expired_at(now) else session


def _raw(value: bytes | str) -> bytes:
    """Our clients never decode responses; this only narrows redis-py's declared type."""
    return value if isinstance(value, bytes) else value.encode("latin-1")


if TYPE_CHECKING:  # mypy holds each store to its flavour of the interface

    def _conforms(sync: SessionStore, asyncio: AsyncSessionStore) -> None:
        _: SyncSessions = sync
        __: AsyncSessions = asyncio
