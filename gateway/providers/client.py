"""Talking to identity providers: discovery, authorization URLs, code exchange, refresh,
revocation, ID and logout tokens. Shared by the login app and ext_authz (refresh).

Authlib's ``OAuth2Session`` builds authorization requests (with PKCE S256), exchanges codes
and refreshes tokens; joserfc (Authlib's JOSE library) verifies ID tokens and logout tokens.
Every error those libraries or the network raise is translated here, and only here, into
:class:`ProviderUnavailable` (try again later), :class:`ProviderRejected` (the provider said
no, with its OAuth error code) or :class:`TokenInvalid` (a JWT failed validation).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import requests
from authlib.common.errors import AuthlibBaseError
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT, private_key_jwt_sign
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jwt import ClaimsOption

from gateway.config import Provider
from gateway.errors import (
    ClientRefused,
    ProviderFailure,
    ProviderRejected,
    ProviderUnavailable,
    TokenInvalid,
)
from gateway.sessions.model import Identity, TokenSet

logger = logging.getLogger(__name__)

HTTP_TIMEOUT = (2.0, 5.0)  # connect, read: every call to a provider is bounded
CLOCK_SKEW = 60  # seconds of leeway on exp/iat
MAX_ID_TOKEN_AGE = 600  # an ID token issued longer ago than this is not a fresh login
METADATA_TTL = 3600
JWKS_REFETCH_INTERVAL = 30  # at most one forced JWKS refetch per this many seconds
ALLOWED_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384")
MAX_EXPIRES_IN = 366 * 86400
ASSERTION_LIFETIME = 60  # seconds a private_key_jwt client assertion is valid


@dataclass(frozen=True)
class Endpoints:
    authorize_url: str
    token_url: str
    userinfo_url: str | None = None
    revocation_url: str | None = None
    end_session_url: str | None = None
    jwks_uri: str | None = None
    issuer: str | None = None
    # Discovery's token_endpoint_auth_methods_supported; None: the document says nothing.
    token_auth_methods: tuple[str, ...] | None = None
    # RFC 9207 §3: the provider says every authorization reply carries `iss`.
    sends_iss_parameter: bool = False


@dataclass
class _KeyCache:
    keys: KeySet | None = None
    fetched_at: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


class ProviderClient:
    """One configured provider. Thread-safe: caches are shared by the app's threads."""

    def __init__(self, provider: Provider, redirect_uri: str) -> None:
        self.provider = provider
        self.id = provider.id
        self.redirect_uri = redirect_uri
        self._http = requests.Session()
        # oauth2 endpoints come from the config: built once. oidc ones come from discovery.
        self._endpoints: Endpoints | None = None
        if not self.is_oidc:
            assert provider.authorize_url and provider.token_url  # the config guarantees both
            self._endpoints = Endpoints(
                provider.authorize_url,
                provider.token_url,
                provider.userinfo_url,
                provider.revocation_url,
                issuer=provider.issuer,
            )
        self._endpoints_at = 0.0
        self._endpoints_lock = threading.Lock()
        self._keys = _KeyCache()
        self._signing_key = provider.signing_key

    @property
    def _issuer(self) -> str:
        if self.provider.issuer is None:
            raise TokenInvalid("an oauth2 provider issues no ID tokens", provider=self.id)
        return self.provider.issuer

    @property
    def is_oidc(self) -> bool:
        return self.provider.kind == "oidc"

    # ---- metadata -------------------------------------------------------------------------

    def endpoints(self) -> Endpoints:
        """Configured endpoints (oauth2) or the discovery document's (oidc), cached."""
        if not self.is_oidc:
            assert self._endpoints is not None
            return self._endpoints
        with self._endpoints_lock:
            if self._endpoints is None or time.time() - self._endpoints_at > METADATA_TTL:
                self._endpoints = self._discover()
                self._endpoints_at = time.time()
            return self._endpoints

    def _discover(self) -> Endpoints:
        issuer = self.provider.issuer
        assert issuer is not None  # the config requires it for oidc
        document = self._get_json(discovery_url(issuer), "discovery")
        # OIDC Discovery §4.3: the document must name exactly the issuer we asked.
        if document.get("issuer") != issuer:
            raise ProviderUnavailable("discovery names another issuer", provider=self.id)
        methods = document.get("token_endpoint_auth_methods_supported")
        try:
            return Endpoints(
                authorize_url=_str(document["authorization_endpoint"]),
                token_url=_str(document["token_endpoint"]),
                userinfo_url=_opt_str(document.get("userinfo_endpoint")),
                revocation_url=self.provider.revocation_url
                or _opt_str(document.get("revocation_endpoint")),
                end_session_url=_opt_str(document.get("end_session_endpoint")),
                jwks_uri=_str(document["jwks_uri"]),
                issuer=issuer,
                token_auth_methods=tuple(m for m in methods if isinstance(m, str))
                if isinstance(methods, list)
                else None,
                sends_iss_parameter=document.get("authorization_response_iss_parameter_supported")
                is True,
            )
        except (KeyError, TypeError) as exc:
            raise ProviderUnavailable("discovery document is incomplete", provider=self.id) from exc

    def _get_json(
        self, url: str, what: str, *, refused_on_4xx: bool = False, **kwargs: Any
    ) -> dict[str, Any]:
        """A JSON object from ``url``; ``refused_on_4xx``: a 4xx is the provider saying no
        (userinfo refusing our token), not an outage."""
        try:
            reply = self._http.get(url, timeout=HTTP_TIMEOUT, **kwargs)
            if refused_on_4xx and 400 <= reply.status_code < 500 and reply.status_code != 429:
                raise ProviderRejected(f"{what} answered {reply.status_code}", provider=self.id)
            reply.raise_for_status()
            document = reply.json()
        except (requests.RequestException, ValueError) as exc:
            raise ProviderUnavailable(f"cannot fetch {what}", provider=self.id) from exc
        if not isinstance(document, dict):
            raise ProviderUnavailable(f"{what} is not a JSON object", provider=self.id)
        return document

    def _key_set(self, kid: str | None) -> KeySet:
        """The provider's JWKS; refetched (rate-limited) when a token names an unknown kid."""
        cache = self._keys
        with cache.lock:
            known = cache.keys is not None and (
                kid is None or any(key.kid == kid for key in cache.keys.keys)
            )
            stale = time.time() - cache.fetched_at > METADATA_TTL
            may_refetch = time.time() - cache.fetched_at > JWKS_REFETCH_INTERVAL
            if cache.keys is None or stale or (not known and may_refetch):
                jwks_uri = self.endpoints().jwks_uri
                assert jwks_uri is not None
                try:
                    jwks = self._get_json(jwks_uri, "JWKS")
                    # joserfc types its argument as a TypedDict; a fetched JWKS is a plain dict,
                    # which the import itself checks (its errors are caught below).
                    cache.keys = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
                except (JoseError, KeyError, ValueError, TypeError) as exc:
                    raise ProviderUnavailable("JWKS does not parse", provider=self.id) from exc
                cache.fetched_at = time.time()
            assert cache.keys is not None
            return cache.keys

    # ---- the authorization code flow ----------------------------------------------------

    def auth_method(self) -> str:
        """The client authentication method for the token and revocation endpoints."""
        configured = self.provider.token_endpoint_auth_method
        if configured is not None:
            return configured
        candidates = []
        if self._signing_key is not None:
            candidates.append("private_key_jwt")
        if self.provider.client_secret:
            candidates += ["client_secret_basic", "client_secret_post"]
        if not candidates:
            return "none"
        if not self.is_oidc:
            return candidates[0]
        # OIDC Discovery §3: without the list, client_secret_basic is the default.
        supported = self.endpoints().token_auth_methods or ("client_secret_basic",)
        for method in candidates:
            if method in supported:
                return method
        # A configuration problem, not an outage: no retry can fix it.
        raise ClientRefused(
            "the provider supports none of the configured client authentication methods "
            f"({', '.join(candidates)}); set token_endpoint_auth_method",
            provider=self.id,
            error="unsupported_client_auth",
        )

    def _oauth(self, scope: tuple[str, ...] | None = None) -> OAuth2Session:
        """An Authlib session for one exchange; ``scope`` is sent only where it is given."""
        method = self.auth_method()
        secret: Any = self.provider.client_secret
        if method == "private_key_jwt":
            secret = self._signing_key
        oauth = OAuth2Session(
            client_id=self.provider.client_id,
            client_secret=secret,
            scope=" ".join(scope) if scope else None,
            redirect_uri=self.redirect_uri,
            code_challenge_method="S256",
            token_endpoint_auth_method=method,
            revocation_endpoint_auth_method=method,
        )
        # A token or revocation request carries secrets (a refresh token, maybe the client
        # secret): never re-sent to wherever a redirect points.
        oauth.max_redirects = 0
        if method == "private_key_jwt":
            assert self._signing_key is not None
            kid = self.provider.private_key_id or self._signing_key.kid
            endpoints = self.endpoints()
            oauth.register_client_auth_method(
                _ShortLivedPrivateKeyJWT(
                    # The issuer as audience (as RFC 7523bis advises): an assertion sent to the
                    # revocation endpoint is then no token-endpoint credential for another host.
                    endpoints.issuer or endpoints.token_url,
                    headers={"kid": kid} if kid else None,
                    alg=_signing_algorithm(self._signing_key),
                )
            )
        return oauth

    def authorization_url(self, *, state: str, code_verifier: str, nonce: str | None) -> str:
        extra = {**self.provider.authorize_params, **({"nonce": nonce} if nonce else {})}
        with self._oauth(self.provider.scopes) as oauth:
            url, _ = oauth.create_authorization_url(
                self.endpoints().authorize_url, state=state, code_verifier=code_verifier, **extra
            )
        return str(url)

    def check_reply_issuer(self, iss: str | None) -> None:
        """RFC 9207: the authorization reply's ``iss`` must name this provider's issuer.

        Required when the provider's metadata says it sends one; checked whenever present
        and an issuer is known (oauth2 providers without a configured issuer skip it).
        """
        endpoints = self.endpoints()
        if iss is None:
            if endpoints.sends_iss_parameter:
                raise TokenInvalid("the authorization reply has no iss", provider=self.id)
            return
        if endpoints.issuer is not None and iss != endpoints.issuer:
            raise TokenInvalid("the authorization reply names another issuer", provider=self.id)

    def exchange_code(self, code: str, code_verifier: str) -> dict[str, Any]:
        """Trade the authorization code for tokens (the provider enforces single use)."""
        return self._token_request(
            "code exchange",
            lambda oauth: oauth.fetch_token(
                self.endpoints().token_url,
                code=code,
                code_verifier=code_verifier,
                timeout=HTTP_TIMEOUT,
            ),
        )

    def _token_request(
        self,
        what: str,
        request: Callable[[OAuth2Session], dict[str, Any]],
        scope: tuple[str, ...] | None = None,
    ) -> dict[str, Any]:
        """One token endpoint request; whatever it fails with becomes ours here.

        ProviderRejected carries the provider's error code (``invalid_grant``, ...);
        ProviderUnavailable is anything that may work later (network, timeout, 5xx, a
        ``server_error`` reply) and any reply but 200 that Authlib did not treat as an error.
        """
        statuses: list[int] = []
        try:
            with self._oauth(scope) as oauth:
                oauth.hooks["response"].append(
                    lambda reply, *_, **__: statuses.append(reply.status_code)
                )
                reply = request(oauth)
        except AuthlibBaseError as exc:
            # The error code is whatever JSON the provider sent: only a string is one.
            error = exc.error[:64] if isinstance(exc.error, str) else ""
            if (statuses and statuses[-1] in _TRANSIENT_STATUSES) or error in _TRANSIENT_ERRORS:
                raise ProviderUnavailable(f"{what} failed: {error}", provider=self.id) from exc
            refusal = ClientRefused if error in CLIENT_PROBLEMS else ProviderRejected
            raise refusal(f"{what} refused: {error}", provider=self.id, error=error) from exc
        except (requests.RequestException, ValueError) as exc:
            raise ProviderUnavailable(
                "the provider could not be reached", provider=self.id
            ) from exc
        except (TypeError, OverflowError) as exc:
            # Authlib converts expires_in/expires_at itself: a list or 1e400 lands here.
            raise ProviderUnavailable(f"{what} reply could not be read", provider=self.id) from exc
        if statuses and statuses[-1] != 200:
            raise ProviderUnavailable(f"{what} answered {statuses[-1]}", provider=self.id)
        return dict(reply)

    def token_set(self, reply: dict[str, Any], now: float) -> TokenSet:
        """A TokenSet from a token endpoint reply, refusing replies that lack what we need."""
        access_token = reply.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            raise ProviderRejected("the reply has no access_token", provider=self.id)
        expires_in = reply.get("expires_in")
        # bool is an int to Python; `"expires_in": true` is no lifetime.
        if (
            isinstance(expires_in, int | float)
            and not isinstance(expires_in, bool)
            and 0 < expires_in <= MAX_EXPIRES_IN
        ):
            expires_at = int(now + expires_in)
        elif self.provider.token_max_lifetime:
            expires_at = int(now + self.provider.token_max_lifetime)
        else:
            expires_at = 0
        tokens = TokenSet(
            access_token=access_token,
            refresh_token=_opt_str(reply.get("refresh_token")) or "",
            id_token=_opt_str(reply.get("id_token")) or "",
            token_type=_opt_str(reply.get("token_type")) or "Bearer",
            scope=_opt_str(reply.get("scope")) or "",
            expires_at=expires_at,
            obtained_at=int(now),
        )
        if not tokens.presentable:
            raise ProviderRejected(
                "the access token has characters a header cannot carry", provider=self.id
            )
        return tokens

    def refresh(self, tokens: TokenSet, now: float) -> TokenSet:
        """Trade the refresh token for new tokens (RFC 6749 §6).

        What the reply omits is kept: a provider that does not rotate refresh tokens sends
        none, and a refresh reply without an ID token must not lose the one we have (the
        ID token is needed for logout). Raises ProviderRejected with ``error`` set to the
        provider's code (``invalid_grant``: the refresh token is revoked or expired), or
        ProviderUnavailable for anything that may work later (network, timeout, 5xx).
        """
        if not tokens.refresh_token:
            raise ProviderRejected("no refresh token", provider=self.id, error="invalid_grant")
        # RFC 6749 §6: without `scope` the provider keeps what it granted; re-sending what
        # we asked for at login fails where it granted less (invalid_scope).
        reply = self._token_request(
            "refresh",
            lambda oauth: oauth.refresh_token(
                self.endpoints().token_url,
                refresh_token=tokens.refresh_token,
                timeout=HTTP_TIMEOUT,
            ),
            scope=self.provider.refresh_scopes,
        )
        fresh = self.token_set(reply, now)
        return replace(
            fresh,
            refresh_token=fresh.refresh_token or tokens.refresh_token,
            id_token=fresh.id_token or tokens.id_token,
            scope=fresh.scope or tokens.scope,
        )

    # ---- identity -----------------------------------------------------------------------

    def verify_id_token(self, id_token: str, nonce: str, now: float) -> dict[str, Any]:
        """Claims of a valid ID token for this client and this login attempt's nonce."""
        return self._verified_claims(
            id_token,
            now,
            "ID token",
            sub={"essential": True},
            exp={"essential": True},
            nonce={"essential": True, "value": nonce},
        )

    def verify_logout_token(self, logout_token: str, now: float) -> dict[str, Any]:
        """Claims of a valid OIDC back-channel logout token (Back-Channel Logout 1.0 §2.6)."""
        claims = self._verified_claims(logout_token, now, "logout token", jti={"essential": True})
        events = claims.get("events")
        if not isinstance(events, dict) or _BACKCHANNEL_EVENT not in events:
            raise TokenInvalid("logout token lacks the back-channel logout event", provider=self.id)
        if "nonce" in claims:
            raise TokenInvalid("a logout token must not carry a nonce", provider=self.id)
        if not (_opt_str(claims.get("sid")) or _opt_str(claims.get("sub"))):
            raise TokenInvalid("logout token names neither sid nor sub", provider=self.id)
        return claims

    def _verified_claims(
        self, token: str, now: float, what: str, **required: ClaimsOption
    ) -> dict[str, Any]:
        """Claims of a JWT signed by this provider, issued to this client lately.

        The registry also refuses an ``iat`` that is no number or lies in the future.
        """
        claims = self._verify_jwt(token)
        registry = jwt.JWTClaimsRegistry(
            now=int(now),
            leeway=CLOCK_SKEW,
            iss={"essential": True, "value": self._issuer},
            iat={"essential": True},
            **required,
        )
        try:
            registry.validate(claims)
        except JoseError as exc:
            raise TokenInvalid(f"{what} claim refused: {exc}", provider=self.id) from exc
        self._check_audience(claims)
        if claims["iat"] < now - MAX_ID_TOKEN_AGE:
            raise TokenInvalid(f"{what} is too old", provider=self.id)
        return claims

    def _verify_jwt(self, token: str) -> dict[str, Any]:
        try:
            header = jws.extract_compact(token.encode("ascii")).protected
        except (JoseError, ValueError, UnicodeError) as exc:
            raise TokenInvalid("token is not a compact JWS", provider=self.id) from exc
        if header.get("alg") not in ALLOWED_ALGORITHMS:
            raise TokenInvalid(
                f"token algorithm {header.get('alg')!r} is not allowed", provider=self.id
            )
        kid = header.get("kid")
        keys = self._key_set(kid if isinstance(kid, str) else None)
        try:
            decoded = jwt.decode(token, keys, algorithms=list(ALLOWED_ALGORITHMS))
        # TypeError: joserfc 1.8 iterates a "crit" header without checking it is a list.
        except (JoseError, ValueError, TypeError) as exc:
            raise TokenInvalid(f"token signature does not verify: {exc}", provider=self.id) from exc
        return dict(decoded.claims)

    def _check_audience(self, claims: dict[str, Any]) -> None:
        client_id = self.provider.client_id
        audience = claims.get("aud")
        audiences = [audience] if isinstance(audience, str) else audience
        if not isinstance(audiences, list) or client_id not in audiences:
            raise TokenInvalid("token is meant for another client", provider=self.id)
        azp = claims.get("azp")
        # OIDC Core §3.1.3.7: with several audiences the authorized party must be us.
        if (azp is not None or len(audiences) > 1) and azp != client_id:
            raise TokenInvalid("token's authorized party is another client", provider=self.id)

    def identity(
        self,
        access_token: str,
        id_claims: dict[str, Any] | None,
        keep: frozenset[str] = frozenset(),
    ) -> Identity:
        """Who logged in; ``keep`` names further claims to store (for route policies).

        oidc: the verified ID token's claims merged with userinfo, whose ``sub`` must be the
        ID token's (OIDC Core §5.3.4); the ID token keeps the last word on ``sub`` and
        ``sid``. oauth2: the userinfo endpoint alone.
        """
        if self.is_oidc:
            assert id_claims is not None
            claims = dict(id_claims)
            if self.provider.userinfo and self.endpoints().userinfo_url:
                info = self._userinfo(access_token)
                if info.get("sub") != id_claims.get("sub"):
                    raise TokenInvalid("userinfo names another subject", provider=self.id)
                claims = {**claims, **info, "sub": id_claims["sub"], "sid": id_claims.get("sid")}
        else:
            if not self.endpoints().userinfo_url:
                raise ProviderRejected("the provider has no userinfo endpoint", provider=self.id)
            claims = {**self._userinfo(access_token), "sid": None}
        return self.identity_from_claims(claims, keep)

    def _userinfo(self, access_token: str) -> dict[str, Any]:
        url = self.endpoints().userinfo_url
        assert url is not None
        return self._get_json(
            url,
            "userinfo",
            refused_on_4xx=True,
            headers={"Authorization": f"Bearer {access_token}"},
        )

    def identity_from_claims(
        self, claims: dict[str, Any], keep: frozenset[str] = frozenset()
    ) -> Identity:
        """The identity the configured claim names find in ``claims``."""
        names = self.provider.claims
        subject = _first_claim(claims, names.subject)
        # GitLab and GitHub name users by an integer id; a list, object, bool or "" names nobody.
        if isinstance(subject, bool) or not isinstance(subject, str | int) or subject == "":
            raise ProviderRejected("the provider's reply names no subject", provider=self.id)
        groups = _first_claim(claims, names.groups)
        if isinstance(groups, str):
            groups = [groups]
        kept = {}
        for name in keep:
            value = _claim(claims, name)
            if isinstance(value, str | int | float | bool):
                kept[name] = str(value).lower() if isinstance(value, bool) else str(value)
        return Identity(
            subject=str(subject),
            email=_opt_str(_first_claim(claims, names.email)) or "",
            name=_opt_str(_first_claim(claims, names.name)) or "",
            groups=tuple(g for g in groups if isinstance(g, str))
            if isinstance(groups, list)
            else (),
            provider_session_id=_opt_str(claims.get("sid")) or "",
            claims=kept,
        )

    # ---- logout -------------------------------------------------------------------------

    def revoke(self, tokens: TokenSet) -> bool:
        """RFC 7009 revocation of the refresh token (and access token); best effort.

        The client authenticates as at the token endpoint (RFC 7009 §2.1).
        """
        url = self.endpoints().revocation_url
        if not url:
            return False
        revoked = True
        for token, hint in (
            (tokens.refresh_token, "refresh_token"),
            (tokens.access_token, "access_token"),
        ):
            if not token:
                continue
            try:
                with self._oauth() as oauth:
                    reply = oauth.revoke_token(
                        url, token=token, token_type_hint=hint, timeout=HTTP_TIMEOUT
                    )
                revoked = revoked and reply.status_code == 200
            except (requests.RequestException, AuthlibBaseError, ProviderFailure, ValueError):
                logger.warning("token revocation failed", extra={"provider": self.id})
                revoked = False
        return revoked


