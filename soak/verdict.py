"""Pass or fail: unexpected outcomes, memory growth, Redis keys against live sessions, refreshes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from soak.probes import INDEX_PREFIXES, is_transient


@dataclass(frozen=True)
class Thresholds:
    """A component fails when its RSS grows by more than ``percent`` % plus ``megabytes``."""

    memory_growth_percent: float = 25.0
    memory_growth_mb: float = 10.0

    def allowed_growth_kb(self, start_kb: int) -> int:
        return int(start_kb * self.memory_growth_percent / 100 + self.memory_growth_mb * 1024)


@dataclass(frozen=True)
class LiveAccount:
    """What the soak knows to be alive at the end, to hold Redis against."""

    login_sessions: int
    direct_sessions: int
    subjects: int  # distinct users that ever had a session: the bound on user indexes


def memory_entry(start_kb: int | None, end_kb: int | None, thresholds: Thresholds) -> dict:
    entry: dict[str, Any] = {"start_kb": start_kb, "end_kb": end_kb}
    if start_kb is not None and end_kb is not None:
        entry["growth_kb"] = end_kb - start_kb
        entry["allowed_growth_kb"] = thresholds.allowed_growth_kb(start_kb)
        entry["ok"] = entry["growth_kb"] <= entry["allowed_growth_kb"]
    else:
        entry["ok"] = False
    return entry


def key_accounting(
    start: dict[str, Any], end: dict[str, Any], live: LiveAccount
) -> tuple[dict[str, Any], list[str], list[str]]:
    """(accounting, failures, warnings) for the Redis keys left at the end."""
    by_prefix = end["by_prefix"]

    def keys(category: str, census: dict[str, Any] = end) -> int:
        return int(census["by_prefix"].get(category, {}).get("keys", 0))

    live_total = live.login_sessions + live.direct_sessions
    # A directory bucket holds at least one session not yet past its absolute expiry.
    allowed_indexes = {"user": live.subjects, "sid": live.login_sessions, "s-dir": live_total}
    transient = {c: v["keys"] for c, v in by_prefix.items() if is_transient(c)}
    other = {
        c: v["keys"]
        for c, v in by_prefix.items()
        if c != "s" and c not in INDEX_PREFIXES and not is_transient(c)
    }
    accounting = {
        "live_sessions": {
            "login": live.login_sessions, "direct": live.direct_sessions, "total": live_total,
        },
        "session_records": keys("s"),
        "index_keys": {c: keys(c) for c in INDEX_PREFIXES},
        "index_keys_allowed": allowed_indexes,
        "transient_keys": transient,
        "other_keys": other,
    }  # fmt: skip
    failures, warnings = [], []
    if keys("s") != live_total:
        failures.append(f"{keys('s')} session records in Redis for {live_total} live sessions")
    for category, allowed in allowed_indexes.items():
        if keys(category) > allowed:
            failures.append(f"{keys(category)} '{category}' index keys, at most {allowed} expected")
    for category, values in by_prefix.items():
        if values["without_ttl"]:
            failures.append(f"{values['without_ttl']} '{category}' keys have no TTL")
    for category, count in other.items():
        if count > keys(category, start):
            failures.append(f"'{category}' keys grew from {keys(category, start)} to {count}")
    stale = sum(end["stale_index_entries"].values())
    if stale:
        warnings.append(
            f"{stale} index entries name sessions that expired on their own "
            f"({end['stale_index_entries']}); they go only with the index key's TTL"
        )
    return accounting, failures, warnings


def decide(
    traffic: dict[str, Any],
    memory: dict[str, dict[str, Any]],
    accounting_failures: list[str],
    idp: dict[str, dict[str, Any]],
    *,
    dead_components: list[str],
    elapsed: float,
    access_token_ttl: int,
) -> list[str]:
    """Every reason the run failed (an empty list: it passed)."""
    failures = []
    unexpected = traffic["unexpected"]["count"]
    if unexpected:
        failures.append(f"{unexpected} unexpected outcomes {traffic['unexpected']['by_kind']}")
    failures += [f"{name} exited during the run" for name in dead_components]
    for name, entry in memory.items():
        if not entry["ok"]:
            failures.append(f"{name} memory grew beyond its allowance: {entry}")
    failures += accounting_failures
    if elapsed >= 2 * access_token_ttl:
        for name, stats in idp.items():
            if not stats["refreshes"]:
                failures.append(
                    f"{name}: no refresh in {elapsed:.0f}s of {access_token_ttl}s tokens"
                )
    return failures
