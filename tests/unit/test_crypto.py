"""Session records at rest: they open only with the right secrets, under the right key."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import pytest

from gateway.crypto import FORMAT_VERSION, RecordCipher
from gateway.errors import SessionInvalid

RECORD = b"\x08\x01 a serialized session record"
ASSOCIATED = b"gw:s:{lookup-id-of-this-session}"


def server_secret() -> str:
    return secrets.token_urlsafe(32)


@pytest.fixture
def session_secret() -> bytes:
    return secrets.token_bytes(32)


@pytest.fixture
def cipher() -> RecordCipher:
    return RecordCipher([server_secret()])


def test_a_sealed_record_opens_to_the_same_bytes(
    cipher: RecordCipher, session_secret: bytes
) -> None:
    sealed = cipher.seal(RECORD, session_secret=session_secret, associated=ASSOCIATED)
    assert cipher.open(sealed, session_secret=session_secret, associated=ASSOCIATED) == RECORD


def test_an_empty_record_round_trips(cipher: RecordCipher, session_secret: bytes) -> None:
    sealed = cipher.seal(b"", session_secret=session_secret, associated=ASSOCIATED)
    assert cipher.open(sealed, session_secret=session_secret, associated=ASSOCIATED) == b""


def test_sealing_twice_gives_different_bytes_and_hides_the_plaintext(
    cipher: RecordCipher, session_secret: bytes
) -> None:
    first = cipher.seal(RECORD, session_secret=session_secret, associated=ASSOCIATED)
    second = cipher.seal(RECORD, session_secret=session_secret, associated=ASSOCIATED)
    assert first != second  # a fresh nonce each time
    assert RECORD not in first
    assert first[0] == FORMAT_VERSION


def _flip(sealed: bytes, index: int) -> bytes:
    return sealed[:index] + bytes([sealed[index] ^ 0x01]) + sealed[index + 1 :]


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda s: _flip(s, 1), id="flipped-key-id-byte"),
        pytest.param(lambda s: _flip(s, 6), id="flipped-nonce-byte"),
        pytest.param(lambda s: _flip(s, 20), id="flipped-ciphertext-byte"),
        pytest.param(lambda s: _flip(s, len(s) - 1), id="flipped-tag-byte"),
        pytest.param(lambda s: s[:-1], id="truncated-by-one"),
        pytest.param(lambda s: s[:20], id="truncated-to-the-header"),
        pytest.param(lambda s: b"", id="empty"),
        pytest.param(lambda s: s + b"\x00", id="extended"),
        pytest.param(lambda s: bytes([FORMAT_VERSION + 1]) + s[1:], id="unknown-version"),
        pytest.param(lambda s: b"\x00" + s[1:], id="version-zero"),
    ],
)
def test_a_damaged_record_is_invalid(
    cipher: RecordCipher, session_secret: bytes, tamper: Callable[[bytes], bytes]
) -> None:
    sealed = cipher.seal(RECORD, session_secret=session_secret, associated=ASSOCIATED)
    with pytest.raises(SessionInvalid):
        cipher.open(tamper(sealed), session_secret=session_secret, associated=ASSOCIATED)


def test_a_record_does_not_open_with_another_session_secret(
    cipher: RecordCipher, session_secret: bytes
) -> None:
    sealed = cipher.seal(RECORD, session_secret=session_secret, associated=ASSOCIATED)
    with pytest.raises(SessionInvalid, match="authenticate"):
        cipher.open(sealed, session_secret=secrets.token_bytes(32), associated=ASSOCIATED)


def test_a_record_moved_under_another_redis_key_does_not_open(
    cipher: RecordCipher, session_secret: bytes
) -> None:
    sealed = cipher.seal(RECORD, session_secret=session_secret, associated=ASSOCIATED)
    with pytest.raises(SessionInvalid, match="authenticate"):
        cipher.open(sealed, session_secret=session_secret, associated=b"gw:s:{another-session}")


def test_a_record_sealed_before_a_rotation_still_opens(session_secret: bytes) -> None:
    old, new = server_secret(), server_secret()
    sealed = RecordCipher([old]).seal(RECORD, session_secret=session_secret, associated=ASSOCIATED)
    rotated = RecordCipher([new, old])
    assert rotated.open(sealed, session_secret=session_secret, associated=ASSOCIATED) == RECORD


def test_after_a_rotation_new_records_are_sealed_with_the_first_secret(
    session_secret: bytes,
) -> None:
    old, new = server_secret(), server_secret()
    sealed = RecordCipher([new, old]).seal(
        RECORD, session_secret=session_secret, associated=ASSOCIATED
    )
    only_new = RecordCipher([new])
    assert only_new.open(sealed, session_secret=session_secret, associated=ASSOCIATED) == RECORD
    with pytest.raises(SessionInvalid, match="retired"):
        RecordCipher([old]).open(sealed, session_secret=session_secret, associated=ASSOCIATED)


def test_a_record_from_a_retired_server_secret_is_invalid(session_secret: bytes) -> None:
    retired, current = server_secret(), server_secret()
    sealed = RecordCipher([retired]).seal(
        RECORD, session_secret=session_secret, associated=ASSOCIATED
    )
    with pytest.raises(SessionInvalid, match="retired"):
        RecordCipher([current]).open(sealed, session_secret=session_secret, associated=ASSOCIATED)


def test_a_cipher_needs_at_least_one_server_secret() -> None:
    with pytest.raises(ValueError):
        RecordCipher([])
