"""The indexes the blocking store keeps beside session records, and what each entry says.

Three kinds of Redis hashes map a session's lookup id to its :func:`index_entry` (subject,
times, providers; no secret): the user's index (logout everywhere, ``sessions list``), the
IdP session's index (back-channel logout by sid), and the directory bucket its lookup id
falls in (``sessions revoke --session``: one small hash per first few hex digits, so one
session is found without reading every index).

Each write extends an index's TTL to its session's absolute expiry (never shortens it), so
an index lives as long as the longest-lived session it names could, and a directory bucket
of short sessions goes with them; entries of sessions past their absolute expiry are pruned
on the way, a bounded sample per write (:data:`PRUNE_SAMPLE`), so a login costs the same
however many sessions its user has.

Any of these keys may hold something else (an operator's mistake, a restore, an old bug):
Redis answers WRONGTYPE. Such a key holds nothing of ours, so it reads as empty and the next
write or ending replaces it: a user is never locked out of logging in or out by it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from gateway.redis.clients import is_cluster, is_wrong_type, reply_text
from gateway.sessions.keyspace import Keyspace
from gateway.sessions.model import Session

# Entries looked at per index and write. Each write adds one entry and samples this many,
# so expired ones are removed far faster than they accumulate; an index of this size or
# less is pruned whole (HRANDFIELD returns every field).
PRUNE_SAMPLE = 16
logger = logging.getLogger(__name__)

# Enter one session in one index: its entry, the index's TTL lengthened to the session's
# absolute expiry (never shortened: Redis 6.2 has no PEXPIRE GT, and two logins racing must
# leave the longer one), then a sample of entries to prune. One key, as a cluster requires;
# another type at the key is reported as WRONGTYPE like any command's.
_ADD_ENTRY = """
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'hash' and kind ~= 'none' then
  return redis.error_reply('WRONGTYPE the index key holds another type')
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < tonumber(ARGV[3]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return redis.call('HRANDFIELD', KEYS[1], ARGV[4], 'WITHVALUES')
"""


def index_entry(session: Session) -> str:
    """What an index keeps about a session: enough for operators to list it, no secret."""
    return json.dumps(
        {
            "subject": session.identity.subject,
            "created_at": session.created_at,
            "expires_at": session.expires_at,
            "providers": sorted(session.tokens),
        },
        separators=(",", ":"),
    )


@dataclass(frozen=True)
class IndexEntry:
    """An index entry as :func:`index_entry` writes it."""

    subject: str
    created_at: int
    expires_at: int
    providers: tuple[str, ...]


# Past the year 9999 no session expires, and time.gmtime() may refuse the value.
_LAST_SECOND = 253_402_300_799


def read_index_entry(raw: bytes | str) -> IndexEntry | None:
    """The entry :func:`index_entry` wrote; None for anything else (damaged data in Redis is
    pruned or skipped, never fatal)."""
    try:
        data = json.loads(raw)
        subject, providers = data["subject"], data.get("providers", [])
        times = (data["created_at"], data["expires_at"])
    except (ValueError, KeyError, TypeError, RecursionError):
        return None
    if not (
        isinstance(subject, str)
        and all(type(t) is int and 0 <= t <= _LAST_SECOND for t in times)
        and isinstance(providers, list)
        and all(isinstance(p, str) for p in providers)
    ):
        return None
    return IndexEntry(subject, times[0], times[1], tuple(providers))


def warn_wrong_type(kind: str) -> None:
    """Log that a key of ours held another type; the kind only (key names carry digests of
    subjects and sids, which logs need not repeat)."""
    logger.warning("a %s key held a value of the wrong type; treated as empty", kind)


def _raise_other_errors(results: Iterable[Any]) -> None:
    for result in results:
        if isinstance(result, Exception) and not is_wrong_type(result):
            raise result


class SessionIndexes:
    """The blocking store's index maintenance (callers translate Redis errors)."""

    def __init__(self, client: redis.Redis, keys: Keyspace) -> None:
        self._redis = client
        self._keys = keys

    def of_session(self, lookup_id: str, session: Session) -> list[tuple[str, str]]:
        """(key, kind) of every index naming this session."""
        identity = session.identity
        found = [
            (self._keys.user_index(identity.subject), "user index"),
            (self._keys.session_directory(lookup_id), "session directory"),
        ]
        if identity.provider_session_id:
            index = self._keys.provider_session_index(identity.provider_session_id)
            found.append((index, "provider session index"))
        return found

    def add(self, lookup_id: str, session: Session, now: float) -> None:
        """Enter the session in its indexes and prune a sample of each: one round trip (one
        per index on a cluster), and one more when something is to be removed."""
        indexes = self.of_session(lookup_id, session)
        entry = index_entry(session)
        ttl_ms = max(1, int((session.expires_at - now) * 1000))  # its entry is useless after
        args = (lookup_id, entry, ttl_ms, PRUNE_SAMPLE)
        results = self._eval_each(_ADD_ENTRY, [index for index, _ in indexes], args)
        prune = self._redis.pipeline(transaction=False)
        pruning = False
        for (index, kind), sample in zip(indexes, results, strict=True):
            if is_wrong_type(sample):
                warn_wrong_type(kind)
                # What is there is no index of ours: replace it with one naming this session.
                prune.delete(index)
                prune.hset(index, lookup_id, entry)
                prune.pexpire(index, ttl_ms)
                pruning = True
                continue
            expired = _expired(sample, now)
            if expired:
                prune.hdel(index, *expired)
                pruning = True
        if pruning:
            prune.execute()

    def _eval_each(self, script: str, keys: Sequence[str], args: tuple[Any, ...]) -> list[Any]:
        """The script's reply for each key (an error reply as its exception): pipelined,
        except on a cluster, whose pipelines take no scripts (one round trip per key)."""
        if is_cluster(self._redis):
            replies: list[Any] = []
            for key in keys:
                try:
                    replies.append(self._redis.eval(script, 1, key, *args))
                except redis.ResponseError as exc:
                    replies.append(exc)
        else:
            pipe = self._redis.pipeline(transaction=False)
            for key in keys:
                pipe.eval(script, 1, key, *args)
            replies = pipe.execute(raise_on_error=False)
        _raise_other_errors(replies)
        return replies

    def remove(self, lookup_ids: Sequence[str], indexes: Sequence[tuple[str, str]]) -> None:
        """Drop these sessions' entries from ``indexes``; an index of the wrong type is
        deleted (it named nobody)."""
        if not lookup_ids or not indexes:
            return
        pipe = self._redis.pipeline(transaction=False)
        for index, _ in indexes:
            pipe.hdel(index, *lookup_ids)
        self._delete_wrong_types(indexes, pipe.execute(raise_on_error=False))

    def remove_from_directory(self, lookup_ids: Sequence[str]) -> None:
        buckets: dict[str, list[str]] = {}
        for lookup_id in lookup_ids:
            buckets.setdefault(self._keys.session_directory(lookup_id), []).append(lookup_id)
        if not buckets:
            return
        pipe = self._redis.pipeline(transaction=False)
        for bucket, members in buckets.items():
            pipe.hdel(bucket, *members)
        directory = [(bucket, "session directory") for bucket in buckets]
        self._delete_wrong_types(directory, pipe.execute(raise_on_error=False))

    def _delete_wrong_types(self, indexes: Sequence[tuple[str, str]], results: list[Any]) -> None:
        _raise_other_errors(results)
        damaged = [
            (index, kind)
            for (index, kind), result in zip(indexes, results, strict=True)
            if is_wrong_type(result)
        ]
        for _, kind in damaged:
            warn_wrong_type(kind)
        if damaged:
            self._redis.delete(*(index for index, _ in damaged))

    def lookup_ids(self, index: str, kind: str, *, delete_damaged: bool = False) -> list[str]:
        """The lookup ids an index names; none when the key holds something else (deleted
        then when ``delete_damaged``: the caller is ending what the index names)."""
        try:
            fields = self._redis.hkeys(index)
        except redis.ResponseError as exc:
            if not is_wrong_type(exc):
                raise
            warn_wrong_type(kind)
            if delete_damaged:
                self._redis.delete(index)
            return []
        return [reply_text(field) for field in fields]

    def entries(self, index: str, kind: str) -> dict[str, IndexEntry]:
        """The readable entries of an index by lookup id (damaged ones skipped)."""
        try:
            raw = self._redis.hgetall(index)
        except redis.ResponseError as exc:
            if not is_wrong_type(exc):
                raise
            warn_wrong_type(kind)
            return {}
        entries = {}
        for raw_id, raw_entry in raw.items():
            entry = read_index_entry(raw_entry)
            if entry is not None:
                entries[reply_text(raw_id)] = entry
        return entries

    def in_directory(self, lookup_id_prefix: str) -> dict[str, IndexEntry]:
        """The directory's sessions whose lookup id starts with the prefix (lower-case hex,
        at least :data:`DIRECTORY_DIGITS` of it): one small hash read."""
        bucket = self._keys.session_directory(lookup_id_prefix)
        return {
            lookup_id: entry
            for lookup_id, entry in self.entries(bucket, "session directory").items()
            if lookup_id.startswith(lookup_id_prefix)
        }


def _expired(sample: Any, now: float) -> list[bytes | str]:
    """The fields of an HRANDFIELD ... WITHVALUES reply whose entries are past their
    absolute expiry or unreadable (a damaged entry helps nobody)."""
    if not isinstance(sample, list) or not sample or len(sample) % 2:
        return []
    # redis-py gives [field, value, ...] or [[field, value], ...] depending on its options.
    pairs = (
        sample
        if isinstance(sample[0], list | tuple)
        else zip(sample[::2], sample[1::2], strict=True)
    )
    expired = []
    for field, raw in pairs:
        entry = read_index_entry(raw)
        if entry is None or entry.expires_at <= now:
            expired.append(field)
    return expired
