"""Thread-safe counts of what the soak's clients sent and saw, and every surprise in detail."""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from typing import Any

import requests

BODY_EXCERPT = 300


@dataclass(frozen=True)
class Surprise:
    """One outcome that differed from the expected one."""

    kind: str
    at_seconds: float  # since the traffic started
    request: str  # "GET /api/x"
    status: int | None  # None: no answer (connection error, timeout)
    expected: str
    detail: str


class Recorder:
    def __init__(self, detail_cap: int = 50) -> None:
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._detail_cap = detail_cap
        self._statuses: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._steps: Counter[str] = Counter()
        self._notes: Counter[str] = Counter()
        self._surprises: list[Surprise] = []
        self._surprise_counts: Counter[str] = Counter()

    def restart_clock(self) -> None:
        """Make ``at_seconds`` count from now (the start of the measured traffic)."""
        self._started = time.monotonic()

    def step(self, kind: str) -> None:
        with self._lock:
            self._steps[kind] += 1

    def response(self, kind: str, status: int | None) -> None:
        """Count one HTTP exchange of ``kind``; None for one that got no answer."""
        with self._lock:
            self._statuses[kind]["no answer" if status is None else str(status)] += 1

    def note(self, name: str, amount: int = 1) -> None:
        """Count an expected but noteworthy event (e.g. a previous, still valid token)."""
        with self._lock:
            self._notes[name] += amount

    def surprise(
        self,
        kind: str,
        request: str,
        *,
        expected: str,
        status: int | None = None,
        detail: str = "",
        response: requests.Response | None = None,
    ) -> None:
        """Record an unexpected outcome; details are kept for the first ``detail_cap``."""
        if response is not None:
            status = response.status_code
            detail = f"{detail} body: {response.text[:BODY_EXCERPT]!r}".strip()
        with self._lock:
            self._surprise_counts[kind] += 1
            if len(self._surprises) < self._detail_cap:
                at = round(time.monotonic() - self._started, 3)
                self._surprises.append(Surprise(kind, at, request, status, expected, detail))

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            requests_per_kind = {k: sum(v.values()) for k, v in sorted(self._statuses.items())}
            return {
                "requests": requests_per_kind,
                "total_requests": sum(requests_per_kind.values()),
                "steps": dict(sorted(self._steps.items())),
                "statuses": {k: dict(sorted(v.items())) for k, v in sorted(self._statuses.items())},
                "notes": dict(sorted(self._notes.items())),
                "unexpected": {
                    "count": sum(self._surprise_counts.values()),
                    "by_kind": dict(sorted(self._surprise_counts.items())),
                    "details": [asdict(s) for s in self._surprises],
                    "details_capped_at": self._detail_cap,
                },
            }
