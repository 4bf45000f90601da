"""Sessions begin and end: full browser logins through both IdPs, and logouts.

A login lands on the page it was started for, with a session holding both providers' tokens;
a logout leaves neither record nor index entry in Redis, and the credential then gets 401.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import requests

from gateway.sessions.credentials import SessionCredential
from soak import checks
from soak.checks import API
from soak.environment import SOAK_USERS
from soak.pool import DIRECT, LOGIN, PROVIDERS, LiveSession
from tests.support.login import HTML, browser_login, follow

if TYPE_CHECKING:
    from soak.traffic import Client

REQUEST_TIMEOUT = 10.0
LOGOUT_GRACE = 0.5  # seconds for the invalidation to reach every worker's session cache


class Lifecycle:
    """The login and logout steps of one client."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.shared = client.shared
        self.stack = client.stack
        self.record = client.record
        self.rng = client.rng

    def login(self) -> None:
        """A full browser login through both IdPs lands on the page with a working session."""
        shared = self.shared
        if shared.pool.count(LOGIN) >= shared.max_logins:
            return self.logout()
        user = self.rng.choice(SOAK_USERS)
        path = f"/api/whoami?soak={next(shared.numbers)}"
        seen: list[requests.Response] = []
        browser = requests.Session()
        try:
            _, page = browser_login(
                self.stack, path, browser=browser, username=user, password=user, seen=seen
            )
        except (requests.RequestException, AssertionError) as exc:
            self.client.count_hops("login", seen)
            self.record.surprise("login", path, expected="logged-in page", detail=repr(exc))
            return
        self.client.count_hops("login", seen)
        if page.status_code != 200 or page.url != self.stack.url + path:
            self.record.surprise("login", path, expected=f"200 at {path}", response=page)
            return
        cookie = browser.cookies.get(self.stack.cookie_name)
        credential = SessionCredential.parse(cookie) if cookie else None
        session = shared.store.load(credential) if credential else None
        if credential is None or session is None or set(session.tokens) != set(PROVIDERS):
            detail = "no session" if session is None else f"tokens for {sorted(session.tokens)}"
            self.record.surprise("login", path, expected="session for both IdPs", detail=detail)
            return
        live = LiveSession(
            credential, LOGIN, session.identity.subject, browser, expires_at=session.expires_at
        )
        live.remember(session)
        echoed = checks.echoed_headers(page) or {}
        token = session.tokens["primary"].access_token
        problem, _ = checks.token_problem(API, echoed, live, {token}, time.time())
        self.client.check_echo(
            "login", path, [problem, checks.identity_problem(echoed, live.subject)]
        )
        with shared.lock:
            shared.subjects.add(live.subject)
        shared.pool.add(live)

    def logout(self) -> None:
        """``/auth/logout`` in the browser: via the IdP to the logged-out page, session gone."""
        shared = self.shared
        live = shared.pool.retire(LOGIN, keep=shared.min_logins)
        if live is None:  # nothing to log out yet: log in instead (never back and forth)
            return self.login() if shared.pool.count(LOGIN) < shared.max_logins else None
        assert live.browser is not None
        path = "/auth/logout?redirect_url=/"
        # The browser's own jar carries the session cookie (and the IdP's, for end-session).
        response = live.browser.get(
            self.stack.url + path, headers=HTML, allow_redirects=False, timeout=REQUEST_TIMEOUT
        )
        self.record.response("logout", response.status_code)
        if response.status_code != 302:
            self.record.surprise("logout", path, expected="302", response=response)
            return
        seen: list[requests.Response] = []
        final = follow(live.browser, response, seen=seen)
        self.client.count_hops("logout", seen[1:])
        if final.status_code != 200 or "logged out" not in final.text:
            self.record.surprise("logout", final.url, expected="logged-out page", response=final)
        self.expect_gone(live, "logout")

    def cli_logout(self) -> None:
        """A CLI client logs out with its bearer credential; a new CLI session replaces it."""
        shared = self.shared
        live = shared.pool.retire(DIRECT, keep=1)
        if live is None:
            return
        headers = self.client.credential_headers(live.credential, "bearer")
        response = self.client.send(
            "cli_logout", "POST", "/auth/logout", expect=200, headers=headers
        )
        if response is not None and response.json().get("logged_out") is not True:
            self.record.surprise(
                "cli_logout", "/auth/logout", expected="logged_out", response=response
            )
        self.expect_gone(live, "cli_logout")
        shared.pool.add(shared.new_direct_session(live.subject))

    def expect_gone(self, live: LiveSession, kind: str) -> None:
        """After a logout: no record or index entry in Redis, and 401 (cookie and bearer)."""
        codec, client = self.shared.codec, self.shared.redis
        lookup_id = live.credential.lookup_id
        if client.exists(codec.record_key(live.credential)):
            self.record.surprise(kind, "(redis)", expected="record deleted", detail=lookup_id[:12])
        if client.hexists(codec.keys.user_index(live.subject), lookup_id):
            self.record.surprise(kind, "(redis)", expected="index entry deleted", detail="user")
        for via in ("cookie", "bearer"):
            self.expect_denied(f"after_{kind}", live.credential, via)

    def expect_denied(self, kind: str, credential: SessionCredential, via: str) -> None:
        headers = self.client.credential_headers(credential, via)
        deadline = time.monotonic() + LOGOUT_GRACE
        late = False
        while True:
            response = self.client.send_quietly(kind, "/api/after-logout", headers)
            if response is not None and response.status_code == 401:
                if late:
                    self.record.note("logout_honoured_within_grace")
                return
            if time.monotonic() >= deadline:
                self.record.surprise(
                    kind, f"GET /api/after-logout ({via})", expected="401", response=response
                )
                return
            late = True
            time.sleep(0.02)
