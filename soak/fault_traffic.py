"""Verified traffic for the fault suite: every answer is classified, none is trusted blindly.

A live session's 200 must carry an access token that the provider itself issued to that
session's grant and that had not expired when the request was sent; the provider says so
through ``/_admin/token-info``, so the check does not read the Redis that a fault may be
breaking. A credential that must be refused (none, unknown, a wrong secret, logged out,
expired) may get 401, a login redirect or, while something is down, 503: never a 200.
"""

from __future__ import annotations

import http.cookiejar
import random
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import requests

from gateway.sessions.credentials import SessionCredential
from soak import checks
from soak.checks import API, GITLAB, TokenRoute
from tests.support.login import HTML, browser_login, follow
from tests.support.stack import Stack

JSON = {"Accept": "application/json"}
REQUEST_TIMEOUT = 10.0
EXPIRY_TOLERANCE = 1.0  # seconds: the gateway stores expiry in whole seconds
ROUTES = (API, GITLAB)

# Outcomes. OK is the only one expected when nothing is broken.
OK = "ok"
UNAVAILABLE = "unavailable"  # 502/503/504 or no answer: failed closed
LOGIN_ASKED = "login_asked"  # a live session was sent to log in again (401/302)
LET_THROUGH = "let_through"  # a 200 for a credential that must be refused
WRONG_TOKEN = "wrong_token"  # a 200 with a token not of this session's grant
EXPIRED_TOKEN = "expired_token"  # a 200 with this session's token, expired when sent
OTHER = "other"
PENDING = "pending"  # a 200 whose token the provider has not judged yet


@dataclass(eq=False)
class FaultSession:
    """A session logged in through both IdPs; ``grants`` ties it to its providers' grants."""

    credential: SessionCredential
    username: str
    grants: dict[str, str]  # provider -> grant id at that provider


@dataclass
class Observation:
    kind: str  # session, no_session, logged_out, expired, login_start
    at: float  # monotonic, when sent
    sent_wall: float  # time.time() when sent
    status: int | None
    outcome: str
    session: FaultSession | None = None
    provider: str | None = None
    token: str | None = None
    issued_at: float | None = None  # of the token, when the provider knew it
    reason: str | None = None  # why a live session was sent to log in (the 401's error)


@dataclass
class TrafficLog:
    """Every observation of one fault run, in the order they were made."""

    observations: list[Observation] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, observation: Observation) -> None:
        with self.lock:
            self.observations.append(observation)

    def snapshot(self) -> list[Observation]:
        with self.lock:
            return list(self.observations)


def _unavailable(status: int | None) -> bool:
    return status is None or status in (502, 503, 504)


class Verifier:
    """Judges pending 200s by asking each provider what it issued."""

    def __init__(self, stack: Stack, log: TrafficLog) -> None:
        self._stack = stack
        self._log = log

    def verify(self) -> int:
        """Judge every pending observation; returns how many are still pending."""
        pending = [o for o in self._log.snapshot() if o.outcome == PENDING]
        by_provider: dict[str, set[str]] = {}
        for observation in pending:
            assert observation.provider and observation.token
            by_provider.setdefault(observation.provider, set()).add(observation.token)
        infos: dict[str, dict[str, Any]] = {}
        for provider, tokens in by_provider.items():
            try:
                infos[provider] = self._stack.idps[provider].token_info(sorted(tokens))
            except requests.RequestException:
                continue  # asked again at the next call
        left = 0
        for observation in pending:
            if observation.provider not in infos:
                left += 1
                continue
            info = infos[observation.provider].get(observation.token or "")
            observation.outcome = _judge(observation, info)
        return left


def _judge(observation: Observation, info: dict[str, Any] | None) -> str:
    session, provider = observation.session, observation.provider
    assert session is not None and provider is not None
    if info is None or info["grant_id"] != session.grants.get(provider):
        return WRONG_TOKEN
    observation.issued_at = float(info["issued_at"])
    if info["revoked"] or info["expires_at"] + EXPIRY_TOLERANCE <= observation.sent_wall:
        return EXPIRED_TOKEN
    return OK


