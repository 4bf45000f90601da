"""The request parsers the decision core relies on, fed the hostile input they will meet."""

from __future__ import annotations

import pytest

from ext_authz.request import (
    CheckRequest,
    CredentialSource,
    PresentedCredential,
    cookie_header_without,
    is_browser_navigation,
    is_preflight,
    read_credential,
    request_origin,
    split_cookies,
)
from gateway.errors import CredentialError
from gateway.sessions.credentials import (
    MAX_SESSION_COOKIES,
    MAX_SESSION_VALUES,
    SessionCredential,
)

SESSION_COOKIE = "gw_session"
COOKIE_NAMES = frozenset({SESSION_COOKIE})


def request(method: str = "GET", path: str = "/api/items", **headers: str) -> CheckRequest:
    """A request with header names given as keyword arguments (underscores become dashes)."""
    return CheckRequest(method, path, {k.replace("_", "-"): v for k, v in headers.items()})


@pytest.fixture
def credential() -> SessionCredential:
    return SessionCredential.generate()


@pytest.fixture
def other_credential() -> SessionCredential:
    return SessionCredential.generate()


# ---- split_cookies -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "pairs"),
    [
        pytest.param("", [], id="empty"),
        pytest.param(";;, ;,", [], id="only-separators"),
        pytest.param("a=1", [("a", "1")], id="one-cookie"),
        pytest.param("a=1; b=2", [("a", "1"), ("b", "2")], id="semicolon-separated"),
        pytest.param("a=1;b=2", [("a", "1"), ("b", "2")], id="no-space-after-semicolon"),
        pytest.param("a=1, b=2", [("a", "1"), ("b", "2")], id="comma-joined-by-envoy"),
        pytest.param('a="quoted"', [("a", "quoted")], id="quoted-value-unquoted"),
        pytest.param("a=x=y", [("a", "x=y")], id="equals-inside-value"),
        pytest.param("a=", [("a", "")], id="empty-value"),
        pytest.param("=orphan; novalue; a=1", [("a", "1")], id="nameless-and-valueless-skipped"),
        pytest.param("  a  =  1  ", [("a", "1")], id="whitespace-trimmed"),
        pytest.param("a=1; a=2", [("a", "1"), ("a", "2")], id="repeated-name-kept-twice"),
        pytest.param("naïve=café", [("naïve", "café")], id="unicode"),
    ],
)
def test_split_cookies_reads_name_value_pairs(header: str, pairs: list[tuple[str, str]]) -> None:
    assert split_cookies(header) == pairs


def test_split_cookies_handles_a_very_long_header() -> None:
    header = "; ".join(f"c{i}=v{i}" for i in range(5000))
    pairs = split_cookies(header)
    assert len(pairs) == 5000
    assert pairs[-1] == ("c4999", "v4999")


# ---- cookie_header_without -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param("theme=dark; gw_session=abc; lang=en", "theme=dark; lang=en", id="middle"),
        pytest.param("gw_session=abc; theme=dark", "theme=dark", id="first"),
        pytest.param("theme=dark; gw_session=abc", "theme=dark", id="last"),
        pytest.param("gw_session=abc", "", id="only-the-session-cookie"),
        pytest.param("gw_session=a; gw_session=b", "", id="every-copy"),
        pytest.param("theme=dark, gw_session=abc", "theme=dark", id="comma-joined"),
        pytest.param("gw_session", "", id="bare-name-without-value"),
        pytest.param("theme=dark; lang=en", "theme=dark; lang=en", id="nothing-to-remove"),
        pytest.param("b=2; a=1; c=3", "b=2; a=1; c=3", id="order-kept"),
        pytest.param(" ;; , ", "", id="only-separators"),
        pytest.param(
            "gw_session_extra=1; x_gw_session=2",
            "gw_session_extra=1; x_gw_session=2",
            id="similar-names-kept",
        ),
    ],
)
def test_cookie_header_without_removes_only_the_named_cookies(header: str, expected: str) -> None:
    assert cookie_header_without(header, COOKIE_NAMES) == expected


def test_cookie_header_without_removes_every_spelling_it_is_given() -> None:
    header = "__Host-gw_session=a; gw_session=b; theme=dark"
    names = frozenset({"__Host-gw_session", "gw_session"})
    assert cookie_header_without(header, names) == "theme=dark"


# ---- read_credential -----------------------------------------------------------------------


def read(req: CheckRequest) -> PresentedCredential | None:
    return read_credential(req, COOKIE_NAMES)


def test_no_cookie_and_no_authorization_is_no_credential() -> None:
    assert read(request()) is None


@pytest.mark.parametrize(
    "cookie",
    [
        pytest.param("theme=dark", id="other-cookies-only"),
        pytest.param(";;,", id="only-separators"),
        pytest.param("gw_session_old=gws_x", id="similar-name"),
    ],
)
def test_a_cookie_header_without_the_session_cookie_is_no_credential(cookie: str) -> None:
    assert read(request(cookie=cookie)) is None