_TRANSIENT_ERRORS = frozenset({"server_error", "temporarily_unavailable"})
# Rate limits and request timeouts pass; so do 5xx.
_TRANSIENT_STATUSES = frozenset({408, 429, *range(500, 600)})
# Refusals about this gateway's own client registration, not about one user's grant: a
# wrong secret or key, or a method the provider does not take (raised as ClientRefused).
CLIENT_PROBLEMS = frozenset({"invalid_client", "unauthorized_client", "unsupported_client_auth"})


class _ShortLivedPrivateKeyJWT(PrivateKeyJWT):
    """Authlib's private_key_jwt with assertions valid for a minute instead of an hour (some
    providers refuse longer ones), each with its own ``jti``."""

    def sign(self, auth: Any, token_endpoint: str) -> Any:
        return private_key_jwt_sign(
            auth.client_secret,
            client_id=auth.client_id,
            token_endpoint=token_endpoint,
            header=self.headers,
            alg=self.alg,
            expires_in=ASSERTION_LIFETIME,
        )


_BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"


def discovery_url(issuer: str) -> str:
    """OIDC Discovery §4.1: one terminating "/" of the issuer goes before the well-known path."""
    return issuer.removesuffix("/") + "/.well-known/openid-configuration"


def _claim(claims: dict[str, Any], path: str) -> Any:
    """The value at a dotted claim path (``realm_access.roles``); None where it is missing.
    A claim whose own name has a dot (as some providers' URL-named claims do) wins."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _first_claim(claims: dict[str, Any], paths: tuple[str, ...]) -> Any:
    for path in paths:
        value = _claim(claims, path)
        if value is not None and value != "":
            return value
    return None


def _signing_algorithm(key: Any) -> str:
    """The JWS algorithm for a client assertion signed with ``key`` (RSA or EC)."""
    if key.key_type == "EC":
        return {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}[key.curve_name]
    return "RS256"


def _str(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError("expected a non-empty string")
    return value


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