class FaultClient:
    """One client thread's steps; every answer goes to the shared :class:`TrafficLog`."""

    WEIGHTS = {"session": 70, "no_session": 10, "logged_out": 6, "expired": 6, "login_start": 4}

    def __init__(
        self,
        stack: Stack,
        log: TrafficLog,
        sessions: list[FaultSession],
        refused: dict[str, list[SessionCredential]],
        seed: int,
    ) -> None:
        self.stack = stack
        self.log = log
        self.sessions = sessions
        self.refused = refused  # "logged_out" / "expired" -> credentials that must get no 200
        self.rng = random.Random(seed)
        self.http = requests.Session()
        self.http.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))

    def run(self, stop: threading.Event, think_time: float) -> None:
        kinds, weights = list(self.WEIGHTS), list(self.WEIGHTS.values())
        while not stop.is_set():
            getattr(self, self.rng.choices(kinds, weights)[0])()
            stop.wait(think_time)

    def _send(
        self, path: str, headers: dict[str, str], method: str = "GET", **kwargs: Any
    ) -> tuple[float, float, requests.Response | None]:
        at, wall = time.monotonic(), time.time()
        try:
            response = self.http.request(
                method,
                self.stack.url + path,
                headers=headers,
                timeout=REQUEST_TIMEOUT,
                allow_redirects=False,
                **kwargs,
            )
        except requests.RequestException:
            return at, wall, None
        return at, wall, response

    def _headers(self, credential: SessionCredential, via: str) -> dict[str, str]:
        if via == "bearer":
            return {**JSON, "Authorization": f"Bearer {credential.encode()}"}
        return {**JSON, "Cookie": f"{self.stack.cookie_name}={credential.encode()}"}

    def session(self) -> None:
        """A live session calls a backend of one provider: 200 with that session's token."""
        live = self.rng.choice(self.sessions)
        route: TokenRoute = self.rng.choice(ROUTES)
        via = self.rng.choice(("cookie", "bearer"))
        method, body = ("POST", {"json": {"n": 1}}) if via == "bearer" else ("GET", {})
        at, wall, response = self._send(
            f"{route.prefix}faults?via={via}", self._headers(live.credential, via), method, **body
        )
        status = None if response is None else response.status_code
        observation = Observation("session", at, wall, status, OTHER, live, route.provider)
        if response is None or _unavailable(status):
            observation.outcome = UNAVAILABLE
        elif status in (401, 302):
            observation.outcome = LOGIN_ASKED
            observation.reason = _denial_reason(response)
        elif status == 200:
            observation.token = _token(route, response)
            observation.outcome = PENDING if observation.token else WRONG_TOKEN
        self.log.add(observation)

    def _must_refuse(self, kind: str, credential: SessionCredential | None) -> None:
        via = self.rng.choice(("cookie", "bearer"))
        headers = JSON if credential is None else self._headers(credential, via)
        at, wall, response = self._send(f"{self.rng.choice(ROUTES).prefix}refused", headers)
        status = None if response is None else response.status_code
        if _unavailable(status):
            outcome = UNAVAILABLE
        elif status == 401 or (status == 302 and response is not None and _to_login(response)):
            outcome = OK
        elif status is not None and 200 <= status < 300:
            outcome = LET_THROUGH
        else:
            outcome = OTHER
        self.log.add(Observation(kind, at, wall, status, outcome))

    def no_session(self) -> None:
        """No credential, an unknown one, or a live session's id with a wrong secret."""
        variant = self.rng.choice(("none", "unknown", "wrong_secret"))
        credential: SessionCredential | None = None
        if variant != "none":
            credential = SessionCredential.generate()
        if variant == "wrong_secret":
            live = self.rng.choice(self.sessions).credential
            credential = SessionCredential(live.session_id, secrets.token_bytes(len(live.secret)))
        self._must_refuse("no_session", credential)

    def logged_out(self) -> None:
        self._must_refuse("logged_out", self.rng.choice(self.refused["logged_out"]))

    def expired(self) -> None:
        self._must_refuse("expired", self.rng.choice(self.refused["expired"]))

    def login_start(self) -> None:
        """A browser without a session opens a page: sent to the login app, then the IdP."""
        at, wall, response = self._send(f"/auth/login?redirect_url=/api/n{at_random()}", HTML)
        status = None if response is None else response.status_code
        if _unavailable(status):
            outcome = UNAVAILABLE
        elif status == 302 and response is not None and "/authorize" in _location(response):
            outcome = OK
        else:
            outcome = OTHER
        self.log.add(Observation("login_start", at, wall, status, outcome))


def at_random() -> str:
    return secrets.token_hex(4)


def _location(response: requests.Response) -> str:
    return response.headers.get("location", "")


def _denial_reason(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"{response.status_code} to {_location(response)[:60]}"
    if not isinstance(body, dict):
        return str(response.status_code)
    return str(body.get("reason") or body.get("error") or response.status_code)


def _to_login(response: requests.Response) -> bool:
    return "/auth/login" in _location(response)


def _token(route: TokenRoute, response: requests.Response) -> str | None:
    headers = checks.echoed_headers(response)
    values = (headers or {}).get(route.header, [])
    if len(values) != 1 or not values[0].startswith(route.scheme):
        return None
    return values[0][len(route.scheme) :] or None


# -- sessions --------------------------------------------------------------------------------


def log_in(stack: Stack, username: str) -> tuple[FaultSession, requests.Session]:
    """A full browser login through both IdPs; the session and the browser that holds it."""
    from gateway.sessions.factory import sync_store

    browser, page = browser_login(
        stack, f"/api/login-{at_random()}", username=username, password=username
    )
    if page.status_code != 200:
        raise RuntimeError(f"login of {username} ended with {page.status_code}")
    cookie = browser.cookies.get(stack.cookie_name)
    if cookie is None:
        raise RuntimeError(f"login of {username} set no session cookie")
    credential = SessionCredential.parse(cookie)
    session = sync_store(stack.config).load(credential)
    if session is None or set(session.tokens) != {"primary", "gitlab"}:
        raise RuntimeError(f"login of {username} stored no session with both providers")
    grants = {}
    for provider, tokens in session.tokens.items():
        info = stack.idps[provider].token_info([tokens.access_token])[tokens.access_token]
        if info is None:
            raise RuntimeError(f"{provider} does not know the token the login stored")
        grants[provider] = str(info["grant_id"])
    return FaultSession(credential, username, grants), browser


def log_out(stack: Stack, browser: requests.Session) -> None:
    """``/auth/logout`` in the browser, through the IdP to the logged-out page."""
    first = browser.get(
        stack.url + "/auth/logout?redirect_url=/",
        headers=HTML,
        allow_redirects=False,
        timeout=REQUEST_TIMEOUT,
    )
    final = follow(browser, first)
    if final.status_code != 200:
        raise RuntimeError(f"logout ended with {final.status_code}")


def outcome_counts(observations: list[Observation]) -> dict[str, dict[str, int]]:
    """{kind: {status or 'no answer': count}} for a report."""
    counts: dict[str, Counter[str]] = {}
    for observation in observations:
        status = "no answer" if observation.status is None else str(observation.status)
        counts.setdefault(observation.kind, Counter())[status] += 1
    return {kind: dict(sorted(c.items())) for kind, c in sorted(counts.items())}
