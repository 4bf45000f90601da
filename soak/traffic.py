"""The soak's clients: each step sends requests whose outcome is known in advance.

Every step is one kind of traffic (a session calling a backend, an anonymous request, a
login, a logout, ...). Responses are counted per kind; anything that differs from the
expectation is recorded with its details by the :class:`~soak.recorder.Recorder`.
"""

from __future__ import annotations

import http.cookiejar
import itertools
import random
import secrets
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
import requests

from gateway.sessions.credentials import SessionCredential
from gateway.sessions.model import Session, SessionCodec
from gateway.sessions.store import SessionStore
from soak import checks
from soak.checks import API, GITLAB, TokenRoute
from soak.lifecycle import REQUEST_TIMEOUT, Lifecycle
from soak.pool import DIRECT, PROVIDERS, LiveSession, SessionPool, write_session
from soak.recorder import Recorder
from tests.support.login import HTML
from tests.support.stack import Stack

JSON = {"Accept": "application/json"}
SHORT_SESSION_LIFETIME = 2.0  # seconds; such sessions are used once alive, once expired
PROTECTED_PREFIXES = ("/api/", "/gitlab/", "/repos/", "/jupyter/")

# Relative frequency of each kind of step.
WEIGHTS: dict[str, float] = {
    "api_cookie": 24,
    "gitlab_cookie": 14,
    "api_bearer": 10,
    "gitlab_bearer": 6,
    "anonymous_protected": 8,
    "anonymous_page": 3,
    "anonymous_catalog": 8,
    "unknown_session": 6,
    "expiring_session": 5,
    "login": 0.5,
    "logout": 0.5,
}
# POST /auth/logout with `Authorization: Bearer gws_…`: the login app reads the bearer
# credential, but Envoy strips Authorization (a managed header) on /auth/* routes, so through
# Envoy the call answers {"logged_out": true} and the session stays. Opt in with --cli-logout.
CLI_LOGOUT_WEIGHT = 0.5


def weights(cli_logout: bool) -> dict[str, float]:
    """The step mix; ``cli_logout`` adds CLI logouts with a bearer credential."""
    return {**WEIGHTS, "cli_logout": CLI_LOGOUT_WEIGHT} if cli_logout else dict(WEIGHTS)


@dataclass
class Shared:
    """What every client of one soak run shares."""

    stack: Stack
    store: SessionStore
    redis: redis.Redis
    codec: SessionCodec
    pool: SessionPool
    recorder: Recorder
    max_logins: int
    min_logins: int
    subjects: set[str] = field(default_factory=set)
    short_sessions: deque[tuple[SessionCredential, int]] = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)
    numbers: itertools.count[int] = field(default_factory=itertools.count)

    def new_direct_session(self, subject: str, lifetime: float = 3600) -> LiveSession:
        tokens = {provider: f"soak-{provider}-{secrets.token_hex(12)}" for provider in PROVIDERS}
        credential, session = write_session(self.store, subject, tokens=tokens, lifetime=lifetime)
        live = LiveSession(credential, DIRECT, subject, expires_at=session.expires_at)
        live.remember(session)
        with self.lock:
            self.subjects.add(subject)
        return live


