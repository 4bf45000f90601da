"""One check end to end around a fake session source: failures fail closed, lookups are rare."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ext_authz.authorizer import Authorizer
from ext_authz.decision import Allow, Decider, Decision, Deny, Lookup
from ext_authz.request import CheckRequest
from gateway.config import GatewayConfig, parse_config
from gateway.errors import SessionInvalid, StoreUnavailable
from gateway.sessions.credentials import SessionCredential
from gateway.sessions.model import Identity, Session, TokenSet

PUBLIC_URL = "http://gateway.test:8080"
COOKIE = "gw_session"
NOW = 1_700_000_000


class FakeSessionSource:
    """Answers every load with one outcome (a session, None, or an error) and counts calls."""

    def __init__(self, outcome: Session | BaseException | None = None) -> None:
        self.outcome = outcome
        self.loaded: list[SessionCredential] = []
        self.evicted: list[SessionCredential] = []

    async def load(self, credential: SessionCredential) -> Session | None:
        self.loaded.append(credential)
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome

    def evict(self, credential: SessionCredential) -> None:
        self.evicted.append(credential)


def gateway_config() -> GatewayConfig:
    backend = "http://backend.test"
    data: dict[str, Any] = {
        "public_url": PUBLIC_URL,
        "session": {"cookie_name": COOKIE},
        "providers": [
            {"id": "primary", "kind": "oidc", "issuer": "https://idp.test", "client_id": "gw"}
        ],
        "routes": [
            {"name": "api", "prefix": "/api/", "upstream": backend, "provider": "primary"},
            {"name": "status", "prefix": "/status", "upstream": backend, "public": True},
        ],
    }
    return parse_config(data, {"GATEWAY_SECRET_KEYS": "x" * 40})


@pytest.fixture
def decider() -> Decider:
    return Decider(gateway_config())


@pytest.fixture
def credential() -> SessionCredential:
    return SessionCredential.generate()


def live_session(expires_at: int = NOW + 3600) -> Session:
    return Session(
        identity=Identity("user-42"),
        created_at=NOW,
        expires_at=expires_at,
        tokens={"primary": TokenSet("primary-access-token", expires_at=NOW + 600)},
    )


def check(decider: Decider, source: FakeSessionSource, request: CheckRequest) -> Decision:
    return asyncio.run(Authorizer(decider, source, clock=lambda: NOW).check(request))


def with_cookie(credential: SessionCredential, method: str = "GET", **headers: str) -> CheckRequest:
    all_headers = {k.replace("_", "-"): v for k, v in headers.items()}
    all_headers["cookie"] = f"{COOKIE}={credential.encode()}"
    return CheckRequest(method, "/api/items", all_headers, "api")


def test_a_live_session_is_looked_up_once_and_allowed(
    decider: Decider, credential: SessionCredential
) -> None:
    source = FakeSessionSource(live_session())
    decision = check(decider, source, with_cookie(credential))
    assert isinstance(decision, Allow)
    assert dict(decision.set_headers)["authorization"] == "Bearer primary-access-token"
    assert source.loaded == [credential]


def test_redis_unavailable_becomes_a_503_not_a_logout(
    decider: Decider, credential: SessionCredential
) -> None:
    source = FakeSessionSource(StoreUnavailable("connection refused"))
    decision = check(decider, source, with_cookie(credential))
    assert isinstance(decision, Deny)
    assert (decision.status, decision.reason) == (503, Lookup.UNAVAILABLE)
    assert "set-cookie" not in dict(decision.headers)


def test_an_unreadable_record_becomes_invalid_session(
    decider: Decider, credential: SessionCredential
) -> None:
    source = FakeSessionSource(SessionInvalid("does not authenticate"))
    decision = check(decider, source, with_cookie(credential))
    assert isinstance(decision, Deny)
    assert (decision.status, decision.reason) == (401, Lookup.INVALID)
    assert "set-cookie" in dict(decision.headers)


def test_no_record_becomes_unknown_session(decider: Decider, credential: SessionCredential) -> None:
    decision = check(decider, FakeSessionSource(None), with_cookie(credential))
    assert isinstance(decision, Deny)
    assert (decision.status, decision.reason) == (401, Lookup.UNKNOWN)


def test_the_injected_clock_decides_expiry(decider: Decider, credential: SessionCredential) -> None:
    source = FakeSessionSource(live_session(expires_at=NOW))
    decision = check(decider, source, with_cookie(credential))
    assert isinstance(decision, Deny) and decision.reason == "session_expired"


def test_an_unexpected_error_from_the_source_propagates_to_the_servicer(
    decider: Decider, credential: SessionCredential
) -> None:
    # Only our two error types are translated here; anything else is the servicer's to deny.
    with pytest.raises(RuntimeError):
        check(decider, FakeSessionSource(RuntimeError("bug")), with_cookie(credential))


@pytest.mark.parametrize(
    ("request_", "status"),
    [
        pytest.param(
            CheckRequest(
                "OPTIONS",
                "/api/x",
                {
                    "cookie": f"{COOKIE}={SessionCredential.generate().encode()}",
                    "origin": PUBLIC_URL,
                    "access-control-request-method": "PUT",
                },
                "api",
            ),
            None,
            id="cors-preflight",
        ),
        pytest.param(CheckRequest("GET", "/api/x", {}, "api"), 401, id="no-credential"),
        pytest.param(
            CheckRequest("GET", "/api/x", {"cookie": f"{COOKIE}=garbage"}, "api"),
            401,
            id="garbled-cookie",
        ),
        pytest.param(
            CheckRequest(
                "POST",
                "/api/x",
                {
                    "cookie": f"{COOKIE}={SessionCredential.generate().encode()}",
                    "origin": "https://evil.example",
                },
                "api",
            ),
            403,
            id="csrf-refusal",
        ),
        pytest.param(
            CheckRequest(
                "GET",
                "/status",
                {"cookie": f"{COOKIE}={SessionCredential.generate().encode()}"},
                "status",
            ),
            None,
            id="public-route",
        ),
        pytest.param(
            CheckRequest(
                "GET",
                "/api/x",
                {"cookie": f"{COOKIE}={SessionCredential.generate().encode()}"},
                "nope",
            ),
            403,
            id="unknown-route",
        ),
    ],
)
def test_no_lookup_happens_when_the_answer_needs_no_session(
    decider: Decider, request_: CheckRequest, status: int | None
) -> None:
    source = FakeSessionSource(live_session())
    decision = check(decider, source, request_)
    assert source.loaded == []
    if status is None:
        assert isinstance(decision, Allow)
    else:
        assert isinstance(decision, Deny) and decision.status == status


class FailingRefresher:
    """Says every token is due and fails every refresh with one error."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def needs_refresh(
        self, session: Session, provider_id: str, now: float, lookup_id: str | None = None
    ) -> bool:
        return True

    async def refreshed(self, credential: SessionCredential, provider_id: str) -> Session:
        raise self.error

    def with_unstored(self, lookup_id: str, session: Session) -> Session:
        return session


