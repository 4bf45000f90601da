"""Is a provider up? Asked before a login sends the browser to an optional or on-demand one.

A browser sent to a provider that is down sees its own connection error and the login never
comes back, so for those providers the login app looks first. It asks the token endpoint: the
login app must reach it to finish the login anyway (the authorization endpoint is the
browser's, and may not be reachable from here). Any HTTP answer but 502, 503 or 504 counts as
up (token endpoints refuse a GET in many ways); no connection, a timeout or a gateway error
counts as down. Nothing is cached: logins are rare next to checks, and a provider that comes
back is used at once.
"""

from __future__ import annotations

import logging

import requests

from gateway.errors import ProviderFailure
from gateway.providers.client import ProviderClient

logger = logging.getLogger(__name__)

PROBE_TIMEOUT = (1.0, 2.0)  # connect, read: a person waits for this
_DOWN_STATUSES = frozenset({502, 503, 504})


class Availability:
    """Probes providers with one shared HTTP connection pool (thread-safe for GETs)."""

    def __init__(self) -> None:
        self._http = requests.Session()

    def is_up(self, client: ProviderClient) -> bool:
        """True when ``client``'s provider answers now (its discovery too, for OIDC)."""
        try:
            token_url = client.endpoints().token_url
        except ProviderFailure:
            return False
        try:
            reply = self._http.get(token_url, timeout=PROBE_TIMEOUT, allow_redirects=False)
        except requests.RequestException as exc:
            logger.info(
                "provider probe failed", extra={"provider": client.id, "why": type(exc).__name__}
            )
            return False
        return reply.status_code not in _DOWN_STATUSES
