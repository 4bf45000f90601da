"""One fault through the whole gateway: prepare sessions, baseline, fault, recovery, verdict.

For each fault the suite logs in fresh sessions through both IdPs (rotating refresh tokens,
short-lived access tokens), keeps a logged-out and an expired credential at hand, and lets
client threads send verified traffic (:mod:`soak.fault_traffic`) through a healthy baseline,
the fault and the recovery after it. Recovery ends when every live session has been served,
for each provider, a valid token its provider issued after the fault ended (so the refresh
chain survived), and no answer was unexpected for a settling moment; or at the deadline.

Measured: requests let through without a valid session (must be 0), sessions needing a new
login once the fault is over (must be 0: a session whose record is gone, a provider marked
``needs_login``, or a provider that could not be served with a fresh token by the deadline),
the recovery time (end of the fault to the last unexpected answer) and what users saw.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import requests

from gateway.sessions.factory import sync_store
from soak.environment import SOAK_USERS, Environment
from soak.fault_traffic import (
    EXPIRED_TOKEN,
    LET_THROUGH,
    OK,
    PENDING,
    WRONG_TOKEN,
    FaultClient,
    FaultSession,
    Observation,
    TrafficLog,
    Verifier,
    log_in,
    log_out,
    outcome_counts,
)
from soak.faults import Fault, FaultTarget, wait_until
from soak.pool import write_session

EXPIRED_LIFETIME = 1.0  # seconds a session written to expire lives
# A fault that left the gateway broken shows in its own result; the next one waits this long
# for logins to work again before it gives up.
PREPARE_TIMEOUT = 60.0


@dataclass
class Carried:
    """What one fault hands the next on the same gateway: the credentials that must be
    refused, and the sessions it left healthy (a lost one is replaced by a new login)."""

    refused: dict[str, list[Any]] = field(default_factory=dict)
    sessions: list[FaultSession] = field(default_factory=list)


@dataclass(frozen=True)
class FaultTimings:
    """How long each phase lasts (seconds) and how much traffic there is."""

    fault_seconds: float = 20.0
    baseline_seconds: float = 2.0
    recovery_timeout: float = 60.0  # after the fault ends, to heal by itself
    settle_seconds: float = 2.0  # all answers as expected this long to call it recovered
    sessions: int = 6
    clients: int = 4
    think_time: float = 0.02
    access_token_ttl: float = 6.0  # what the dev IdPs were started with

    def fault_seconds_of(self, fault: Fault) -> float:
        return max(
            self.fault_seconds,
            fault.min_seconds + fault.min_token_lifetimes * self.access_token_ttl,
        )


def _idp_refresh_numbers(env: Environment) -> dict[str, dict[str, int]]:
    numbers = {}
    for name, idp in env.stack.idps.items():
        stats = idp.stats()
        outcomes = stats["token_requests"].get("refresh_token", {})
        numbers[name] = {
            "refreshes": int(stats["refreshes"]),
            "invalid_grant": int(outcomes.get("invalid_grant", 0)),
            "rotated_refresh_reuse": int(stats.get("rotated_refresh_reuse", 0)),
            "unavailable": int(outcomes.get("error503", 0)),
        }
    return numbers


def _delta(start: dict[str, dict[str, int]], end: dict[str, dict[str, int]]) -> dict[str, Any]:
    return {
        name: {k: end[name][k] - v for k, v in numbers.items()} for name, numbers in start.items()
    }


class FaultRun:
    """One fault's run; :meth:`run` returns its result as a JSON-ready dict."""

    def __init__(
        self,
        env: Environment,
        fault: Fault,
        timings: FaultTimings,
        seed: int,
        carried: Carried | None = None,
    ) -> None:
        self.env = env
        self.stack = env.stack
        self.fault = fault
        self.timings = timings
        self.seed = seed
        self.log = TrafficLog()
        self.verifier = Verifier(self.stack, self.log)
        self.sessions: list[FaultSession] = []
        self.store = sync_store(self.stack.config)  # the suite's own view of Redis
        self.carried = carried if carried is not None else Carried()
        self.refused = self.carried.refused

    # -- preparation -----------------------------------------------------------------------

    def _log_in(self, username: str) -> tuple[FaultSession, Any]:
        """A login, tried again while the gateway still heals from the previous fault."""
        deadline = time.monotonic() + PREPARE_TIMEOUT
        while True:
            try:
                return log_in(self.stack, username)
            except (RuntimeError, requests.RequestException):
                if time.monotonic() >= deadline:
                    raise
            time.sleep(0.5)

    def prepare(self) -> None:
        """The sessions the previous fault left healthy, new logins for the rest (and,
        unless carried over, the credentials that must be refused)."""
        self.sessions.extend(self.carried.sessions[: self.timings.sessions])
        for index in range(len(self.sessions), self.timings.sessions):
            session, _ = self._log_in(SOAK_USERS[index % len(SOAK_USERS)])
            self.sessions.append(session)
        if not self.refused:
            self.refused.update(self.refused_credentials())

    def refused_credentials(self) -> dict[str, list[Any]]:
        """A logged-out session and expired ones, each used once while alive (so that a
        worker may hold them in its cache): requests with them must never get a 200."""
        refused: dict[str, list[Any]] = {"logged_out": [], "expired": []}
        gone, browser = self._log_in(SOAK_USERS[0])
        log_out(self.stack, browser)
        refused["logged_out"].append(gone.credential)
        store = self.store
        expiring = []
        for index in range(2):
            credential, session = write_session(
                store,
                f"faults-expiring-{index}",
                tokens={"primary": "faults-primary", "gitlab": "faults-gitlab"},
                lifetime=EXPIRED_LIFETIME,
            )
            expiring.append((credential, session.expires_at))
            refused["expired"].append(credential)
        client = FaultClient(self.stack, self.log, self.sessions, refused, self.seed)
        for credential, _ in expiring:
            client.http.get(
                self.stack.url + "/api/alive",
                headers=client._headers(credential, "cookie"),
                timeout=10,
            )
        last = max(expires_at for _, expires_at in expiring)
        wait_until(lambda: time.time() > last + 0.5, timeout=EXPIRED_LIFETIME + 5)
        return refused

    def _client(self, index: int) -> FaultClient:
        return FaultClient(self.stack, self.log, self.sessions, self.refused, self.seed + index)

    # -- the run ---------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        self.prepare()
        target = FaultTarget.of(self.env)
        idp_start = _idp_refresh_numbers(self.env)
        stop = threading.Event()
        threads = [
            threading.Thread(
                target=self._client(index).run,
                args=(stop, self.timings.think_time),
                name=f"faults-client-{index}",
                daemon=True,
            )
            for index in range(self.timings.clients)
        ]
        for thread in threads:
            thread.start()
        began = time.monotonic()
        time.sleep(self.timings.baseline_seconds)  # a phase of traffic, not a wait for a state
        fault_began = time.monotonic()
        seconds = self.timings.fault_seconds_of(self.fault)
        ticks = 0
        try:
            self.fault.begin(target)
            fault_deadline = fault_began + seconds
            while time.monotonic() < fault_deadline:
                time.sleep(
                    min(self.fault.tick_seconds, max(0.0, fault_deadline - time.monotonic()))
                )
                if self.fault.tick is not None and time.monotonic() < fault_deadline:
                    self.fault.tick(target)
                    ticks += 1
        finally:
            self.fault.end(target)
        fault_ended = time.monotonic() + self.fault.lingers_seconds
        ended_wall = time.time() + self.fault.lingers_seconds
        deadline = fault_ended + self.timings.recovery_timeout
        recovered = False
        next_look = fault_ended + self.timings.settle_seconds
        while time.monotonic() < deadline:
            self.verifier.verify()
            if self._recovered(fault_ended, ended_wall):
                recovered = True
                break
            if time.monotonic() >= next_look:
                next_look = time.monotonic() + 1.0
                if self._settled_as_lost(ended_wall):
                    break
            time.sleep(0.25)
        stop.set()
        for thread in threads:
            thread.join(timeout=15)
        wait_until(lambda: self.verifier.verify() == 0, timeout=20, every=0.5)
        idp = _delta(idp_start, _idp_refresh_numbers(self.env))
        target.admin.close()
        return self._result(
            began, fault_began, fault_ended, ended_wall, recovered, seconds, ticks, idp
        )

    def _pairs_served_fresh(self, observations: list[Observation], ended_wall: float) -> set:
        """(session, provider) pairs last served OK with a token issued after the fault."""
        last: dict[tuple[int, str], Observation] = {}
        fresh: set[tuple[int, str]] = set()
        for observation in observations:
            if observation.kind != "session" or observation.session is None:
                continue
            key = (id(observation.session), observation.provider or "")
            last[key] = observation
            if observation.outcome == OK and (observation.issued_at or 0) >= ended_wall:
                fresh.add(key)
        return {key for key in fresh if last[key].outcome == OK}

    def _recovered(self, fault_ended: float, ended_wall: float) -> bool:
        now = time.monotonic()
        if now - fault_ended < self.timings.settle_seconds:
            return False
        observations = self.log.snapshot()
        if any(o.outcome == PENDING for o in observations):
            return False
        settled = now - self.timings.settle_seconds
        if any(o.outcome != OK for o in observations if o.at >= settled):
            return False
        wanted = {(id(s), p) for s in self.sessions for p in ("primary", "gitlab")}
        return wanted <= self._pairs_served_fresh(observations, ended_wall)

    def _settled_as_lost(self, ended_wall: float) -> bool:
        """Every session provider is either served fresh or marked ``needs_login`` (which
        only a new login ends), and at least one is marked: waiting longer changes nothing."""
        served = self._pairs_served_fresh(self.log.snapshot(), ended_wall)
        store = self.store
        marked = 0
        for live in self.sessions:
            try:
                session = store.load(live.credential)
            except Exception:  # noqa: BLE001 (Redis not back yet: keep waiting)
                return False
            for provider in ("primary", "gitlab"):
                if session is not None and session.tokens[provider].needs_login:
                    marked += 1
                elif (id(live), provider) not in served:
                    return False
        return marked > 0

    # -- the verdict -----------------------------------------------------------------------

    def _sessions_lost(
        self, observations: list[Observation], ended_wall: float
    ) -> dict[FaultSession, str]:
        """Why each lost session is lost."""
        store = self.store
        served = self._pairs_served_fresh(observations, ended_wall)
        lost = {}
        for index, live in enumerate(self.sessions):
            reasons = []
            try:
                session = store.load(live.credential)
            except Exception as exc:  # noqa: BLE001 (Redis still broken is a finding too)
                reasons.append(f"could not read it from Redis: {exc!r}")
                session = None
            else:
                if session is None:
                    reasons.append("its record is gone from Redis")
            for provider in ("primary", "gitlab"):
                if session is not None and session.tokens[provider].needs_login:
                    reasons.append(f"{provider} marked needs_login")
                elif (id(live), provider) not in served:
                    reasons.append(f"{provider} not served a fresh token by the deadline")
            if reasons:
                lost[live] = f"session {index} ({live.username}): " + "; ".join(reasons)
        return lost

    def _result(
        self,
        began: float,
        fault_began: float,
        fault_ended: float,
        ended_wall: float,
        recovered: bool,
        seconds: float,
        ticks: int,
        idp: dict[str, Any],
    ) -> dict[str, Any]:
        observations = self.log.snapshot()
        baseline = [o for o in observations if o.at < fault_began]
        during = [o for o in observations if fault_began <= o.at < fault_ended]
        after = [o for o in observations if o.at >= fault_ended]
        bad_after = [o.at for o in after if o.outcome != OK]
        recovery = None
        if recovered:
            recovery = round(max(bad_after, default=fault_ended) - fault_ended, 2)
        let_through = [o for o in observations if o.outcome in (LET_THROUGH, WRONG_TOKEN)]
        lost_by_session = self._sessions_lost(observations, ended_wall)
        lost = list(lost_by_session.values())
        self.carried.sessions = [s for s in self.sessions if s not in lost_by_session]
        failures = []
        if let_through:
            failures.append(f"{len(let_through)} requests let through without a valid session")
        if lost:
            failures.append(f"{len(lost)} of {len(self.sessions)} sessions need a new login")
        if not recovered and not lost:
            failures.append(
                f"not recovered {self.timings.recovery_timeout:g}s after the fault ended"
            )
        warnings = []
        if any(o.outcome != OK for o in baseline):
            warnings.append("unexpected answers before the fault began (baseline)")
        return {
            "fault": self.fault.name,
            "summary": self.fault.summary,
            "passed": not failures,
            "failures": failures,
            "warnings": warnings,
            "fault_seconds": round(seconds + self.fault.lingers_seconds, 1),
            "fault_actions": ticks + 1,
            "sessions": len(self.sessions),
            "let_through": len(let_through),
            "let_through_details": [_describe(o, began) for o in let_through[:10]],
            "sessions_lost": len(lost),
            "sessions_lost_details": lost,
            "recovered": recovered,
            "recovery_seconds": recovery,
            "requests": {"baseline": len(baseline), "fault": len(during), "after": len(after)},
            "during_fault": outcome_counts(during),
            "during_fault_outcomes": dict(Counter(o.outcome for o in during)),
            "login_asked_reasons": dict(Counter(o.reason for o in observations if o.reason)),
            "after_fault": outcome_counts(after),
            "after_fault_outcomes": dict(Counter(o.outcome for o in after)),
            "expired_tokens_served": sum(1 for o in observations if o.outcome == EXPIRED_TOKEN),
            "idp_refreshes": idp,
            "unexpected_after_fault": [_describe(o, began) for o in after if o.outcome != OK][:10],
        }


def _describe(observation: Observation, began: float) -> dict[str, Any]:
    return {
        "kind": observation.kind,
        "at_seconds": round(observation.at - began, 2),
        "status": observation.status,
        "outcome": observation.outcome,
        "provider": observation.provider,
    }
