"""OIDC Back-Channel Logout: build a logout token and POST it to the relying party.

Delivery is best effort, as the specification allows: one attempt, a two-second
timeout, and the outcome recorded in the stats instead of raised.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import requests

from devtools.dev_idp.keys import KeyRing
from devtools.dev_idp.stats import Stats

BACKCHANNEL_LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
DELIVERY_TIMEOUT_SECONDS = 2.0
LOGOUT_TOKEN_TTL_SECONDS = 120


class BackchannelNotifier:
    """Sends logout tokens to the one configured back-channel logout URI."""

    def __init__(self, issuer: str, uri: str | None, keys: KeyRing, stats: Stats):
        self._issuer = issuer
        self._uri = uri
        self._keys = keys
        self._stats = stats

    @property
    def enabled(self) -> bool:
        return self._uri is not None

    def logout_token(self, *, client_id: str, sid: str, sub: str | None) -> str:
        """A signed logout token; it never carries a nonce (Back-Channel Logout §2.4)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self._issuer,
            "aud": client_id,
            "iat": now,
            "exp": now + LOGOUT_TOKEN_TTL_SECONDS,
            "jti": secrets.token_urlsafe(16),
            "sid": sid,
            "events": {BACKCHANNEL_LOGOUT_EVENT: {}},
        }
        if sub is not None:
            claims["sub"] = sub
        # Explicit typing (Back-Channel Logout §2.4) keeps it from passing as an ID token.
        return self._keys.sign(claims, header={"typ": "logout+jwt"})

    def notify(self, *, client_id: str, sid: str, sub: str | None) -> dict[str, Any]:
        """POST one logout token; return (and record) what happened."""
        outcome: dict[str, Any] = {
            "uri": self._uri,
            "client_id": client_id,
            "sid": sid,
            "sub": sub,
            "status": None,
            "error": None,
        }
        if self._uri is None:
            outcome["error"] = "no back-channel logout URI configured"
            return outcome
        token = self.logout_token(client_id=client_id, sid=sid, sub=sub)
        try:
            response = requests.post(
                self._uri, data={"logout_token": token}, timeout=DELIVERY_TIMEOUT_SECONDS
            )
        except requests.RequestException as exc:
            outcome["error"] = f"{type(exc).__name__}: {exc}"
        else:
            outcome["status"] = response.status_code
            if response.status_code not in (200, 204):
                outcome["error"] = f"HTTP {response.status_code}"
        self._stats.backchannel_delivery(outcome)
        return outcome
