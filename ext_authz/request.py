"""What the decision core reads from a request, and the pure helpers that parse it.

These take hostile input: every parser returns a clear result or raises
:class:`CredentialError`, never anything else.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

# The decision core, its tests and tools take these from here, next to CheckRequest.
from gateway import contract
from gateway.sessions.credentials import (
    CredentialSource as CredentialSource,
)
from gateway.sessions.credentials import (
    PresentedCredential,
    bearer_text,
    read_presented,
)
from gateway.sessions.credentials import (
    split_cookies as split_cookies,
)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class CheckRequest:
    """A request as Envoy described it; header names are lower-case. Our own Envoy sends
    only ``contract.FORWARDED_REQUEST_HEADERS`` (a mesh's may send more), and nothing here
    reads any other."""

    method: str
    path: str  # includes the query string
    headers: Mapping[str, str]
    route_name: str | None = None  # gRPC mode: context_extensions[contract.ROUTE_KEY]

    def header(self, name: str) -> str:
        return self.headers.get(name, "")

    @property
    def path_only(self) -> str:
        return self.path.split("?", 1)[0]


def cookie_header_without(cookie_header: str, names: frozenset[str]) -> str:
    """The Cookie header with the named cookies removed; everything else stays as it was.

    Only ``name=value`` pairs with our names are dropped. A chunk that Envoy joined from
    several Cookie headers with commas is split on its commas, but the pieces that stay are
    joined back with commas, so a backend cookie whose value holds a comma survives.
    """
    kept = []
    for chunk in cookie_header.split(";"):
        # A piece with control characters could never be a valid cookie; never pass it on.
        pieces = [
            piece
            for piece in chunk.split(",")
            if piece.strip() and not _is_named(piece, names) and not _CONTROL.search(piece)
        ]
        if pieces:
            kept.append(",".join(pieces).strip())
    return "; ".join(kept)


def _is_named(piece: str, names: frozenset[str]) -> bool:
    return piece.partition("=")[0].strip() in names


def read_credential(
    request: CheckRequest, cookie_names: frozenset[str]
) -> PresentedCredential | None:
    """The session credential the request carries (the rule is the shared one of
    :func:`gateway.sessions.credentials.read_presented`); raises :class:`CredentialError`
    for one that is present but unusable."""
    return read_presented(
        request.header(contract.AUTHORIZATION),
        request.header(contract.COOKIE),
        cookie_names,
    )


def bearer_credential_text(request: CheckRequest) -> str | None:
    """The gateway token in the Authorization header, unparsed (see ``bearer_text``)."""
    return bearer_text(request.header(contract.AUTHORIZATION))


def is_preflight(request: CheckRequest) -> bool:
    """A CORS preflight: browsers send it without credentials, so it cannot be authenticated."""
    return (
        request.method == "OPTIONS"
        and bool(request.header(contract.ORIGIN))
        and bool(request.header(contract.ACCESS_CONTROL_REQUEST_METHOD))
    )


def is_websocket_upgrade(request: CheckRequest) -> bool:
    return "websocket" in request.header(contract.UPGRADE).lower()


def is_browser_navigation(request: CheckRequest) -> bool:
    """A page load the browser will follow a redirect for (not an XHR/fetch or API call)."""
    if request.method not in ("GET", "HEAD"):
        return False
    if request.header(contract.X_REQUESTED_WITH).lower() == "xmlhttprequest":
        return False
    fetch_mode = request.header(contract.SEC_FETCH_MODE).lower()
    if fetch_mode and fetch_mode != "navigate":
        return False
    return "text/html" in request.header(contract.ACCEPT).lower()


def request_origin(request: CheckRequest) -> str | None:
    """The origin that sent the request: Origin, else the Referer's origin, else None."""
    origin = request.header(contract.ORIGIN).strip().lower()
    if origin:
        return origin
    referer = request.header(contract.REFERER).strip()
    if referer:
        try:
            parts = urlsplit(referer)
        except ValueError:
            return "invalid"
        if parts.scheme and parts.netloc:
            return f"{parts.scheme}://{parts.netloc}".lower()
        return "invalid"
    return None
