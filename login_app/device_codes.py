"""Device codes for the CLI login, a device-style flow after RFC 8628.

The pure rules: codes, poll arithmetic, CSRF tokens, sealing for the device. Storage is in
device_store.py. The device id is a hash of the device_code, so Redis never holds a code
that could poll. The approving browser never sees the device_code either, so the new
session's credential cannot be sealed with the code itself: the record keeps an X25519
public key derived from the code, approval seals to it (ECDH with a fresh key, then
:class:`RecordCipher`), and only a poll that presents the device_code can derive the private
key and open it.

    LoginError (login_app.errors)
    ├── UnknownUserCode    the code was never issued, has expired, or was used  (400)
    ├── ApprovalForged     the approval lacks our CSRF token or comes from another origin  (403)
    └── TooManyRequests    too many code look-ups or starts from one client  (429)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from enum import StrEnum

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.crypto import RecordCipher
from gateway.errors import SessionInvalid
from login_app.errors import AttemptExpired, LoginError

# No vowels (so no words), no digits and no I or O to misread: 20 ** 8 = 2.56e10 codes, typed
# case-insensitively (RFC 8628 §6.1).
USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
USER_CODE_LENGTH = 8
EXPIRES_IN_SECONDS = 600
POLL_INTERVAL_SECONDS = 5
SLOW_DOWN_SECONDS = 5  # RFC 8628 §3.5: each slow_down adds 5 s for all later polls
# A client that sleeps exactly `interval` between polls must never hear slow_down because of
# network or scheduling jitter.
POLL_SLACK_SECONDS = 1.0
# The record outlives its expiry this long, so a late poll learns expired_token rather than
# invalid_grant; approval checks expires_at, so nothing can be approved in this window.
EXPIRED_GRACE_SECONDS = 600
GUESS_LIMIT, GUESS_WINDOW_SECONDS = 20, 600
START_LIMIT, START_WINDOW_SECONDS = 60, 600
_DEVICE_CODE_BYTES = 32
MAX_DEVICE_CODE_LENGTH = 128
_MAX_USER_CODE_INPUT = 32
TRANSACTION_TRIES = 5
_X25519_KEY_BYTES = 32


class UnknownUserCode(AttemptExpired):
    code = "unknown_user_code"
    title = "This code is not valid"
    retry = False


class ApprovalForged(LoginError):
    code = "forged_approval"
    status = 403
    title = "This approval did not come from the approval page"
    retry = False


class TooManyRequests(LoginError):
    code = "too_many_requests"
    status = 429
    title = "Too many attempts"
    retry = False


class Status(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"


class PollResult(StrEnum):
    """What a poll of the token endpoint gets: an RFC 8628 §3.5 error code, or the token."""

    AUTHORIZATION_PENDING = "authorization_pending"
    SLOW_DOWN = "slow_down"
    EXPIRED_TOKEN = "expired_token"
    ACCESS_DENIED = "access_denied"
    INVALID_GRANT = "invalid_grant"
    APPROVED = "approved"


# -- codes ------------------------------------------------------------------------------------


def new_device_code() -> str:
    return secrets.token_urlsafe(_DEVICE_CODE_BYTES)


def new_user_code() -> str:
    """Eight letters from :data:`USER_CODE_ALPHABET`, in their normal (undashed) form."""
    return "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(USER_CODE_LENGTH))


def display_user_code(user_code: str) -> str:
    """``BCDFGHJK`` -> ``BCDF-GHJK``, the form people read and type."""
    half = USER_CODE_LENGTH // 2
    return f"{user_code[:half]}-{user_code[half:]}"


def normalize_user_code(text: str | None) -> str | None:
    """The normal form of a typed code (any case, dashes and spaces ignored), else None."""
    if not text or len(text) > _MAX_USER_CODE_INPUT:
        return None
    letters = "".join(c for c in text if c not in "- \t").upper()
    if len(letters) != USER_CODE_LENGTH or any(c not in USER_CODE_ALPHABET for c in letters):
        return None
    return letters


def device_id_for(device_code: str) -> str:
    """Hex digest naming a device's records; the device_code itself is never stored."""
    return hashlib.sha256(b"gateway-device-code\x00" + device_code.encode("utf-8")).hexdigest()


