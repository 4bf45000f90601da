"""Operators' view of sessions: list and revoke them by user or by session.

Session records are encrypted with a secret only their owner holds, so operators work from
the indexes the store keeps beside them (``index_entry``: subject, times, providers).
Revocation goes through the blocking :class:`SessionStore`, which deletes records and
announces it on the change feed, so it takes effect on the next request at every ext_authz
replica.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import redis

from gateway.redis.clients import is_cluster, reply_text, translate_redis_errors
from gateway.sessions.indexes import IndexEntry
from gateway.sessions.keyspace import Keyspace
from gateway.sessions.store import SessionStore

_HEX = re.compile(r"[0-9a-f]+")


@dataclass(frozen=True)
class SessionSummary:
    lookup_id: str
    subject: str
    created_at: int
    expires_at: int
    providers: tuple[str, ...]
    active: bool  # the record still exists (not logged out, revoked or expired)


class SessionAdmin:
    def __init__(self, client: redis.Redis, keys: Keyspace, store: SessionStore) -> None:
        self._redis = client
        self._keys = keys
        self._store = store  # over the same Redis: what ends sessions is written once

    def _user_indexes(self) -> Iterator[str]:
        # A cluster's keys are spread over its masters: scan every one of them (each with its
        # own cursor), never just the node a keyless command would go to.
        where = {"target_nodes": redis.RedisCluster.PRIMARIES} if is_cluster(self._redis) else {}
        pattern = self._keys.user_index_pattern()
        for key in self._redis.scan_iter(match=pattern, count=500, **where):
            yield reply_text(key)

    def _summaries(self, index: str) -> list[SessionSummary]:
        entries = list(self._store.indexes.entries(index, "user index").items())
        return sorted(self._with_state(entries), key=lambda s: s.created_at)

    def _with_state(self, entries: list[tuple[str, IndexEntry]]) -> list[SessionSummary]:
        """Summaries of index entries, each marked active when its record still exists."""
        pipe = self._redis.pipeline(transaction=False)
        for lookup_id, _ in entries:
            pipe.exists(self._keys.session_record(lookup_id))
        alive = pipe.execute() if entries else []
        return [
            SessionSummary(
                lookup_id=lookup_id,
                subject=entry.subject,
                created_at=entry.created_at,
                expires_at=entry.expires_at,
                providers=entry.providers,
                active=bool(exists),
            )
            for (lookup_id, entry), exists in zip(entries, alive, strict=True)
        ]

    def list_sessions(self, subject: str | None = None) -> list[SessionSummary]:
        """A user's sessions, or everyone's."""
        with translate_redis_errors("listing sessions"):
            if subject is not None:
                return self._summaries(self._keys.user_index(subject))
            found: list[SessionSummary] = []
            for index in self._user_indexes():
                found.extend(self._summaries(index))
            return found

    def revoke_user(self, subject: str) -> int:
        """End all of a user's sessions; returns how many were active."""
        return self._store.delete_user_sessions(subject)

    def revoke_session(self, lookup_id_prefix: str) -> SessionSummary | None:
        """End the one session whose lookup id starts with the prefix (at least 8 chars).

        Returns it, or None when no session matches. Raises ValueError when several do.
        The session directory names it (one small hash, whatever the number of sessions);
        only a session saved before the directory existed is looked for in every index.
        """
        if len(lookup_id_prefix) < 8:
            raise ValueError("give at least 8 characters of the session id")
        prefix = lookup_id_prefix.lower()
        if not _HEX.fullmatch(prefix):
            return None  # lookup ids are hex digests: nothing else names one
        matches = self._store.sessions_in_directory(prefix)
        with translate_redis_errors("revoking a session"):
            found = self._with_state(list(matches.items()))
            if not found and self._record_outside_directory(prefix):
                found = [s for s in self.list_sessions() if s.lookup_id.startswith(prefix)]
        if len(found) > 1:
            raise ValueError(f"{len(found)} sessions start with {lookup_id_prefix!r}")
        if not found:
            return None
        self._store.delete_by_lookup_id(found[0].lookup_id, found[0].subject)
        return found[0]

    def _record_outside_directory(self, prefix: str) -> bool:
        """Whether a session record's lookup id starts with ``prefix`` (which the directory
        does not name). SCAN matches on the server, so no session is read: it is how the
        sessions saved by a version without the directory are still found, for as long as
        they last (at most session.absolute_lifetime after the upgrade)."""
        where = {"target_nodes": redis.RedisCluster.PRIMARIES} if is_cluster(self._redis) else {}
        pattern = self._keys.session_records_starting(prefix)
        for _ in self._redis.scan_iter(match=pattern, count=1000, **where):
            return True
        return False
