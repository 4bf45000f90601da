"""Every HTTP call to a provider, and the one place its failures become ours.

requests and Authlib raise their own errors; here, and only here, they become
:class:`ProviderUnavailable` (may work later: network, timeout, 5xx, a ``server_error``
reply), :class:`ProviderRejected` (the provider said no, with its OAuth error code) or
:class:`ClientRefused` (it refuses this gateway's client registration), chained with
``from exc``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import requests
from authlib.common.errors import AuthlibBaseError
from authlib.integrations.requests_client import OAuth2Session

from gateway.errors import ClientRefused, ProviderFailure, ProviderRejected, ProviderUnavailable

logger = logging.getLogger(__name__)

HTTP_TIMEOUT = (2.0, 5.0)  # connect, read: every call to a provider is bounded
PROBE_TIMEOUT = (1.0, 2.0)  # connect, read: a person waits for an availability probe
# A probe's answers that mean "down"; any other answer is a provider that is there.
_DOWN_STATUSES = frozenset({502, 503, 504})

_TRANSIENT_ERRORS = frozenset({"server_error", "temporarily_unavailable"})
# Rate limits and request timeouts pass; so do 5xx.
_TRANSIENT_STATUSES = frozenset({408, 429, *range(500, 600)})
# Refusals about this gateway's own client registration, not about one user's grant: a
# wrong secret or key, or a method the provider does not take (raised as ClientRefused).
CLIENT_PROBLEMS = frozenset({"invalid_client", "unauthorized_client", "unsupported_client_auth"})


class ProviderHttp:
    """One provider's HTTP connection pool; thread-safe as requests' Session is for GETs."""

    def __init__(self, provider_id: str, session: requests.Session | None = None) -> None:
        self.provider_id = provider_id
        self.session = session if session is not None else requests.Session()

    def answers(self, url: str) -> bool:
        """True when ``url`` gives any HTTP answer but a gateway error (no body is read:
        token endpoints refuse a GET in many ways, all of which mean the provider is up)."""
        try:
            reply = self.session.get(url, timeout=PROBE_TIMEOUT, allow_redirects=False)
        except requests.RequestException as exc:
            logger.info(
                "provider probe failed",
                extra={"provider": self.provider_id, "why": type(exc).__name__},
            )
            return False
        reply.close()
        return reply.status_code not in _DOWN_STATUSES

    def get_json(
        self,
        url: str,
        what: str,
        *,
        refused_on_4xx: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """A JSON object from ``url``; ``refused_on_4xx``: a 4xx is the provider saying no
        (userinfo refusing our token), not an outage."""
        try:
            reply = self.session.get(url, timeout=HTTP_TIMEOUT, headers=headers)
            if refused_on_4xx and 400 <= reply.status_code < 500 and reply.status_code != 429:
                raise ProviderRejected(
                    f"{what} answered {reply.status_code}", provider=self.provider_id
                )
            reply.raise_for_status()
            document = reply.json()
        except (requests.RequestException, ValueError) as exc:
            raise ProviderUnavailable(f"cannot fetch {what}", provider=self.provider_id) from exc
        if not isinstance(document, dict):
            raise ProviderUnavailable(f"{what} is not a JSON object", provider=self.provider_id)
        return document

    def token_request(
        self,
        what: str,
        session: Callable[[], OAuth2Session],
        request: Callable[[OAuth2Session], dict[str, Any]],
    ) -> dict[str, Any]:
        """One token endpoint request through a fresh Authlib session from ``session``.

        ProviderRejected carries the provider's error code (``invalid_grant``, ...);
        ProviderUnavailable is anything that may work later (network, timeout, 5xx, a
        ``server_error`` reply) and any reply but 200 that Authlib did not treat as an error.
        """
        statuses: list[int] = []
        try:
            with session() as oauth:
                oauth.hooks["response"].append(
                    lambda reply, *_, **__: statuses.append(reply.status_code)
                )
                reply = request(oauth)
        except AuthlibBaseError as exc:
            # The error code is whatever JSON the provider sent: only a string is one.
            error = exc.error[:64] if isinstance(exc.error, str) else ""
            if (statuses and statuses[-1] in _TRANSIENT_STATUSES) or error in _TRANSIENT_ERRORS:
                raise ProviderUnavailable(
                    f"{what} failed: {error}", provider=self.provider_id
                ) from exc
            refusal = ClientRefused if error in CLIENT_PROBLEMS else ProviderRejected
            raise refusal(
                f"{what} refused: {error}", provider=self.provider_id, error=error
            ) from exc
        except (requests.RequestException, ValueError) as exc:
            raise ProviderUnavailable(
                "the provider could not be reached", provider=self.provider_id
            ) from exc
        except (TypeError, OverflowError) as exc:
            # Authlib converts expires_in/expires_at itself: a list or 1e400 lands here.
            raise ProviderUnavailable(
                f"{what} reply could not be read", provider=self.provider_id
            ) from exc
        if statuses and statuses[-1] != 200:
            raise ProviderUnavailable(f"{what} answered {statuses[-1]}", provider=self.provider_id)
        return dict(reply)

    def revoke(self, session: Callable[[], OAuth2Session], url: str, token: str, hint: str) -> bool:
        """One RFC 7009 revocation request; best effort, so every failure is False (and logged).

        ProviderFailure is caught too: building the session may need discovery.
        """
        try:
            with session() as oauth:
                reply = oauth.revoke_token(
                    url, token=token, token_type_hint=hint, timeout=HTTP_TIMEOUT
                )
            return reply.status_code == 200
        except (requests.RequestException, AuthlibBaseError, ProviderFailure, ValueError):
            logger.warning("token revocation failed", extra={"provider": self.provider_id})
            return False