def client_key(remote_addr: str | None, external_address: str | None) -> str:
    """Who is asking, for rate limits: Envoy's peer plus the client address Envoy saw."""
    text = f"{remote_addr or '-'}\x00{(external_address or '-')[:64]}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


# -- polling ----------------------------------------------------------------------------------


def poll_outcome(
    status: Status, *, last_poll: float, interval: int, expires_at: float, now: float
) -> tuple[PollResult, int]:
    """What a poll at ``now`` gets, and the interval that holds from then on."""
    if now >= expires_at:
        return PollResult.EXPIRED_TOKEN, interval
    if status is Status.DENIED:
        return PollResult.ACCESS_DENIED, interval
    if status is Status.APPROVED:
        return PollResult.APPROVED, interval
    # RFC 8628 §3.5 makes slow_down a variant of authorization_pending: only pending polls
    # are paced, so an approved token is never held back. last_poll 0 means none yet.
    if last_poll and now - last_poll < interval - POLL_SLACK_SECONDS:
        return PollResult.SLOW_DOWN, interval + SLOW_DOWN_SECONDS
    return PollResult.AUTHORIZATION_PENDING, interval


# -- CSRF -------------------------------------------------------------------------------------


def csrf_token(server_secret: str, lookup_id: str, user_code: str) -> str:
    """HMAC-SHA256 binding an approval form to one session and one user code."""
    message = b"gateway-cli-approve\x00" + lookup_id.encode() + b"\x00" + user_code.encode()
    digest = hmac.new(server_secret.encode("utf-8"), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def csrf_token_matches(
    server_secrets: Sequence[str], lookup_id: str, user_code: str, token: str | None
) -> bool:
    """True when ``token`` was derived with any configured server secret (rotation)."""
    if not token or len(token) > 64:
        return False
    presented = token.encode("utf-8")  # bytes: compare_digest refuses non-ASCII str
    return any(
        hmac.compare_digest(csrf_token(secret, lookup_id, user_code).encode(), presented)
        for secret in server_secrets
    )


# -- sealing the credential for the device_code's holder -------------------------------------


def _device_private_key(device_code: str) -> X25519PrivateKey:
    seed = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"gateway-device-code-x25519"
    ).derive(device_code.encode("utf-8"))
    return X25519PrivateKey.from_private_bytes(seed)


def _raw(public_key: X25519PublicKey) -> bytes:
    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def device_public_key(device_code: str) -> bytes:
    return _raw(_device_private_key(device_code).public_key())


def seal_for_device(
    cipher: RecordCipher, device_key: bytes, plaintext: bytes, *, associated: bytes
) -> bytes:
    """Encrypt so that only the holder of the device_code behind ``device_key`` can open."""
    ephemeral = X25519PrivateKey.generate()
    ephemeral_public = _raw(ephemeral.public_key())
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(device_key))
    sealed = cipher.seal(plaintext, session_secret=ephemeral_public + shared, associated=associated)
    return ephemeral_public + sealed


def open_for_device(
    cipher: RecordCipher, device_code: str, sealed: bytes, *, associated: bytes
) -> bytes:
    """Open what :func:`seal_for_device` sealed; :class:`SessionInvalid` if it does not open."""
    ephemeral_public, body = sealed[:_X25519_KEY_BYTES], sealed[_X25519_KEY_BYTES:]
    try:
        peer = X25519PublicKey.from_public_bytes(ephemeral_public)
        shared = _device_private_key(device_code).exchange(peer)
    except ValueError as exc:
        raise SessionInvalid("device record holds no usable key") from exc
    return cipher.open(body, session_secret=ephemeral_public + shared, associated=associated)
