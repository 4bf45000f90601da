"""Odd or hostile identity-provider replies end as a ProviderFailure, never another exception
(which the login app would answer with a 500, and ext_authz's refresh would not expect)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from gateway.config import Provider
from gateway.errors import ProviderRejected, ProviderUnavailable, TokenInvalid
from gateway.providers.client import ProviderClient
from gateway.sessions.model import TokenSet
from tests.support.http_replies import record_exchange

ISSUER = "https://idp.test"
KEY = ECKey.generate_key("P-256", parameters={"kid": "k1"})
DISCOVERY = {
    "issuer": ISSUER,
    "authorization_endpoint": f"{ISSUER}/authorize",
    "token_endpoint": f"{ISSUER}/token",
    "jwks_uri": f"{ISSUER}/jwks",
}
GOOD_JWKS = dict(KeySet([KEY]).as_dict(private=False))

Serve = Callable[[dict[str, tuple[int, Any]]], None]


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch) -> Serve:
    """Answer every HTTP request by URL (query left off) from a table of (status, JSON body)."""
    return record_exchange(monkeypatch).replies.update


def oauth2_client() -> ProviderClient:
    provider = Provider(
        id="p",
        kind="oauth2",
        client_id="gw",
        client_secret="s",
        authorize_url="https://p.test/authorize",
        token_url="https://p.test/token",
        userinfo_url="https://p.test/userinfo",
    )
    return ProviderClient(provider, "https://gw.test/auth/callback")


def oidc_client() -> ProviderClient:
    provider = Provider(id="o", kind="oidc", client_id="gw", issuer=ISSUER)
    return ProviderClient(provider, "https://gw.test/auth/callback")


def exchange(client: ProviderClient) -> object:
    return client.exchange_code("code", "v" * 43)


def refresh(client: ProviderClient) -> object:
    return client.refresh(TokenSet("old", refresh_token="r"), time.time())


@pytest.mark.parametrize("call", [exchange, refresh])
@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, {"error": ["invalid_grant"]}, ProviderRejected),  # once a TypeError in refresh
        (400, {"error": {"code": 1}}, ProviderRejected),
        (400, {"error": "invalid_grant"}, ProviderRejected),
        (400, {"error": "temporarily_unavailable"}, ProviderUnavailable),
        (400, {"access_token": "t"}, ProviderUnavailable),  # tokens only from a 200
        (200, ["access_token"], ProviderUnavailable),
        (503, {"error": "invalid_grant"}, ProviderUnavailable),
    ],
)
def test_token_endpoint_replies_that_give_no_tokens(
    serve: Serve, call: Callable[[ProviderClient], object], status: int, body: Any, expected: type
) -> None:
    serve({"https://p.test/token": (status, body)})
    with pytest.raises(expected) as raised:
        call(oauth2_client())
    assert isinstance(raised.value.error, str)


@pytest.mark.parametrize("call", [exchange, refresh])
def test_a_good_token_reply_is_taken(serve: Serve, call: Callable[[ProviderClient], Any]) -> None:
    serve({"https://p.test/token": (200, {"access_token": "t", "token_type": "Bearer"})})
    reply = call(oauth2_client())
    assert (reply["access_token"] if isinstance(reply, dict) else reply.access_token) == "t"


@pytest.mark.parametrize("subject", [["u1"], {"id": 1}, True, "", None])
def test_userinfo_naming_no_usable_subject_is_refused(serve: Serve, subject: object) -> None:
    serve({"https://p.test/userinfo": (200, {"sub": subject, "name": "Zoë"})})
    with pytest.raises(ProviderRejected):
        oauth2_client().identity("t", None)


def test_userinfo_with_an_integer_id_names_the_user(serve: Serve) -> None:
    serve({"https://p.test/userinfo": (200, {"id": 42, "username": "zoe"})})
    assert oauth2_client().identity("t", None).subject == "42"


def _id_token(header: dict[str, Any] | None = None) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": "u1", "aud": "gw", "iat": now, "exp": now + 60, "nonce": "n"}
    token = jwt.encode({"alg": "ES256", "kid": "k1"}, claims, KEY)
    if header is None:
        return token
    _, payload, signature = token.split(".")
    encoded = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    return f"{encoded}.{payload}.{signature}"


def oidc_replies(jwks: Any) -> dict[str, tuple[int, Any]]:
    return {
        f"{ISSUER}/.well-known/openid-configuration": (200, DISCOVERY),
        f"{ISSUER}/jwks": (200, jwks),
    }


@pytest.mark.parametrize("jwks", [{}, {"keys": None}, {"keys": [{"kty": "EC"}]}])
def test_a_jwks_without_usable_keys_is_the_provider_unavailable(serve: Serve, jwks: Any) -> None:
    serve(oidc_replies(jwks))
    with pytest.raises(ProviderUnavailable):
        oidc_client().verify_id_token(_id_token(), "n", time.time())


@pytest.mark.parametrize(
    "header",
    [{"alg": "ES256", "kid": "k1", "crit": 5}, {"alg": "ES256", "kid": ["k1"]}, {"alg": ["ES256"]}],
    ids=["crit-not-a-list", "kid-not-a-string", "alg-not-a-string"],
)
def test_malformed_jwt_headers_are_invalid_tokens(serve: Serve, header: dict[str, Any]) -> None:
    serve(oidc_replies(GOOD_JWKS))
    client = oidc_client()
    assert client.verify_id_token(_id_token(), "n", time.time())["sub"] == "u1"
    with pytest.raises(TokenInvalid):
        client.verify_id_token(_id_token(header), "n", time.time())
    with pytest.raises(TokenInvalid):
        client.verify_logout_token(_id_token(header), time.time())
