"""Measurements taken from outside the processes: resident memory and what Redis holds."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import redis

from gateway.sessions.model import SessionCodec

# Keys that expire by design soon after their job is done (login attempts, refresh locks,
# replay guards, CLI-login records and rate counters); everything else must be accounted for.
TRANSIENT_PREFIXES = ("lock", "login", "login-state", "logout-jti", "device")
INDEX_PREFIXES = ("user", "sid", "s-dir")  # s-dir: the session directory's buckets


def rss_kb(pid: int) -> int | None:
    """Resident set size (VmRSS) of a live process in kB; None when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


def key_category(key: str, key_prefix: str) -> str:
    """``gw:s:{...}`` -> ``s``; keys outside the gateway's prefix are ``(foreign)``."""
    if not key.startswith(key_prefix):
        return "(foreign)"
    return key[len(key_prefix) :].split(":", 1)[0]


def is_transient(category: str) -> bool:
    return category in TRANSIENT_PREFIXES or category.startswith("device")


def redis_census(client: redis.Redis, codec: SessionCodec, key_prefix: str) -> dict[str, Any]:
    """DBSIZE, keys by prefix (with how many lack a TTL) and index entries, live or stale."""
    by_prefix: dict[str, dict[str, int]] = defaultdict(
        lambda: {"keys": 0, "without_ttl": 0, "max_ttl_seconds": 0}
    )
    indexes: dict[str, list[str]] = defaultdict(list)
    keys = [_text(key) for key in client.scan_iter(count=1000)]
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.pttl(key)
    for key, ttl_ms in zip(keys, pipe.execute(), strict=True):
        if ttl_ms == -2:  # expired between SCAN and PTTL
            continue
        category = key_category(key, key_prefix)
        entry = by_prefix[category]
        entry["keys"] += 1
        if ttl_ms == -1:
            entry["without_ttl"] += 1
        else:
            entry["max_ttl_seconds"] = max(entry["max_ttl_seconds"], round(ttl_ms / 1000))
        if category in INDEX_PREFIXES:
            indexes[category].append(key)
    index_entries, stale_entries = {}, {}
    for category in INDEX_PREFIXES:
        lookup_ids = [_text(field) for index in indexes[category] for field in client.hkeys(index)]
        pipe = client.pipeline(transaction=False)
        for lookup_id in lookup_ids:
            pipe.exists(codec.keys.session_record(lookup_id))
        alive = pipe.execute() if lookup_ids else []
        index_entries[category] = len(lookup_ids)
        stale_entries[category] = sum(1 for exists in alive if not exists)
    info = client.info("memory")
    return {
        "dbsize": int(client.dbsize()),
        "by_prefix": dict(sorted(by_prefix.items())),
        "index_entries": index_entries,
        "stale_index_entries": stale_entries,
        "used_memory_bytes": int(info.get("used_memory", 0)),
    }


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
