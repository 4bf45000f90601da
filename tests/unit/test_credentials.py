"""Session credentials: the encoded form round-trips and anything else is refused."""

from __future__ import annotations

import base64
import hashlib

import pytest

from gateway.errors import CredentialError
from gateway.sessions.credentials import (
    ENCODED_LENGTH,
    PREFIX,
    SessionCredential,
    looks_like_credential,
)

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.fixture
def credential() -> SessionCredential:
    return SessionCredential.generate()


def with_non_canonical_last_character(part: str) -> str:
    """The same 32 bytes' encoding, but with one of the 2 unused trailing bits set."""
    last = ALPHABET.index(part[-1])
    assert last & 0b11 == 0  # a canonical encoding leaves them clear
    return part[:-1] + ALPHABET[last | 0b01]


def test_encode_then_parse_gives_the_same_credential(credential: SessionCredential) -> None:
    encoded = credential.encode()
    assert len(encoded) == ENCODED_LENGTH
    assert encoded.startswith(PREFIX)
    assert SessionCredential.parse(encoded) == credential


def test_generated_credentials_are_32_random_bytes_each(credential: SessionCredential) -> None:
    assert len(credential.session_id) == 32 and len(credential.secret) == 32
    assert credential.session_id != credential.secret
    assert SessionCredential.generate() != credential


def test_parse_accepts_the_documented_layout() -> None:
    session_id, secret = bytes(range(32)), bytes(range(32, 64))
    parsed = SessionCredential.parse(f"gws_{b64(session_id)}.{b64(secret)}")
    assert parsed == SessionCredential(session_id, secret)


def _valid() -> str:
    return SessionCredential(b"\x01" * 32, b"\x02" * 32).encode()


def _replace_part(index: int, new: str) -> str:
    id_part, secret_part = _valid().removeprefix(PREFIX).split(".")
    parts = [id_part, secret_part]
    parts[index] = new
    return PREFIX + ".".join(parts)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param(_valid()[:-1], id="one-character-short"),
        pytest.param(_valid() + "A", id="one-character-long"),
        pytest.param(_valid() + "=", id="padded"),
        pytest.param(_replace_part(0, b64(b"\x01" * 32)[:-1] + "="), id="padding-in-the-id"),
        pytest.param("gwx_" + _valid()[4:], id="wrong-prefix"),
        pytest.param("GWS_" + _valid()[4:], id="upper-case-prefix"),
        pytest.param(_valid()[:47] + _valid()[48] + "." + _valid()[49:], id="separator-moved"),
        pytest.param(_valid().replace(".", "-"), id="no-separator"),
        pytest.param(_replace_part(0, "+" + b64(b"\x01" * 32)[1:]), id="standard-base64-plus"),
        pytest.param(_replace_part(1, "/" + b64(b"\x02" * 32)[1:]), id="standard-base64-slash"),
        pytest.param(_replace_part(0, "é" + b64(b"\x01" * 32)[1:]), id="non-ascii"),
        pytest.param(_replace_part(1, " " + b64(b"\x02" * 32)[1:]), id="space"),
        pytest.param(
            _replace_part(0, with_non_canonical_last_character(b64(b"\x01" * 32))),
            id="non-canonical-trailing-bits-in-id",
        ),
        pytest.param(
            _replace_part(1, with_non_canonical_last_character(b64(b"\x02" * 32))),
            id="non-canonical-trailing-bits-in-secret",
        ),
        pytest.param(_valid()[:-2] + "\r\n", id="crlf"),
    ],
)
def test_parse_refuses_anything_but_the_canonical_form(text: str) -> None:
    with pytest.raises(CredentialError):
        SessionCredential.parse(text)


def test_non_canonical_trailing_bits_would_otherwise_decode_to_the_same_bytes() -> None:
    # Why canonicality matters: two spellings of one credential must not both be accepted.
    part = b64(b"\x01" * 32)
    sloppy = with_non_canonical_last_character(part)
    assert base64.urlsafe_b64decode(sloppy + "=") == base64.urlsafe_b64decode(part + "=")
    with pytest.raises(CredentialError, match="canonical"):
        SessionCredential.parse(_replace_part(0, sloppy))


def test_repr_and_str_never_show_the_secret_or_the_id(credential: SessionCredential) -> None:
    for shown in (repr(credential), str(credential), f"{credential!r}"):
        assert credential.encode() not in shown
        assert b64(credential.secret) not in shown
        assert credential.secret.hex() not in shown
        assert b64(credential.session_id) not in shown
        assert str(credential.secret) not in shown


def test_lookup_id_is_a_domain_separated_hash_of_the_session_id(
    credential: SessionCredential,
) -> None:
    expected = hashlib.sha256(b"gateway-session-id\x00" + credential.session_id).hexdigest()
    assert credential.lookup_id == expected
    assert credential.session_id.hex() not in credential.lookup_id
    assert b64(credential.session_id) != credential.lookup_id
    assert hashlib.sha256(credential.session_id).hexdigest() != credential.lookup_id


def test_lookup_id_depends_only_on_the_session_id(credential: SessionCredential) -> None:
    same_id = SessionCredential(credential.session_id, b"\x00" * 32)
    assert same_id.lookup_id == credential.lookup_id
    assert SessionCredential.generate().lookup_id != credential.lookup_id


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("gws_anything", True, id="our-prefix"),
        pytest.param("eyJhbGciOi.e30.sig", False, id="jwt"),
        pytest.param("glpat-xxxx", False, id="gitlab-token"),
        pytest.param("", False, id="empty"),
        pytest.param("GWS_x", False, id="prefix-is-case-sensitive"),
    ],
)
def test_looks_like_credential_tells_our_tokens_apart(text: str, expected: bool) -> None:
    assert looks_like_credential(text) is expected