def test_a_record_that_no_longer_opens_during_a_refresh_becomes_invalid_session(
    decider: Decider, credential: SessionCredential
) -> None:
    refresher = FailingRefresher(SessionInvalid("does not authenticate"))
    source = FakeSessionSource(live_session())
    authorizer = Authorizer(decider, source, refresher, clock=lambda: NOW)  # type: ignore[arg-type]
    decision = asyncio.run(authorizer.check(with_cookie(credential)))
    assert isinstance(decision, Deny)
    assert (decision.status, decision.reason) == (401, Lookup.INVALID)


# ---- several session cookies in one request (another path or domain) ----------------------


class SessionsByCredential(FakeSessionSource):
    """Answers each credential with its own outcome (None for one it does not know)."""

    def __init__(self, outcomes: dict[SessionCredential, Session | BaseException]) -> None:
        super().__init__()
        self.outcomes = outcomes

    async def load(self, credential: SessionCredential) -> Session | None:
        self.loaded.append(credential)
        outcome = self.outcomes.get(credential)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def with_cookies(*credentials: SessionCredential, accept: str = "application/json") -> CheckRequest:
    cookie = "; ".join(f"{COOKIE}={c.encode()}" for c in credentials)
    return CheckRequest("GET", "/api/items", {"cookie": cookie, "accept": accept}, "api")