def test_the_session_cookie_is_read_from_among_other_cookies(
    credential: SessionCredential,
) -> None:
    presented = read(request(cookie=f"theme=dark; {SESSION_COOKIE}={credential.encode()}; a=b"))
    assert presented is not None
    assert presented.credential == credential
    assert presented.source is CredentialSource.COOKIE


def test_a_quoted_session_cookie_is_read(credential: SessionCredential) -> None:
    presented = read(request(cookie=f'{SESSION_COOKIE}="{credential.encode()}"'))
    assert presented is not None and presented.credential == credential


def test_the_same_session_cookie_sent_twice_is_one_credential(
    credential: SessionCredential,
) -> None:
    cookie = f"{SESSION_COOKIE}={credential.encode()}, {SESSION_COOKIE}={credential.encode()}"
    presented = read(request(cookie=cookie))
    assert presented is not None and presented.credential == credential


def test_two_different_session_cookies_are_both_candidates_first_sent_first(
    credential: SessionCredential, other_credential: SessionCredential
) -> None:
    cookie = f"{SESSION_COOKIE}={credential.encode()}; {SESSION_COOKIE}={other_credential.encode()}"
    presented = read(request(cookie=cookie))
    assert presented is not None
    assert presented.candidates == (credential, other_credential)


def test_a_garbled_session_cookie_next_to_a_good_one_is_passed_over(
    credential: SessionCredential,
) -> None:
    presented = read(
        request(cookie=f"{SESSION_COOKIE}=planted; {SESSION_COOKIE}={credential.encode()}")
    )
    assert presented is not None and presented.candidates == (credential,)


def test_the_number_of_candidates_is_bounded() -> None:
    many = [SessionCredential.generate() for _ in range(MAX_SESSION_COOKIES + 3)]
    presented = read(request(cookie="; ".join(f"{SESSION_COOKIE}={c.encode()}" for c in many)))
    assert presented is not None
    assert presented.candidates == tuple(many[:MAX_SESSION_COOKIES])


def test_thousands_of_cookies_of_our_name_cost_only_the_first_few_parses(
    credential: SessionCredential, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[str] = []
    real_parse = SessionCredential.parse.__func__  # type: ignore[attr-defined]

    def counting(cls: type[SessionCredential], text: str) -> SessionCredential:
        parsed.append(text)
        return real_parse(cls, text)  # type: ignore[no-any-return]

    monkeypatch.setattr(SessionCredential, "parse", classmethod(counting))
    junk = "; ".join(f"{SESSION_COOKIE}=junk{i}" for i in range(3000))
    hidden = f"{junk}; {SESSION_COOKIE}={credential.encode()}"
    with pytest.raises(CredentialError):
        read(request(cookie=hidden))
    assert len(parsed) == MAX_SESSION_VALUES
    early = f"{SESSION_COOKIE}=junk; {SESSION_COOKIE}={credential.encode()}; {junk}"
    presented = read(request(cookie=early))
    assert presented is not None and presented.credential == credential


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param("garbage", id="garbage"),
        pytest.param("gws_" + "A" * 87, id="no-dot"),
        pytest.param("gws_tооlong" * 20, id="unicode-lookalikes"),
    ],
)
def test_a_garbled_session_cookie_is_refused(value: str) -> None:
    with pytest.raises(CredentialError):
        read(request(cookie=f"{SESSION_COOKIE}={value}"))


@pytest.mark.parametrize("kilobytes", [9, 30, 60])
def test_a_session_cookie_is_read_from_a_cookie_header_of_any_size_envoy_accepts(
    credential: SessionCredential, kilobytes: int
) -> None:
    padding = "; ".join(f"c{i}={'x' * 1000}" for i in range(kilobytes))
    for cookie in (
        f"{padding}; {SESSION_COOKIE}={credential.encode()}",
        f"{SESSION_COOKIE}={credential.encode()}; {padding}",
    ):
        presented = read(request(cookie=cookie))
        assert presented is not None and presented.credential == credential


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_a_bearer_gateway_token_is_read_whatever_the_scheme_case(
    scheme: str, credential: SessionCredential
) -> None:
    presented = read(request(authorization=f"{scheme} {credential.encode()}"))
    assert presented is not None
    assert presented.credential == credential
    assert presented.source is CredentialSource.BEARER


def test_a_bearer_gateway_token_wins_over_the_session_cookie(
    credential: SessionCredential, other_credential: SessionCredential
) -> None:
    presented = read(
        request(
            authorization=f"Bearer {credential.encode()}",
            cookie=f"{SESSION_COOKIE}={other_credential.encode()}",
        )
    )
    assert presented is not None
    assert presented.credential == credential
    assert presented.source is CredentialSource.BEARER


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param("Bearer eyJhbGciOiJSUzI1NiJ9.e30.sig", id="foreign-bearer-jwt"),
        pytest.param("Basic dXNlcjpwYXNz", id="basic"),
        pytest.param("token gws_looks-like-ours", id="other-scheme-with-our-prefix"),
        pytest.param("Bearer", id="scheme-only"),
        pytest.param("", id="empty"),
    ],
)
def test_other_authorization_values_are_not_credentials_and_the_cookie_is_used(
    authorization: str, credential: SessionCredential
) -> None:
    assert read(request(authorization=authorization)) is None
    presented = read(
        request(authorization=authorization, cookie=f"{SESSION_COOKIE}={credential.encode()}")
    )
    assert presented is not None and presented.source is CredentialSource.COOKIE


