"""One soak run: start the gateway, warm up, drive the clients for the duration, measure."""

from __future__ import annotations

import random
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from gateway.redis.clients import sync_client
from gateway.sessions.factory import session_codec, sync_store
from soak.environment import Component, running_gateway
from soak.lifecycle import REQUEST_TIMEOUT
from soak.pool import DIRECT, LOGIN, SessionPool
from soak.probes import redis_census, rss_kb
from soak.recorder import Recorder
from soak.traffic import SHORT_SESSION_LIFETIME, WEIGHTS, Client, Shared, weights
from soak.verdict import LiveAccount, Thresholds, decide, key_accounting, memory_entry

PROGRESS_EVERY = 30.0  # seconds between progress lines


@dataclass(frozen=True)
class SoakOptions:
    duration: float = 600.0
    clients: int = 6
    access_token_ttl: int = 20
    authz_workers: int = 2
    direct_sessions: int = 4  # CLI-style sessions written straight into Redis
    think_time: float = 0.01  # seconds each client pauses between steps
    sample_every: float = 10.0  # seconds between memory samples
    log_level: str = "info"
    cli_logout: bool = False  # see traffic.CLI_LOGOUT_WEIGHT: fails through Envoy today
    detail_cap: int = 50
    seed: int = 0
    thresholds: Thresholds = field(default_factory=Thresholds)


def log(message: str) -> None:
    print(f"soak: {message}", file=sys.stderr, flush=True)


def _rss(components: list[Component]) -> dict[str, int | None]:
    return {c.name: rss_kb(c.pid) for c in components}


def _idp_delta(start: dict[str, Any], end: dict[str, Any]) -> dict[str, Any]:
    refresh_outcomes = end["token_requests"].get("refresh_token", {})
    return {
        "refreshes": end["refreshes"] - start["refreshes"],
        "refresh_requests_not_ok": {k: v for k, v in refresh_outcomes.items() if k != "ok"},
        "logins": sum(end["logins"].values()) - sum(start["logins"].values()),
        "revocations": len(end["revocations"]) - len(start["revocations"]),
        "end_session_calls": end["end_session_calls"] - start["end_session_calls"],
    }


def _warm_up(shared: Shared, options: SoakOptions) -> None:
    """Log in once per client, write the CLI sessions, and take every other step once.

    These sessions are resident: with logins and logouts churning the rest, they are the
    ones that live long enough for their access tokens to expire and be refreshed."""
    warm = Client(shared, seed=options.seed - 1)
    for _ in range(options.clients):
        warm.take("login")
    for index in range(options.direct_sessions):
        shared.pool.add(shared.new_direct_session(f"soak-cli-{index}"))
    for live in shared.pool.live():
        live.resident = live.origin == LOGIN
    for kind in WEIGHTS:
        if kind not in ("login", "logout", "cli_logout"):
            warm.take(kind)


def run(options: SoakOptions) -> dict[str, Any]:
    """Run the soak and return its report (``report["passed"]`` says whether it passed)."""
    started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    launched = time.monotonic()
    with running_gateway(
        access_token_ttl=options.access_token_ttl,
        authz_workers=options.authz_workers,
        log_level=options.log_level,
    ) as env:
        stack, components = env.stack, env.components
        log(f"stack up in {time.monotonic() - launched:.1f}s at {stack.url}")
        launch_rss = _rss(components)
        config = stack.config
        shared = Shared(
            stack=stack,
            store=sync_store(config),
            redis=sync_client(config.redis),
            codec=session_codec(config),
            pool=SessionPool(random.Random(options.seed)),
            recorder=Recorder(options.detail_cap),
            max_logins=2 * options.clients,  # half of them resident
            min_logins=0,
        )
        _warm_up(shared, options)
        start_rss = _rss(components)
        start_census = redis_census(shared.redis, shared.codec, config.redis.key_prefix)
        start_idp = {name: idp.stats() for name, idp in stack.idps.items()}
        peak_rss = dict(start_rss)
        samples: list[dict[str, Any]] = []  # RSS every sample_every seconds: trend, not just ends

        log(f"running {options.clients} clients for {options.duration:g}s")
        shared.recorder.restart_clock()
        stop = threading.Event()
        began = time.monotonic()
        deadline = began + options.duration
        threads = [
            threading.Thread(
                target=Client(shared, seed=options.seed + index).run,
                args=(deadline, stop, options.think_time, weights(options.cli_logout)),
                name=f"soak-client-{index}",
                daemon=True,
            )
            for index in range(options.clients)
        ]
        for thread in threads:
            thread.start()
        dead: list[str] = []
        next_progress = began + PROGRESS_EVERY
        try:
            while time.monotonic() < deadline and not dead:
                time.sleep(max(0.0, min(options.sample_every, deadline - time.monotonic())))
                sample = _rss(components)
                samples.append({"at_seconds": round(time.monotonic() - began), **sample})
                for name, kb in sample.items():
                    if kb is not None:
                        peak_rss[name] = max(kb, peak_rss[name] or 0)
                dead = [c.name for c in components if not c.alive()]
                if time.monotonic() >= next_progress:
                    next_progress += PROGRESS_EVERY
                    traffic = shared.recorder.snapshot()
                    log(
                        f"{time.monotonic() - began:.0f}s: {traffic['total_requests']} requests, "
                        f"{traffic['unexpected']['count']} unexpected, "
                        f"{shared.pool.count(LOGIN)} logged-in sessions"
                    )
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=3 * REQUEST_TIMEOUT)
        elapsed = time.monotonic() - began
        stuck = [thread.name for thread in threads if thread.is_alive()]

        # Short sessions still alive at the end expire on their own before Redis is counted.
        time.sleep(SHORT_SESSION_LIFETIME + 0.5)
        end_rss = _rss(components)
        end_census = redis_census(shared.redis, shared.codec, config.redis.key_prefix)
        idps = {name: _idp_delta(start_idp[name], idp.stats()) for name, idp in stack.idps.items()}
        dead = [c.name for c in components if not c.alive()]

    memory = {}
    for component in components:
        entry = memory_entry(start_rss[component.name], end_rss[component.name], options.thresholds)
        memory[component.name] = {
            "pid": component.pid,
            "launch_kb": launch_rss[component.name],
            **entry,
            "peak_kb": peak_rss[component.name],
            "log": str(component.log_path),
        }
    live = LiveAccount(
        login_sessions=shared.pool.count(LOGIN),
        direct_sessions=shared.pool.count(DIRECT),
        subjects=len(shared.subjects),
    )
    accounting, key_failures, warnings = key_accounting(start_census, end_census, live)
    traffic = shared.recorder.snapshot()
    failures = decide(
        traffic,
        memory,
        key_failures,
        idps,
        dead_components=dead,
        elapsed=elapsed,
        access_token_ttl=options.access_token_ttl,
    )
    failures += [f"{name} did not stop" for name in stuck]
    return {
        "started_at": started_at,
        "options": asdict(options),
        "elapsed_seconds": round(elapsed, 1),
        "passed": not failures,
        "failures": failures,
        "warnings": warnings,
        "traffic": traffic,
        "memory": memory,
        "memory_samples_kb": samples,
        "redis": {"start": start_census, "end": end_census, "accounting": accounting},
        "idps": idps,
    }