def session_of(subject: str, expires_at: int = NOW + 3600) -> Session:
    return Session(
        identity=Identity(subject),
        created_at=NOW,
        expires_at=expires_at,
        tokens={"primary": TokenSet(f"{subject}-token", expires_at=NOW + 600)},
    )


@pytest.mark.parametrize("live_first", [True, False], ids=["live-first", "live-second"])
def test_the_live_one_of_two_session_cookies_is_used_and_nothing_is_expired(
    decider: Decider, live_first: bool
) -> None:
    live, dead = SessionCredential.generate(), SessionCredential.generate()
    source = SessionsByCredential({live: session_of("alice")})
    order = (live, dead) if live_first else (dead, live)
    decision = check(decider, source, with_cookies(*order))
    assert isinstance(decision, Allow)
    assert dict(decision.set_headers)["authorization"] == "Bearer alice-token"


def test_an_expired_session_under_another_path_does_not_hide_the_live_one(
    decider: Decider,
) -> None:
    old, live = SessionCredential.generate(), SessionCredential.generate()
    source = SessionsByCredential({old: session_of("alice", NOW), live: session_of("alice")})
    assert isinstance(check(decider, source, with_cookies(old, live)), Allow)


def test_two_live_sessions_of_one_user_use_the_first_sent(decider: Decider) -> None:
    first, second = SessionCredential.generate(), SessionCredential.generate()
    source = SessionsByCredential({first: session_of("alice"), second: session_of("alice")})
    decision = check(decider, source, with_cookies(first, second))
    assert isinstance(decision, Allow)


@pytest.mark.parametrize("accept", ["text/html", "application/json"])
def test_live_sessions_of_two_users_are_a_conflict_answered_without_redirect_or_expiry(
    decider: Decider, accept: str
) -> None:
    planted, own = SessionCredential.generate(), SessionCredential.generate()
    source = SessionsByCredential({planted: session_of("mallory"), own: session_of("alice")})
    decision = check(decider, source, with_cookies(planted, own, accept=accept))
    assert isinstance(decision, Deny)
    assert (decision.status, decision.reason) == (400, Lookup.CONFLICT)
    assert not {"location", "set-cookie"} & set(dict(decision.headers))


def test_redis_down_for_one_of_two_cookies_is_a_503_not_a_logout(decider: Decider) -> None:
    dead, unknown = SessionCredential.generate(), SessionCredential.generate()
    source = SessionsByCredential({unknown: StoreUnavailable("reset")})
    decision = check(decider, source, with_cookies(dead, unknown))
    assert isinstance(decision, Deny)
    assert (decision.status, decision.reason) == (503, Lookup.UNAVAILABLE)
    assert "set-cookie" not in dict(decision.headers)


def test_no_live_session_among_several_cookies_asks_for_a_login(decider: Decider) -> None:
    decision = check(
        decider,
        SessionsByCredential({}),
        with_cookies(SessionCredential.generate(), SessionCredential.generate()),
    )
    assert isinstance(decision, Deny) and (decision.status, decision.reason) == (
        401,
        Lookup.UNKNOWN,
    )


class LateRefresher(FailingRefresher):
    """A refresh that succeeds, with a token the provider answered too late to still live."""

    def __init__(self, session: Session) -> None:
        self.session = session

    async def refreshed(self, credential: SessionCredential, provider_id: str) -> Session:
        return self.session


def test_a_refresh_answered_after_its_token_expired_is_a_503_not_a_login(
    decider: Decider, credential: SessionCredential
) -> None:
    late = live_session().with_tokens(
        "primary", TokenSet("late-token", refresh_token="r2", expires_at=NOW - 1)
    )
    expired = live_session().with_tokens(
        "primary", TokenSet("old-token", refresh_token="r1", expires_at=NOW - 5)
    )
    authorizer = Authorizer(
        decider,
        FakeSessionSource(expired),
        LateRefresher(late),
        clock=lambda: NOW,  # type: ignore[arg-type]
    )
    decision = asyncio.run(authorizer.check(with_cookie(credential)))
    assert isinstance(decision, Deny)
    assert (decision.status, decision.reason) == (503, "refresh_unavailable")
