"""The issue's targets for the gateway itself: ext_authz resident memory (also after many
distinct sessions, see :mod:`bench.distinct_sessions`), Redis memory per session, and Check
throughput with many sessions in Redis against one.

The many-sessions comparison runs two identical ext_authz processes side by side, each with a
Redis of its own: one holding the benchmark session only, one holding it plus ``sessions``
realistic sealed records; both with the session cache off, so every Check reads Redis. Their
Check throughput is measured in alternating rounds (A B, B A, A B, ...) and the medians
compared, so a drift of the machine during the run (other work on it, a CPU clocking down)
does not read as an effect of the session count.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from bench.distinct_sessions import distinct_sessions_memory
from bench.errors import BenchError
from bench.gateway_setup import populate_sessions, session_memory
from bench.measure import LoadSettings, max_throughput, verify
from bench.scenarios import Lab
from bench.servers import worker_memory
from gateway.sessions.factory import sync_store

RSS_LIMIT_MIB = 80
SESSION_LIMIT_BYTES = 2048
MANY_SESSIONS_TOLERANCE = 0.05


def gateway_targets(
    lab: Lab, sessions: int, load: LoadSettings, rounds: int, log: Callable[[str], None]
) -> dict[str, Any]:
    """Memory per session, and (``sessions`` > 0) the many-sessions comparison."""
    targets: dict[str, Any] = {"rss_limit_mib": RSS_LIMIT_MIB}
    memory = session_memory(lab.gateway, lab.session)
    targets["session"] = {**memory, "limit_bytes": SESSION_LIMIT_BYTES}
    if sessions > 0:
        try:
            targets["many_sessions"] = _many_sessions(lab, sessions, load, rounds, log)
        except (BenchError, RuntimeError, OSError) as exc:
            log(f"many-sessions comparison failed: {exc}")
            targets["many_sessions"] = {"error": str(exc)[:2000]}
        try:
            targets["distinct_sessions"] = distinct_sessions_memory(lab, sessions, log)
        except (BenchError, RuntimeError, OSError) as exc:
            log(f"distinct-sessions memory run failed: {exc}")
            targets["distinct_sessions"] = {"error": str(exc)[:2000]}
    targets["final_memory"] = worker_memory(lab.ext_authz[0].pid)
    return targets


def _many_sessions(
    lab: Lab, sessions: int, load: LoadSettings, rounds: int, log: Callable[[str], None]
) -> dict[str, Any]:
    # The session cache off in both, so that every Check reads Redis: with it on, one hot
    # session is answered from memory and the size of Redis would not matter at all.
    lab.gateway_variant("one-session", session_cache_ttl=0)
    _, one_address = lab.start_ext_authz("one-session")
    config = lab.gateway_variant(
        "many-sessions", redis_url=lab.another_redis("many-sessions"), session_cache_ttl=0
    )
    sync_store(config).save(lab.session.credential, lab.session.session)
    log(f"adding {sessions:,} sessions to the second Redis")
    populated = populate_sessions(config, sessions)
    _, many_address = lab.start_ext_authz("many-sessions")
    expect = {"authorization": lab.session.injected_authorization}
    one = lab.check_target(one_address, expect, "check-one-session")
    many = lab.check_target(many_address, expect, "check-many-sessions")
    measured: dict[str, list[float]] = {"one": [], "many": []}
    first = replace(load, duration=max(1.0, load.duration / 2))  # with the warm-up
    later = replace(first, warmup=0)
    for round_number in range(rounds):
        settings = later if round_number else first
        order = [("one", one), ("many", many)]
        for name, target in order if round_number % 2 == 0 else order[::-1]:
            verify(target, settings)
            measured[name].append(float(max_throughput(target, settings)["rps"]))
    rps_one, rps_many = (statistics.median(measured[name]) for name in ("one", "many"))
    change = rps_many / rps_one - 1
    log(f"Check: 1 session {rps_one:.0f}/s, {sessions:,} more {rps_many:.0f}/s ({change:+.1%})")
    return {
        **populated,
        "rounds": rounds,
        "session_cache_ttl": 0,
        "rps_one_session_runs": measured["one"],
        "rps_many_sessions_runs": measured["many"],
        "rps_one_session": rps_one,
        "rps_many_sessions": rps_many,
        "change": round(change, 4),
        "tolerance": MANY_SESSIONS_TOLERANCE,
    }