class Client:
    def __init__(self, shared: Shared, seed: int) -> None:
        self.shared = shared
        self.stack = shared.stack
        self.record = shared.recorder
        self.rng = random.Random(seed)
        self.http = requests.Session()
        # Whatever a response sets, every request carries exactly the credentials we choose.
        self.http.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
        lifecycle = Lifecycle(self)
        self.steps: dict[str, Callable[[], None]] = {
            "api_cookie": lambda: self.session_call(API, "cookie"),
            "gitlab_cookie": lambda: self.session_call(GITLAB, "cookie"),
            "api_bearer": lambda: self.session_call(API, "bearer"),
            "gitlab_bearer": lambda: self.session_call(GITLAB, "bearer"),
            "anonymous_protected": self.anonymous_protected,
            "anonymous_page": self.anonymous_page,
            "anonymous_catalog": self.anonymous_catalog,
            "unknown_session": self.unknown_session,
            "expiring_session": self.expiring_session,
            "login": lifecycle.login,
            "logout": lifecycle.logout,
            "cli_logout": lifecycle.cli_logout,
        }

    def run(
        self,
        deadline: float,
        stop: threading.Event,
        think_time: float,
        mix: dict[str, float] = WEIGHTS,
    ) -> None:
        """Take weighted random steps of ``mix`` until the deadline (or ``stop``)."""
        kinds, frequencies = list(mix), list(mix.values())
        while not stop.is_set() and time.monotonic() < deadline:
            self.take(self.rng.choices(kinds, frequencies)[0])
            if think_time:
                stop.wait(think_time)

    def take(self, kind: str) -> None:
        """One step; a failure of the soak's own code is an unexpected outcome too."""
        self.record.step(kind)
        try:
            self.steps[kind]()
        except Exception:  # noqa: BLE001 (any error in a step must show in the report)
            self.record.surprise(kind, "(step)", expected="no error", detail=traceback.format_exc())

    # -- requests --------------------------------------------------------------------------

    def send(
        self, kind: str, method: str, path: str, *, expect: int, **kwargs: Any
    ) -> requests.Response | None:
        """One request through Envoy, counted; None when it did not answer ``expect``."""
        try:
            response = self.http.request(
                method,
                self.stack.url + path,
                timeout=REQUEST_TIMEOUT,
                allow_redirects=False,
                **kwargs,
            )
        except requests.RequestException as exc:
            self.record.response(kind, None)
            self.record.surprise(kind, f"{method} {path}", expected=str(expect), detail=repr(exc))
            return None
        self.record.response(kind, response.status_code)
        if response.status_code != expect:
            self.record.surprise(kind, f"{method} {path}", expected=str(expect), response=response)
            return None
        return response

    def credential_headers(self, credential: SessionCredential, via: str) -> dict[str, str]:
        if via == "bearer":
            return {**JSON, "Authorization": f"Bearer {credential.encode()}"}
        return {**JSON, "Cookie": f"{self.stack.cookie_name}={credential.encode()}"}

    def stored(self, live: LiveSession) -> Session | None:
        session = self.shared.store.load(live.credential)
        if session is not None:
            live.remember(session)
        return session

    def check_echo(self, kind: str, request: str, problems: list[str | None]) -> None:
        """Record each problem found in a 200 response's echoed request."""
        for problem in problems:
            if problem:
                self.record.surprise(
                    kind, request, status=200, expected="200 as specified", detail=problem
                )

    # -- steps with a live session ---------------------------------------------------------

    def session_call(self, route: TokenRoute, via: str) -> None:
        """A live session calls a backend: 200 with that session's token for the route."""
        kind = f"{route.name}_{via}"
        with self.shared.pool.borrow() as live:
            if live is None:
                self.record.note("no_live_session")
                return
            before = self.stored(live)
            if before is None:
                self.record.surprise(kind, "(redis)", expected="live session", detail="gone")
                return
            number = next(self.shared.numbers)
            path = f"{route.prefix}soak/{number}?via={via}"
            # CLI clients send bodies; cookie-authenticated unsafe methods need an Origin.
            method = "POST" if via == "bearer" else "GET"
            body = {"json": {"n": number}} if method == "POST" else {}
            requested_at = time.time()
            headers = self.credential_headers(live.credential, via)
            response = self.send(kind, method, path, expect=200, headers=headers, **body)
            if response is None:
                return
            after = self.stored(live)
            echoed = checks.echoed_headers(response)
            if echoed is None:
                self.record.surprise(kind, path, expected="echo", response=response)
                return
            current = {
                s.tokens[route.provider].access_token
                for s in (before, after)
                if s is not None and route.provider in s.tokens
            }
            problem, previous = checks.token_problem(route, echoed, live, current, requested_at)
            if previous:
                self.record.note("previous_token_still_valid")
            problems = [problem, checks.leak_problem(echoed, self.stack.cookie_name)]
            if route.identity_headers:
                problems.append(checks.identity_problem(echoed, live.subject))
            if after is None:
                problems.append("the session vanished from Redis during the request")
            self.check_echo(kind, f"{method} {path}", problems)

    # -- anonymous, unknown and expired ----------------------------------------------------

    def anonymous_protected(self) -> None:
        path = f"{self.rng.choice(PROTECTED_PREFIXES)}anonymous"
        response = self.send("anonymous_protected", "GET", path, expect=401, headers=JSON)
        if response is not None and (problem := checks.denial_problem(response)):
            self.record.surprise("anonymous_protected", path, expected="401 JSON", detail=problem)

    def anonymous_page(self) -> None:
        response = self.send("anonymous_page", "GET", "/api/page", expect=302, headers=HTML)
        if response is not None and (problem := checks.login_redirect_problem(response)):
            self.record.surprise("anonymous_page", "/api/page", expected="302", detail=problem)

    def anonymous_catalog(self) -> None:
        # Forged gateway headers must be removed even on anonymous routes.
        forged = {**JSON, "X-Gateway-User-Id": "mallory", "Private-Token": "forged"}
        response = self.send(
            "anonymous_catalog", "GET", "/catalog/items", expect=200, headers=forged
        )
        if response is None:
            return
        echoed = checks.echoed_headers(response) or {"(not the echo)": []}
        if problem := checks.anonymous_problem(echoed):
            self.record.surprise(
                "anonymous_catalog", "/catalog/items", expected="200", detail=problem
            )

    def unknown_session(self) -> None:
        """Unknown credentials, and a live session's id with a wrong secret: 401."""
        variant = self.rng.choice(("cookie", "bearer", "wrong_secret"))
        credential = SessionCredential.generate()
        if variant == "wrong_secret":
            with self.shared.pool.borrow() as live:
                if live is not None:
                    credential = SessionCredential(live.credential.session_id, credential.secret)
        headers = self.credential_headers(credential, "bearer" if variant == "bearer" else "cookie")
        response = self.send(
            "unknown_session", "GET", f"/api/{variant}", expect=401, headers=headers
        )
        if response is not None and (problem := checks.denial_problem(response)):
            self.record.surprise("unknown_session", variant, expected="401 JSON", detail=problem)

    def expiring_session(self) -> None:
        """A short session answers 200 while alive and 401 once its lifetime is over."""
        shared = self.shared
        expired = None
        with shared.lock:
            if shared.short_sessions and shared.short_sessions[0][1] + 0.1 <= time.time():
                expired = shared.short_sessions.popleft()[0]
        if expired is not None:
            via = self.rng.choice(("cookie", "bearer"))
            headers = self.credential_headers(expired, via)
            response = self.send("expired_session", "GET", "/api/late", expect=401, headers=headers)
            if response is not None and (problem := checks.denial_problem(response)):
                self.record.surprise("expired_session", via, expected="401 JSON", detail=problem)
        live = shared.new_direct_session("soak-expiring", lifetime=SHORT_SESSION_LIFETIME)
        headers = self.credential_headers(live.credential, "cookie")
        response = self.send("short_session", "GET", "/api/early", expect=200, headers=headers)
        with shared.lock:
            shared.short_sessions.append((live.credential, live.expires_at))
        if response is not None:
            echoed = checks.echoed_headers(response) or {}
            current = set(live.tokens_seen["primary"])
            problem, _ = checks.token_problem(API, echoed, live, current, time.time())
            self.check_echo("short_session", "/api/early", [problem])

    def send_quietly(
        self, kind: str, path: str, headers: dict[str, str]
    ) -> requests.Response | None:
        """Like :meth:`send` without judging the status (the caller retries)."""
        try:
            response = self.http.get(
                self.stack.url + path, headers=headers, timeout=REQUEST_TIMEOUT
            )
        except requests.RequestException:
            self.record.response(kind, None)
            return None
        self.record.response(kind, response.status_code)
        return response

    def count_hops(self, kind: str, seen: list[requests.Response]) -> None:
        """Count every hop of a browser flow; any error status on the way is unexpected."""
        for response in seen:
            self.record.response(kind, response.status_code)
            if response.status_code >= 400:
                self.record.surprise(kind, response.url, expected="< 400", response=response)
