"""Counters that tests read through ``GET /_admin/stats`` to see what the provider was asked.

Only the counting lives here; the views decide what to record.
"""

from __future__ import annotations

import copy
import threading
from collections import Counter, defaultdict
from typing import Any


class Stats:
    """Thread-safe counters and event lists, cleared by :meth:`reset`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget everything recorded so far."""
        with self._lock:
            self._token_requests: defaultdict[str, Counter[str]] = defaultdict(Counter)
            self._counters: Counter[str] = Counter()
            self._logins: Counter[str] = Counter()
            self._userinfo: Counter[str] = Counter()
            self._revocations: list[dict[str, Any]] = []
            self._end_sessions: list[dict[str, Any]] = []
            self._backchannel: list[dict[str, Any]] = []

    def token_request(self, grant_type: str, outcome: str) -> None:
        """Count one ``/token`` call; ``outcome`` is ``ok`` or the OAuth error code."""
        with self._lock:
            self._token_requests[grant_type or "missing"][outcome] += 1
            if grant_type == "refresh_token" and outcome == "ok":
                self._counters["refreshes"] += 1

    def login(self, how: str) -> None:
        """Count an authorization-endpoint outcome: password, sso, failed, denied."""
        with self._lock:
            self._logins[how] += 1

    def userinfo(self, outcome: str) -> None:
        """Count one ``/userinfo`` call."""
        with self._lock:
            self._userinfo[outcome] += 1

    def rotated_refresh_reuse(self) -> None:
        """Count a refresh presenting a refresh token that an earlier refresh rotated away.

        It gets ``invalid_grant``; for a gateway it means the answer of that earlier refresh
        was lost, and with it the session's only usable refresh token."""
        with self._lock:
            self._counters["rotated_refresh_reuse"] += 1

    def code_replay(self) -> None:
        """Count an attempt to redeem an authorization code a second time."""
        with self._lock:
            self._counters["code_replays"] += 1

    def revocation(self, event: dict[str, Any]) -> None:
        """Record one ``/revoke`` call (hint, which kind of token, client, status)."""
        with self._lock:
            self._revocations.append(dict(event))

    def end_session(self, event: dict[str, Any]) -> None:
        """Record one ``/end-session`` call."""
        with self._lock:
            self._end_sessions.append(dict(event))

    def backchannel_delivery(self, event: dict[str, Any]) -> None:
        """Record one back-channel logout POST and how it went."""
        with self._lock:
            self._backchannel.append(dict(event))

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy of everything recorded."""
        with self._lock:
            return copy.deepcopy(
                {
                    "token_requests": {k: dict(v) for k, v in self._token_requests.items()},
                    "refreshes": self._counters["refreshes"],
                    "code_replays": self._counters["code_replays"],
                    "rotated_refresh_reuse": self._counters["rotated_refresh_reuse"],
                    "logins": dict(self._logins),
                    "userinfo": dict(self._userinfo),
                    "revocations": self._revocations,
                    "end_session_calls": len(self._end_sessions),
                    "end_sessions": self._end_sessions,
                    "backchannel_deliveries": self._backchannel,
                }
            )
