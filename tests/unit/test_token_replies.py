"""How a token endpoint's reply becomes a TokenSet, for the odd replies real providers send."""

from __future__ import annotations

import pytest

from gateway.config import Provider
from gateway.providers.client import ProviderClient

NOW = 1_700_000_000


def client(**settings: object) -> ProviderClient:
    provider = Provider(
        id="p",
        kind="oauth2",
        client_id="gw",
        authorize_url="https://p.test/a",
        token_url="https://p.test/t",
        **settings,
    )
    return ProviderClient(provider, "https://gw.test/auth/callback")


@pytest.mark.parametrize(
    ("expires_in", "expires_at"),
    [
        (300, NOW + 300),
        (300.5, NOW + 300),
        (True, 0),
        (0, 0),
        (-5, 0),
        ("300", 0),
        (None, 0),
        (10**12, 0),
    ],
    ids=["int", "float", "bool-is-no-lifetime", "zero", "negative", "string", "null", "absurd"],
)
def test_only_a_plausible_number_is_an_expiry(expires_in: object, expires_at: int) -> None:
    tokens = client().token_set({"access_token": "t", "expires_in": expires_in}, NOW)
    assert tokens.expires_at == expires_at


def test_a_configured_maximum_lifetime_covers_replies_without_expiry() -> None:
    tokens = client(token_max_lifetime=600).token_set(
        {"access_token": "t", "expires_in": True}, NOW
    )
    assert tokens.expires_at == NOW + 600
