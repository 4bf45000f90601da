"""Operators' view of sessions: list and revoke them by user or by session.

Session records are encrypted with a secret only their owner holds, so operators work from
the indexes the store keeps beside them (``index_entry``: subject, times, providers).
Revocation deletes records; every ext_authz replica reads Redis on each check, so it takes
effect on the next request everywhere.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import redis

from gateway.redis_client import is_cluster, publish_each, translate_redis_errors
from gateway.sessions import SessionCodec
from gateway.store import delete_indexed_records


@dataclass(frozen=True)
class SessionSummary:
    lookup_id: str
    subject: str
    created_at: int
    expires_at: int
    providers: tuple[str, ...]
    active: bool  # the record still exists (not logged out, revoked or expired)


class SessionAdmin:
    def __init__(self, client: redis.Redis, codec: SessionCodec, key_prefix: str) -> None:
        self._redis = client
        self._codec = codec
        self._user_pattern = f"{key_prefix}user:*"

    def _user_indexes(self) -> Iterator[str]:
        # A cluster's keys are spread over its masters: scan every one of them (each with its
        # own cursor), never just the node a keyless command would go to.
        where = {"target_nodes": redis.RedisCluster.PRIMARIES} if is_cluster(self._redis) else {}
        for key in self._redis.scan_iter(match=self._user_pattern, count=500, **where):
            yield key.decode() if isinstance(key, bytes) else str(key)

    def _summaries(self, index: str) -> list[SessionSummary]:
        entries = self._redis.hgetall(index)
        lookup_ids = [_text(k) for k in entries]  # type: ignore[union-attr]
        pipe = self._redis.pipeline(transaction=False)
        for lookup_id in lookup_ids:
            pipe.exists(self._codec.record_key_for(lookup_id))
        alive = pipe.execute()
        summaries = []
        for (raw_id, raw_entry), exists in zip(entries.items(), alive, strict=True):  # type: ignore[union-attr]
            try:
                entry = json.loads(raw_entry)
                summaries.append(
                    SessionSummary(
                        lookup_id=_text(raw_id),
                        subject=str(entry["subject"]),
                        created_at=int(entry["created_at"]),
                        expires_at=int(entry["expires_at"]),
                        providers=tuple(entry.get("providers", ())),
                        active=bool(exists),
                    )
                )
            except (ValueError, KeyError, TypeError):
                continue  # a damaged index entry is skipped, never fatal
        return sorted(summaries, key=lambda s: s.created_at)

    def list_sessions(self, subject: str | None = None) -> list[SessionSummary]:
        """A user's sessions, or everyone's."""
        with translate_redis_errors("listing sessions"):
            if subject is not None:
                return self._summaries(self._codec.user_index_key(subject))
            found: list[SessionSummary] = []
            for index in self._user_indexes():
                found.extend(self._summaries(index))
            return found

    def revoke_user(self, subject: str) -> int:
        """End all of a user's sessions; returns how many were active."""
        index = self._codec.user_index_key(subject)
        with translate_redis_errors("revoking a user's sessions"):
            lookup_ids = [_text(k) for k in self._redis.hkeys(index)]  # type: ignore[union-attr]
            if not lookup_ids:
                return 0
            return delete_indexed_records(self._redis, self._codec, index, lookup_ids)

    def revoke_session(self, lookup_id_prefix: str) -> SessionSummary | None:
        """End the one session whose lookup id starts with the prefix (at least 8 chars).

        Returns it, or None when no session matches. Raises ValueError when several do.
        """
        if len(lookup_id_prefix) < 8:
            raise ValueError("give at least 8 characters of the session id")
        matches = [
            s for s in self.list_sessions() if s.lookup_id.startswith(lookup_id_prefix.lower())
        ]
        if len(matches) > 1:
            raise ValueError(f"{len(matches)} sessions start with {lookup_id_prefix!r}")
        if not matches:
            return None
        found = matches[0]
        with translate_redis_errors("revoking a session"):
            # The record, then its index entry (another hash slot): see delete_indexed_records.
            self._redis.delete(self._codec.record_key_for(found.lookup_id))
            self._redis.hdel(self._codec.user_index_key(found.subject), found.lookup_id)
            publish_each(self._redis, self._codec.invalidation_channel, [found.lookup_id])
        return found


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
