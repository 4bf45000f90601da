"""Whether a provider run_stack did not start answers: reported, never claimed.

An OIDC provider answers when its discovery document is served and names the configured
issuer; a plain OAuth2 provider when each configured endpoint answers HTTP at all (an
authorization or token endpoint asked a bare GET rightly answers 400, 401 or 405; only no
answer, 404 or a server error are reported).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import requests

from gateway.config import Provider

TIMEOUT_SECONDS = 5.0
ENDPOINTS = ("authorize_url", "token_url", "userinfo_url", "revocation_url")


@dataclass(frozen=True)
class ProviderReport:
    provider_id: str
    answers: bool
    detail: str


def discovery_url(issuer: str) -> str:
    """OIDC Discovery 1.0 §4: a terminating "/" is removed before the well-known suffix."""
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


def check_provider(provider: Provider, timeout: float = TIMEOUT_SECONDS) -> ProviderReport:
    """Ask the provider, once, whether it is there."""
    if provider.kind == "oidc":
        url = discovery_url(provider.issuer or "")
        problem = _discovery_problem(url, provider.issuer or "", timeout)
        detail = f"discovery answers at {url}"
    else:
        urls = [getattr(provider, name) for name in ENDPOINTS if getattr(provider, name)]
        problem = next(filter(None, (_endpoint_problem(url, timeout) for url in urls)), None)
        detail = "its endpoints answer: " + ", ".join(urls)
    return ProviderReport(provider.id, problem is None, problem or detail)


def _discovery_problem(url: str, issuer: str, timeout: float) -> str | None:
    try:
        reply = requests.get(url, timeout=timeout, headers={"Accept": "application/json"})
    except requests.RequestException as exc:
        return f"{url} does not answer: {_reason(exc)}"
    if reply.status_code != 200:
        return f"{url} answers {reply.status_code}"
    try:
        named = reply.json().get("issuer")
    except (ValueError, AttributeError):
        return f"{url} is not a discovery document (no JSON object)"
    if named != issuer:
        return f"{url} names issuer {named!r}, not the configured {issuer!r}"
    return None


def _endpoint_problem(url: str, timeout: float) -> str | None:
    try:
        reply = requests.get(url, timeout=timeout, allow_redirects=False)
    except requests.RequestException as exc:
        return f"{url} does not answer: {_reason(exc)}"
    if reply.status_code == 404 or reply.status_code >= 500:
        return f"{url} answers {reply.status_code}"
    return None


def _reason(exc: requests.RequestException) -> str:
    # requests nests the socket error deep in a long message; the errno text is the news.
    found = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(exc))
    return found.group(1).strip() if found else type(exc).__name__
