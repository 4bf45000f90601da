"""The claims of SECURITY.md that are not already shown elsewhere, each as a test."""

from __future__ import annotations

import base64

import pytest
import requests

from gateway.crypto import RecordCipher
from gateway.errors import SessionInvalid
from gateway.redis.clients import sync_client
from gateway.sessions.credentials import SessionCredential
from gateway.sessions.factory import session_codec, sync_store
from tests.support.servers import TEST_SECRET
from tests.support.stack import Stack

pytestmark = pytest.mark.integration

TOKENS = {"primary": "primary-secret-access-token-7f3a", "gitlab": "glpat-secret-token-91bc"}


def raw_dump(stack: Stack) -> list[bytes]:
    client = sync_client(stack.config.redis)
    dump = []
    for key in client.scan_iter(count=1000):
        dump.append(key)
        kind = client.type(key)
        if kind == b"string":
            dump.append(client.get(key) or b"")
        elif kind == b"hash":
            for field, value in client.hgetall(key).items():
                dump += [field, value]
    return dump


def test_a_redis_dump_holds_no_token_and_no_credential(gateway: Stack):
    credential = gateway.create_session(tokens=TOKENS)
    session_id = base64.urlsafe_b64encode(credential.session_id).rstrip(b"=")
    secret = base64.urlsafe_b64encode(credential.secret).rstrip(b"=")
    for blob in raw_dump(gateway):
        for token in TOKENS.values():
            assert token.encode() not in blob
        assert session_id not in blob and secret not in blob
        assert credential.session_id not in blob and credential.secret not in blob


def test_the_server_secret_with_a_redis_dump_still_opens_no_session(gateway: Stack):
    credential = gateway.create_session(tokens=TOKENS)
    codec = session_codec(gateway.config)
    sealed = sync_client(gateway.config.redis).get(codec.record_key(credential))
    assert sealed is not None
    cipher = RecordCipher([TEST_SECRET])  # the attacker has the server secret too
    guess = SessionCredential(credential.session_id, b"\x00" * 32)  # but not the cookie's half
    with pytest.raises(SessionInvalid):
        cipher.open(
            sealed, session_secret=guess.secret, associated=codec.record_key(credential).encode()
        )


def test_a_stolen_cookie_stops_working_the_moment_the_session_is_revoked(gateway: Stack):
    credential = gateway.create_session(tokens=TOKENS)
    cookie = {"Cookie": f"{gateway.cookie_name}={credential.encode()}"}
    assert requests.get(gateway.url + "/api/x", headers=cookie, timeout=5).status_code == 200
    sync_store(gateway.config).delete(credential)
    assert requests.get(gateway.url + "/api/x", headers=cookie, timeout=5).status_code == 401


def test_a_backend_never_learns_the_session_credential_nor_other_routes_tokens(gateway: Stack):
    credential = gateway.create_session(tokens=TOKENS)
    for path, own in (
        ("/api/x", "primary"),
        ("/gitlab/x", "gitlab"),
        ("/status", None),
        ("/catalog/x", "primary"),
    ):
        for carrier in (
            {"Cookie": f"{gateway.cookie_name}={credential.encode()}"},
            {"Authorization": f"Bearer {credential.encode()}"},
        ):
            echoed = requests.get(gateway.url + path, headers=carrier, timeout=5).text
            assert credential.encode() not in echoed
            for provider, token in TOKENS.items():
                if provider != own:
                    assert token not in echoed, (path, provider)