def test_a_malformed_bearer_gateway_token_is_refused() -> None:
    with pytest.raises(CredentialError):
        read(request(authorization="Bearer gws_not-a-real-credential"))


# ---- is_preflight --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "headers", "expected"),
    [
        pytest.param(
            "OPTIONS",
            {"origin": "https://app.example", "access-control-request-method": "POST"},
            True,
            id="options-origin-and-request-method",
        ),
        pytest.param(
            "OPTIONS", {"origin": "https://app.example"}, False, id="options-without-request-method"
        ),
        pytest.param(
            "OPTIONS", {"access-control-request-method": "POST"}, False, id="options-without-origin"
        ),
        pytest.param("OPTIONS", {}, False, id="bare-options"),
        pytest.param(
            "OPTIONS",
            {"origin": "", "access-control-request-method": ""},
            False,
            id="empty-headers",
        ),
        pytest.param(
            "GET",
            {"origin": "https://app.example", "access-control-request-method": "POST"},
            False,
            id="get-with-preflight-headers",
        ),
        pytest.param(
            "options",
            {"origin": "https://app.example", "access-control-request-method": "POST"},
            False,
            id="lower-case-method-is-another-method",
        ),
    ],
)
def test_only_options_with_origin_and_request_method_is_a_preflight(
    method: str, headers: dict[str, str], expected: bool
) -> None:
    assert is_preflight(CheckRequest(method, "/api/x", headers)) is expected


# ---- is_browser_navigation -----------------------------------------------------------------

HTML = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.mark.parametrize(
    ("method", "headers", "expected"),
    [
        pytest.param("GET", {"accept": HTML}, True, id="page-load"),
        pytest.param("HEAD", {"accept": HTML}, True, id="head-page-load"),
        pytest.param("GET", {"accept": "TEXT/HTML"}, True, id="accept-case-insensitive"),
        pytest.param(
            "GET", {"accept": HTML, "sec-fetch-mode": "navigate"}, True, id="sec-fetch-navigate"
        ),
        pytest.param("GET", {"accept": HTML, "sec-fetch-mode": "cors"}, False, id="fetch-cors"),
        pytest.param(
            "GET", {"accept": HTML, "sec-fetch-mode": "no-cors"}, False, id="fetch-no-cors"
        ),
        pytest.param(
            "GET", {"accept": HTML, "x-requested-with": "XMLHttpRequest"}, False, id="xhr"
        ),
        pytest.param("GET", {"accept": "application/json"}, False, id="api-client"),
        pytest.param("GET", {}, False, id="no-accept"),
        pytest.param("POST", {"accept": HTML}, False, id="form-post"),
        pytest.param("DELETE", {"accept": HTML}, False, id="delete"),
    ],
)
def test_only_get_or_head_accepting_html_and_not_fetch_or_xhr_is_a_page_load(
    method: str, headers: dict[str, str], expected: bool
) -> None:
    assert is_browser_navigation(CheckRequest(method, "/api/x", headers)) is expected


# ---- request_origin ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({}, None, id="neither-header"),
        pytest.param({"origin": "https://app.example"}, "https://app.example", id="origin"),
        pytest.param(
            {"origin": "HTTPS://App.Example:8443"},
            "https://app.example:8443",
            id="origin-lower-cased",
        ),
        pytest.param(
            {"origin": "  https://app.example  "}, "https://app.example", id="origin-trimmed"
        ),
        pytest.param({"origin": "null"}, "null", id="opaque-origin"),
        pytest.param(
            {"origin": "https://app.example", "referer": "https://other.example/x"},
            "https://app.example",
            id="origin-wins-over-referer",
        ),
        pytest.param(
            {"referer": "https://app.example/page?q=1#f"},
            "https://app.example",
            id="referer-reduced-to-origin",
        ),
        pytest.param(
            {"referer": "HTTPS://APP.example:444/x"},
            "https://app.example:444",
            id="referer-lower-cased",
        ),
        pytest.param({"referer": "/relative/path"}, "invalid", id="relative-referer"),
        pytest.param({"referer": "not a url"}, "invalid", id="garbage-referer"),
        pytest.param({"referer": "http://[::1"}, "invalid", id="unparseable-referer"),
        pytest.param({"origin": "", "referer": ""}, None, id="empty-headers"),
        pytest.param({"origin": "   "}, None, id="blank-origin"),
    ],
)
def test_the_origin_is_origin_else_the_referers_origin_else_none(
    headers: dict[str, str], expected: str | None
) -> None:
    assert request_origin(CheckRequest("POST", "/api/x", headers)) == expected


def test_a_backend_cookie_holding_a_comma_survives_the_session_cookie_removal() -> None:
    names = frozenset({"gw_session"})
    assert cookie_header_without("prefs=a,b; gw_session=x", names) == "prefs=a,b"
    assert (
        cookie_header_without("theme=dark, gw_session=x, lang=en", names) == "theme=dark, lang=en"
    )
