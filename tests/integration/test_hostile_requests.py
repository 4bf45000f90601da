"""Hostile requests through a real Envoy: path tricks, header injection, duplicate and oversized
headers, request smuggling, absolute-form targets and Host games.

Each request goes out as raw bytes: ``requests`` and ``http.client`` normalise URLs and refuse
bad headers, which would hide exactly what is tested here. Whatever Envoy makes of a request,
every reply must be either a refusal (4xx/5xx, or the connection closed without one) or the
echo backend's answer carrying exactly the token of the route its echoed path is on, and never
the session cookie. A 200 from a protected route needs a valid session; a redirect or login URL
always points at the public origin, whatever the Host header said.

``expect`` pins what Envoy (with the bootstrap we render) does today, so a change in its
normalisation shows up here even when the outcome is still safe.
"""

from __future__ import annotations

import base64
import json
import socket
from dataclasses import dataclass
from typing import BinaryIO, Literal
from urllib.parse import urlsplit

import pytest

from ext_authz.decision import encode_identity_value, format_token
from ext_authz.request import split_cookies
from gateway.config import GatewayConfig, Route
from gateway.sessions.credentials import SessionCredential
from gateway.sessions.model import Identity
from tests.support.stack import Stack

pytestmark = pytest.mark.integration

PRIMARY_TOKEN = "primary-access-token-hostile"
GITLAB_TOKEN = "glpat-gitlab-token-hostile"
TOKENS = {"primary": PRIMARY_TOKEN, "gitlab": GITLAB_TOKEN}
USER = Identity(subject="alice", email="alice@example.org", name="Alice Ärger")
# Spoofed values a client sends; none may ever reach the backend.
SPOOFED = "admin-spoofed"
# The path marker of a request hidden inside another one; it must never come out authenticated.
SMUGGLED = "smuggled"

# refused: an error, a redirect to log in or no reply; reached: the echo backend answered 200.
Expect = Literal["refused", "reached", "either"]


@dataclass(frozen=True)
class Hostile:
    id: str
    raw: str  # {host}, {origin}, {session} (name=credential), {credential}: filled in per run
    expect: Expect = "either"
    replies: int = 1  # how many replies to read (pipelined requests)


