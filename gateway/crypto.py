"""Encryption of session records at rest.

Each record is sealed with AES-256-GCM under a key derived (HKDF-SHA256) from a server secret
and the per-session secret that lives only in the client's credential. The Redis key name is
the AEAD's associated data, so a record copied under another key does not open.

Sealed layout: ``version (1 byte) | key id (4 bytes) | nonce (12 bytes) | ciphertext+tag``.
The key id names the server secret used, so after a rotation old records still open with the
older secret while new ones are sealed with the first (newest) one.
"""

from __future__ import annotations

import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.errors import SessionInvalid

FORMAT_VERSION = 1
_NONCE_BYTES = 12
_KEY_ID_BYTES = 4
_HEADER_BYTES = 1 + _KEY_ID_BYTES + _NONCE_BYTES


class _ServerKey:
    __slots__ = ("key_id", "material")

    def __init__(self, secret: str) -> None:
        self.material = secret.encode("utf-8")
        self.key_id = hashlib.sha256(b"gateway-key-id\x00" + self.material).digest()[:_KEY_ID_BYTES]


class RecordCipher:
    """Seals and opens session records; built once from the configured server secrets."""

    def __init__(self, server_secrets: tuple[str, ...] | list[str]) -> None:
        if not server_secrets:
            raise ValueError("at least one server secret is required")
        self._keys = [_ServerKey(secret) for secret in server_secrets]
        self._by_id = {key.key_id: key for key in reversed(self._keys)}

    @staticmethod
    def _aead(server_key: _ServerKey, session_secret: bytes, associated: bytes) -> AESGCM:
        derived = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=session_secret,
            info=b"gateway-session-record-v1\x00" + associated,
        ).derive(server_key.material)
        return AESGCM(derived)

    def seal(self, plaintext: bytes, *, session_secret: bytes, associated: bytes) -> bytes:
        """Encrypt with the newest server secret."""
        key = self._keys[0]
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead(key, session_secret, associated).encrypt(nonce, plaintext, associated)
        return bytes([FORMAT_VERSION]) + key.key_id + nonce + sealed

    def open(self, sealed: bytes, *, session_secret: bytes, associated: bytes) -> bytes:
        """Decrypt, or raise :class:`SessionInvalid` for anything that does not authenticate."""
        if len(sealed) < _HEADER_BYTES + 16 or sealed[0] != FORMAT_VERSION:
            raise SessionInvalid("session record has an unknown format")
        key = self._by_id.get(sealed[1 : 1 + _KEY_ID_BYTES])
        if key is None:
            raise SessionInvalid("session record was sealed with a retired server secret")
        nonce = sealed[1 + _KEY_ID_BYTES : _HEADER_BYTES]
        try:
            return self._aead(key, session_secret, associated).decrypt(
                nonce, sealed[_HEADER_BYTES:], associated
            )
        except InvalidTag as exc:
            raise SessionInvalid("session record does not authenticate") from exc
