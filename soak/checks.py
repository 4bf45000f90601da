"""What a response must look like, as plain functions returning a problem or None.

The echo backend answers with the request it received, so a 200 shows which credential the
gateway injected; these checks compare it with what Redis holds for the session.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import requests

from soak.pool import PROVIDERS, LiveSession

Headers = dict[str, list[str]]


@dataclass(frozen=True)
class TokenRoute:
    """A protected route of the soak config and how its backend receives the token."""

    name: str
    prefix: str
    provider: str
    header: str
    scheme: str  # what precedes the token in the header value
    identity_headers: bool


API = TokenRoute("api", "/api/", "primary", "authorization", "Bearer ", True)
GITLAB = TokenRoute("gitlab", "/gitlab/", "gitlab", "private-token", "", False)
CREDENTIAL_SHAPE = re.compile(r"gws_[A-Za-z0-9_-]{43}\.[A-Za-z0-9_-]{43}")
GATEWAY_HEADERS = ("authorization", "private-token", "x-gateway-user-id", "x-gateway-user-email")


def echoed_headers(response: requests.Response) -> Headers | None:
    """The headers the echo backend received, or None when the body is not its answer."""
    try:
        body = response.json()
    except ValueError:
        return None
    headers = body.get("headers") if isinstance(body, dict) else None
    return headers if isinstance(headers, dict) else None


def leak_problem(headers: Headers, cookie_name: str) -> str | None:
    """The session credential must never reach a backend, as cookie or anywhere else."""
    for name, values in headers.items():
        for value in values:
            if CREDENTIAL_SHAPE.search(value):
                return f"a session credential reached the backend in {name!r}"
            if name == "cookie" and f"{cookie_name}=" in value:
                return "the session cookie reached the backend"
    return None


def token_problem(
    route: TokenRoute,
    headers: Headers,
    live: LiveSession,
    current: set[str],
    requested_at: float,
) -> tuple[str | None, bool]:
    """(problem, previous_still_valid): the injected token must be the session's own.

    ``current`` holds the tokens stored just before and just after the request; a refresh
    between the two is fine either way. A token stored earlier that had not yet expired
    when the request was sent is accepted too (a worker answering from its cache in the
    instant before a refresh's invalidation reached it), and reported as such."""
    values = headers.get(route.header, [])
    if len(values) != 1:
        return f"{route.header}: expected one value, got {len(values)}", False
    value = values[0]
    if not value.startswith(route.scheme):
        return f"{route.header} does not start with {route.scheme!r}", False
    token = value[len(route.scheme) :]
    if token in current:
        return None, False
    expiry = live.seen_expiry(route.provider, token)
    if expiry is not None and (expiry == 0 or expiry > requested_at):
        return None, True
    for other in PROVIDERS:
        if other != route.provider and live.seen_expiry(other, token) is not None:
            return f"{route.name} got the {other} token", False
    if expiry is not None:
        return f"{route.name} got an expired token of this session ({token[:6]}…)", False
    return f"{route.name} got a token never stored for this session ({token[:6]}…)", False


def identity_problem(headers: Headers, subject: str) -> str | None:
    values = headers.get("x-gateway-user-id", [])
    if [unquote(v) for v in values] != [subject]:
        return f"x-gateway-user-id {values!r}, expected [{subject!r}]"
    return None


def anonymous_problem(headers: Headers) -> str | None:
    """An anonymous request reaches the backend with no token and no identity."""
    present = [name for name in GATEWAY_HEADERS if name in headers]
    return f"anonymous request carried {present}" if present else None


def denial_problem(response: requests.Response) -> str | None:
    """A 401 for an API client is JSON naming the error and where to log in."""
    if not response.headers.get("content-type", "").startswith("application/json"):
        return f"content-type {response.headers.get('content-type')!r}"
    try:
        body = response.json()
    except ValueError:
        return "body is not JSON"
    if not isinstance(body, dict) or not body.get("error") or not body.get("login_url"):
        return "JSON lacks error or login_url"
    return None


def login_redirect_problem(response: requests.Response) -> str | None:
    """A browser page load without a session is sent to the login app."""
    location = urlsplit(response.headers.get("location", ""))
    if not location.path.startswith("/auth/login"):
        return f"redirected to {response.headers.get('location')!r}"
    return None