def request(
    target: str,
    *headers: str,
    method: str = "GET",
    version: str = "HTTP/1.1",
    host: str | None = "{host}",
    body: str = "",
    close: bool = True,
) -> str:
    """One request as the raw text a client writes; headers are sent exactly as given."""
    lines = [f"{method} {target} {version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += ["Accept: application/json", *headers]
    if close:
        lines.append("Connection: close")
    return "\r\n".join(lines) + "\r\n\r\n" + body


COOKIE = "Cookie: {session}"


# ---- talking to Envoy over a raw socket -------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    body: bytes

    def echoed(self) -> dict[str, object] | None:
        """The echo backend's account of the request it received, None for any other body."""
        try:
            echoed = json.loads(self.body)
        except ValueError:
            return None
        return echoed if isinstance(echoed, dict) and "headers" in echoed else None


def _read_reply(reader: BinaryIO) -> Reply | None:
    status_line = reader.readline()
    if not status_line:
        return None
    status = int(status_line.split(b" ", 2)[1])
    headers: dict[str, str] = {}
    while (line := reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = reader.read(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while size := int(reader.readline().split(b";")[0], 16):
            body += reader.read(size)
            reader.readline()
        reader.readline()
    else:
        body = reader.read()
    return Reply(status, headers, body)


def exchange(stack: Stack, raw: bytes, replies: int = 1) -> list[Reply]:
    """Send ``raw`` on a fresh connection and read up to ``replies`` replies."""
    received: list[Reply] = []
    with socket.create_connection(("127.0.0.1", stack.envoy.port), timeout=5) as sock:
        try:
            sock.sendall(raw)
        except OSError:
            pass  # Envoy may answer (431, 400) and close before reading an oversized request
        reader = sock.makefile("rb")
        try:
            while len(received) < replies and (reply := _read_reply(reader)) is not None:
                received.append(reply)
        except ConnectionResetError:
            pass  # closed without (another) reply: a refusal
        except TimeoutError:
            if not received:
                raise  # Envoy hung on the request: neither an answer nor a refusal
    return received


# ---- what every reply must satisfy ------------------------------------------------------------


def route_of(config: GatewayConfig, path: str) -> Route | None:
    path_only = path.split("?", 1)[0]
    for route in sorted(config.routes, key=lambda r: len(r.prefix), reverse=True):
        if route.matches(path_only):
            return route
    return None


def token_forms(token: str) -> tuple[str, ...]:
    """The token as any format may carry it (git's Basic form hides it in base64)."""
    return (token, base64.b64encode(f"oauth2:{token}".encode()).decode())


def assert_on_public_origin(config: GatewayConfig, url: str) -> None:
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == config.public_origin, url


def assert_reply_is_safe(stack: Stack, reply: Reply, credential: str) -> None:
    config = stack.config
    if "location" in reply.headers:
        assert_on_public_origin(config, reply.headers["location"])
    if reply.status >= 300:
        echoed_refusal = reply.echoed()
        assert echoed_refusal is None, "a refusal must come from the gateway, not the backend"
        if reply.body.startswith(b"{") and b"login_url" in reply.body:
            assert_on_public_origin(config, json.loads(reply.body)["login_url"])
        return
    assert reply.status == 200, reply
    echoed = reply.echoed()
    assert echoed is not None, f"a 200 that is not the echo backend's: {reply.body[:200]!r}"
    path, method = str(echoed["path"]), str(echoed["method"])
    headers: dict[str, list[str]] = echoed["headers"]  # type: ignore[assignment]
    route = route_of(config, path)
    assert route is not None, f"the backend saw {path!r}, which no route covers"

    # Never the session cookie, under either spelling, nor the credential in another header.
    session_cookies = {config.cookie_name, config.session.cookie_name}
    for cookie_header in headers.get("cookie", []):
        for name, value in split_cookies(cookie_header):
            assert name not in session_cookies and value != credential, cookie_header
    for name, values in headers.items():
        if name != "cookie":
            assert not any(credential in value for value in values), name

    # Exactly the route's token: in its header and format, and no other provider's anywhere.
    expected: dict[str, list[str]] = {}
    if route.provider is not None and not route.public:
        token = format_token(route.token_format, TOKENS[route.provider])
        expected[route.token_format.header_name] = [token]
    everything = json.dumps(headers)
    for provider, token in TOKENS.items():
        if provider != route.provider or route.public:
            assert not any(form in everything for form in token_forms(token)), provider
    for header in ("authorization", "private-token"):
        assert headers.get(header) in (None, expected.get(header)), (header, headers.get(header))
    preflight = method == "OPTIONS"
    if not route.public and not route.anonymous and not preflight:
        # A protected route answered 200: only with a valid session and its token.
        assert expected and all(headers.get(h) == v for h, v in expected.items()), headers

    # Identity headers are ours or absent, never what the client sent.
    ours = (USER.subject, USER.email, USER.name)
    for header, value in zip(config.identity_headers.names(), ours, strict=True):
        assert headers.get(header) in (None, [encode_identity_value(value)]), header
    for header in config.managed_headers():
        assert not any(SPOOFED in value for value in headers.get(header, [])), header


@pytest.fixture(scope="module")
def credential(gateway: Stack) -> SessionCredential:
    return gateway.create_session(
        USER.subject, tokens=dict(TOKENS), email=USER.email, name=USER.name
    )


def run_case(stack: Stack, credential: SessionCredential, case: Hostile) -> list[Reply]:
    encoded = credential.encode()
    raw = (
        case.raw.replace("{host}", f"127.0.0.1:{stack.envoy.port}")
        .replace("{session}", f"{stack.cookie_name}={encoded}")
        .replace("{credential}", encoded)
        .replace("{origin}", stack.config.public_origin)
    )
    replies = exchange(stack, raw.encode("utf-8"), case.replies)
    for reply in replies:
        assert_reply_is_safe(stack, reply, encoded)
    if case.expect == "refused":  # an error, a redirect to log in, or no reply at all
        assert all(reply.status >= 300 for reply in replies), [r.status for r in replies]
    elif case.expect == "reached":
        assert replies and replies[0].status == 200 and replies[0].echoed(), replies
    return replies


def cases(*table: Hostile) -> list[object]:
    return [pytest.param(case, id=case.id) for case in table]


# ---- paths -----------------------------------------------------------------------------------

# (id, raw path, outcome with the session, outcome without it)
PATHS: list[tuple[str, str, Expect, Expect]] = [
    ("dotdot-from-public-into-gitlab", "/status/../gitlab/x", "reached", "refused"),
    ("dotdot-from-api-into-gitlab", "/api/../gitlab/x", "reached", "refused"),
    ("encoded-dotdot-from-anonymous-into-gitlab", "/catalog/%2e%2e/gitlab/x", "reached", "refused"),
    ("upper-encoded-dotdot", "/catalog/%2E%2E/gitlab/x", "reached", "refused"),
    ("half-encoded-dotdot", "/catalog/.%2e/gitlab/x", "reached", "refused"),
    ("too-many-dotdots", "/catalog/../../../gitlab/x", "reached", "refused"),
    ("dotdot-out-of-the-login-app", "/auth/../gitlab/x", "reached", "refused"),
    ("dotdot-from-a-non-segment-prefix", "/statusx/../gitlab/x", "reached", "refused"),
    ("encoded-dotdot-and-slash", "/api/%2e%2e%2fgitlab/x", "refused", "refused"),
    ("encoded-slash-after-prefix", "/api%2fgitlab/x", "refused", "refused"),
    ("encoded-slash-in-segment", "/gitlab/group%2Fproject", "refused", "refused"),
    ("encoded-slash-dotdots", "/catalog/..%2f..%2fgitlab/x", "refused", "refused"),
    ("leading-double-slash", "//gitlab/x", "reached", "refused"),
    ("double-slashes-around-dotdot", "/api//..//gitlab", "reached", "refused"),
    ("backslash-dotdot", "/api\\..\\gitlab\\x", "reached", "refused"),
    ("encoded-backslash-dotdot", "/api/%5c..%5cgitlab/x", "refused", "refused"),
    ("encoded-dotdot-backslash", "/catalog/%2e%2e%5c/gitlab/x", "refused", "refused"),
    ("upper-case-route", "/GITLAB/x", "refused", "refused"),
    ("mixed-case-route", "/Api/x", "refused", "refused"),
    ("path-8kb", "/api/" + "a" * 8192, "reached", "refused"),
    ("path-70kb", "/api/" + "a" * 70_000, "refused", "refused"),
    ("path-param-dotdot", "/api/..;/gitlab/x", "reached", "refused"),
    ("path-param-on-public-prefix", "/status;/../gitlab/x", "reached", "refused"),
    ("path-param-on-route-prefix", "/gitlab;x=1/y", "refused", "refused"),
    ("encoded-nul", "/api/x%00", "refused", "refused"),
    ("encoded-nul-before-dotdot", "/catalog%00/../gitlab/x", "refused", "refused"),
    ("encoded-nul-after-dotdot", "/catalog/..%00/gitlab/x", "refused", "refused"),
    ("fragment", "/api/x#frag", "refused", "refused"),
    ("fragment-hiding-dotdot", "/status#/../gitlab/x", "refused", "refused"),
    ("space-in-dotdot", "/catalog/.. /gitlab/x", "refused", "refused"),
    ("fullwidth-dots", "/catalog/\uff0e\uff0e/gitlab/x", "refused", "refused"),
    ("query-with-dotdots", "/gitlab/x?x=/../../api/", "reached", "refused"),
    ("encoded-question-mark-then-dotdots", "/gitlab/x%3f/../../api/y", "reached", "refused"),
    ("relative-target", "gitlab/x", "refused", "refused"),
    ("asterisk-target", "*", "refused", "refused"),
]
# Paths that stay on the public route: sent without the session (see the cookie test below).
PUBLIC_PATHS: list[tuple[str, str]] = [
    ("double-encoded-dotdot", "/status/%252e%252e/gitlab/x"),
    ("overlong-utf8-dots", "/status/%c0%ae%c0%ae/gitlab/x"),
    ("encoded-tab-after-dotdot", "/status/..%09/gitlab/x"),
    ("public-prefix-with-trailing-slash", "/status/"),
]


def _path_cases() -> list[Hostile]:
    table = []
    for case_id, path, with_session, without in PATHS:
        table.append(Hostile(f"{case_id}-with-session", request(path, COOKIE), with_session))
        table.append(Hostile(f"{case_id}-without-session", request(path), without))
    table += [Hostile(case_id, request(path), "reached") for case_id, path in PUBLIC_PATHS]
    return table


@pytest.mark.parametrize("case", cases(*_path_cases()))
def test_path_tricks_never_cross_routes_with_a_token(gateway, credential, case):
    run_case(gateway, credential, case)


def test_dotdot_into_another_route_gets_that_routes_token(gateway, credential):
    reply = run_case(
        gateway, credential, Hostile("api-to-gitlab", request("/api/../gitlab/x", COOKIE))
    )
    echoed = reply[0].echoed()
    assert echoed is not None and echoed["path"] == "/gitlab/x"
    assert echoed["headers"]["private-token"] == [GITLAB_TOKEN]  # type: ignore[index]


@pytest.mark.parametrize(
    "case",
    cases(
        Hostile("public-route-with-session-cookie", request("/status", COOKIE), "reached"),
        Hostile("public-route-double-encoded", request("/status/%252e%252e/gitlab/x", COOKIE)),
    ),
)
def test_a_public_route_never_sees_the_session_cookie(gateway, credential, case):
    run_case(gateway, credential, case)


# ---- header injection -------------------------------------------------------------------------

HEADER_INJECTION = cases(
    # Envoy deletes a bare CR inside a value: one header "aX-Gateway-User-Id: ...", no injection.
    Hostile("bare-cr-in-value", request("/catalog/x", f"X-Foo: a\rX-Gateway-User-Id: {SPOOFED}"),
            "reached"),
    Hostile("bare-cr-before-cookie", request("/api/x", "X-Foo: a\r" + COOKIE), "refused"),
    Hostile("bare-cr-inside-cookie", request("/catalog/x", "Cookie: a=1\r{session}"), "reached"),
    # A bare LF ends the header line, for Envoy and for the backend alike.
    Hostile("bare-lf-in-value", request("/catalog/x", f"X-Foo: a\nX-Gateway-User-Id: {SPOOFED}"),
            "reached"),
    Hostile("bare-lf-before-cookie", request("/api/x", "X-Foo: a\n" + COOKIE), "reached"),
    Hostile("bare-lf-fold-in-cookie", request("/catalog/x", "Cookie: a=1\n {session}"), "reached"),
    Hostile("bare-lf-line-endings",
            request("/catalog/x", f"X-Gateway-User-Id: {SPOOFED}").replace("\r\n", "\n"),
            "reached"),
    # Envoy accepts an obs-fold and keeps it as part of the header's value.
    Hostile("crlf-obs-fold", request("/catalog/x", f"X-Gateway-User-Id: {SPOOFED}\r\n\tmore"),
            "reached"),
    Hostile("nul-in-value", request("/catalog/x", f"X-Gateway-User-Id: a\x00{SPOOFED}"),
            "refused"),
    Hostile("nul-in-cookie", request("/catalog/x", "Cookie: a=\x00; {session}"), "refused"),
    Hostile("space-before-colon", request("/catalog/x", f"X-Gateway-User-Id : {SPOOFED}"),
            "refused"),
    Hostile("underscore-spelling", request("/catalog/x", f"X_Gateway_User_Id: {SPOOFED}"),
            "refused"),
    Hostile("hop-by-hop-private-token",
            request("/gitlab/x", COOKIE, "Connection: close, Private-Token", close=False),
            "reached"),
    Hostile("hop-by-hop-cookie",
            request("/catalog/x", COOKIE, "Connection: close, Cookie", close=False), "reached"),
    Hostile("spoofed-envoy-headers",
            request("/catalog/x", "X-Envoy-Original-Path: /gitlab/x", "X-Envoy-Internal: true",
                    f"X-Gateway-User-Id: {SPOOFED}"), "reached"),
)  # fmt: skip


@pytest.mark.parametrize("case", HEADER_INJECTION)
def test_header_injection_never_smuggles_a_header_past_the_gateway(gateway, credential, case):
    run_case(gateway, credential, case)


# ---- duplicate and oversized headers ----------------------------------------------------------

DUPLICATES = cases(
    Hostile("two-cookie-headers-one-with-session",
            request("/gitlab/x", "Cookie: theme=dark", COOKIE), "reached"),
    # A garbled second session cookie (planted, or left by an old deploy) is passed over.
    Hostile("two-cookie-headers-two-sessions",
            request("/gitlab/x", COOKIE, "Cookie: {session}x"), "reached"),
    Hostile("two-session-cookies-on-anonymous-route",
            request("/catalog/x", COOKIE, "Cookie: gw_session=gws_other"), "reached"),
    Hostile("same-session-cookie-twice", request("/gitlab/x", COOKIE, COOKIE), "reached"),
    Hostile("quoted-and-spaced-session-cookie",
            request("/gitlab/x", 'Cookie: a=b;  gw_session = "{credential}" ;c=d'), "reached"),
    Hostile("odd-case-cookie-header-name", request("/gitlab/x", "cOoKiE: {session}"), "reached"),
    Hostile("two-authorization-headers",
            request("/gitlab/x", "Authorization: Bearer {credential}",
                    "Authorization: Bearer forged"), "refused"),
    Hostile("basic-then-bearer-authorization",
            request("/gitlab/x", "Authorization: Basic Zm9vOmJhcg==",
                    "Authorization: Bearer {credential}"), "refused"),
    Hostile("bearer-and-spoofed-private-token",
            request("/gitlab/x", "Authorization: Bearer {credential}",
                    f"Private-Token: {SPOOFED}"), "reached"),
    Hostile("two-user-id-headers-with-session",
            request("/api/x", COOKIE, f"X-Gateway-User-Id: {SPOOFED}",
                    f"X-Gateway-User-Id: {SPOOFED}2"), "reached"),
    Hostile("two-of-each-spoofed-header-anonymous",
            request("/catalog/x", f"X-Gateway-User-Id: {SPOOFED}", f"X-Gateway-User-Id: {SPOOFED}",
                    f"Private-Token: {SPOOFED}", f"Private-Token: {SPOOFED}",
                    f"Authorization: Bearer {SPOOFED}"), "reached"),
    Hostile("two-host-headers", request("/api/x", COOKIE, "Host: evil.example"), "reached"),
    # Other sites' cookies never cost the session, up to Envoy's header limit (60 KB).
    Hostile("cookie-10kb-protected",
            request("/api/x", "Cookie: big=" + "x" * 10_240 + "; {session}"), "reached"),
    Hostile("cookie-10kb-anonymous",
            request("/catalog/x", "Cookie: big=" + "x" * 10_240 + "; {session}"), "reached"),
    Hostile("cookie-100kb", request("/api/x", "Cookie: big=" + "x" * 102_400 + "; {session}"),
            "refused"),
    Hostile("fifty-cookie-headers", request("/gitlab/x", *["Cookie: a=b"] * 50, COOKIE),
            "reached"),
    # Envoy's limit of 100 headers per request: 431.
    Hostile("two-hundred-cookie-headers", request("/gitlab/x", *["Cookie: a=b"] * 200, COOKIE),
            "refused"),
)  # fmt: skip


@pytest.mark.parametrize("case", DUPLICATES)
def test_duplicate_and_oversized_headers_fail_closed(gateway, credential, case):
    run_case(gateway, credential, case)


# ---- request smuggling ------------------------------------------------------------------------

_HIDDEN = request(f"/gitlab/{SMUGGLED}")  # no session: must never come out with a token
_OPENER = ("Origin: {origin}", COOKIE)  # a cookie POST needs its own origin (CSRF guard)
SMUGGLING = cases(
    Hostile("te-and-cl",
            request("/catalog/x", *_OPENER, "Content-Length: 4", "Transfer-Encoding: chunked",
                    method="POST", body="0\r\n\r\n" + _HIDDEN, close=False), "refused", 2),
    Hostile("chunked-then-pipelined",
            request("/catalog/x", *_OPENER, "Transfer-Encoding: chunked", method="POST",
                    body="0\r\n\r\n", close=False) + _HIDDEN, "either", 2),
    Hostile("cl-zero-then-pipelined",
            request("/catalog/x", *_OPENER, "Content-Length: 0", method="POST", close=False)
            + _HIDDEN, "either", 2),
    Hostile("two-different-content-lengths",
            request("/catalog/x", *_OPENER, "Content-Length: 5", "Content-Length: 60",
                    method="POST", body=_HIDDEN, close=False), "refused", 2),
    Hostile("te-xchunked",
            request("/catalog/x", *_OPENER, "Transfer-Encoding: xchunked", method="POST",
                    body="0\r\n\r\n" + _HIDDEN, close=False), "refused", 2),
    Hostile("te-space-before-colon",
            request("/catalog/x", *_OPENER, "Transfer-Encoding : chunked", "Content-Length: 60",
                    method="POST", body="0\r\n\r\n" + _HIDDEN, close=False), "refused", 2),
    Hostile("te-chunked-then-identity",
            request("/catalog/x", *_OPENER, "Transfer-Encoding: chunked",
                    "Transfer-Encoding: identity", method="POST", body="0\r\n\r\n" + _HIDDEN,
                    close=False), "refused", 2),
    Hostile("get-with-a-body-holding-a-request",
            request("/catalog/x", COOKIE, f"Content-Length: {len(_HIDDEN) // 2}", body=_HIDDEN,
                    close=False), "either", 2),
)  # fmt: skip


@pytest.mark.parametrize("case", SMUGGLING)
def test_smuggled_requests_never_inherit_the_session(gateway, credential, case):
    for reply in run_case(gateway, credential, case):
        echoed = reply.echoed()
        if echoed is not None and SMUGGLED in str(echoed["path"]):
            pytest.fail(f"the hidden request reached the backend: {echoed}")


# ---- request targets, methods and Host --------------------------------------------------------

TARGETS_AND_HOSTS = cases(
    Hostile("absolute-form-foreign-host",
            request("http://evil.example/gitlab/x", COOKIE), "reached"),
    Hostile("absolute-form-dotdot-without-session",
            request("http://evil.example/status/../gitlab/x", host="evil.example"), "refused"),
    Hostile("absolute-form-https-on-http-listener",
            request("https://evil.example/jupyter/lab", COOKIE, host="evil.example"), "refused"),
    Hostile("foreign-host-browser-navigation",
            request("/jupyter/lab", "Accept: text/html", host="evil.example"), "refused"),
    Hostile("forwarded-host-browser-navigation",
            request("/jupyter/lab", "Accept: text/html", "X-Forwarded-Host: evil.example",
                    "X-Forwarded-Proto: https", "Forwarded: host=evil.example;proto=https"),
            "refused"),
    Hostile("missing-host", request("/api/x", COOKIE, host=None), "refused"),
    Hostile("host-with-a-path", request("/api/x", COOKIE, host="a/../gitlab"), "refused"),
    Hostile("host-with-userinfo", request("/api/x", COOKIE, host="gw@evil.example"), "either"),
    Hostile("http-1.0", request("/api/x", COOKIE, version="HTTP/1.0", host=None), "refused"),
    Hostile("http-0.9-style", "GET /status/../gitlab/x\r\n\r\n", "refused"),
    Hostile("connect", request("127.0.0.1:80", COOKIE, method="CONNECT"), "refused"),
    Hostile("lower-case-method", request("/gitlab/x", COOKIE, method="get"), "refused"),
    Hostile("unknown-method", request("/gitlab/x", COOKIE, method="PROPFIND"), "either"),
    Hostile("trace-with-session", request("/gitlab/x", COOKIE, method="TRACE"), "either"),
    Hostile("cors-preflight-with-session",
            request("/gitlab/x", COOKIE, "Origin: https://evil.example",
                    "Access-Control-Request-Method: DELETE", method="OPTIONS"), "reached"),
    Hostile("cross-site-post-with-session",
            request("/gitlab/x", COOKIE, "Origin: https://evil.example", "Content-Length: 0",
                    method="POST"), "refused"),
    Hostile("h2c-upgrade-on-public-route",
            request("/status", "Upgrade: h2c", "Connection: Upgrade, HTTP2-Settings",
                    "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA", close=False), "either"),
)  # fmt: skip


@pytest.mark.parametrize("case", TARGETS_AND_HOSTS)
def test_request_targets_and_host_games_stay_on_our_origin(gateway, credential, case):
    run_case(gateway, credential, case)
