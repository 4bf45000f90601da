"""Session credentials: what a browser keeps in its cookie and a CLI sends as a bearer token.

A credential is ``gws_<session id>.<session secret>``, both 32 random bytes in unpadded
base64url. The id names the session (only its hash is ever used as a Redis key); the secret
never leaves the client and is half of the session's encryption key, so a Redis dump alone
reveals no token. The ``gws_`` prefix lets secret scanners and people recognise it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
from dataclasses import dataclass
from functools import cached_property

from gateway.errors import CredentialError

PREFIX = "gws_"
_RANDOM_BYTES = 32
_PART = r"[A-Za-z0-9_-]{43}"
_SHAPE = re.compile(rf"gws_({_PART})\.({_PART})")
ENCODED_LENGTH = len(PREFIX) + 43 + 1 + 43


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=")


@dataclass(frozen=True)
class SessionCredential:
    session_id: bytes
    secret: bytes

    @classmethod
    def generate(cls) -> SessionCredential:
        """A fresh credential from the operating system's CSPRNG."""
        return cls(secrets.token_bytes(_RANDOM_BYTES), secrets.token_bytes(_RANDOM_BYTES))

    @classmethod
    def parse(cls, text: str) -> SessionCredential:
        """Parse the encoded form; anything else raises :class:`CredentialError`.

        Parsed credentials are remembered (bounded): the same cookie arrives on every
        request of a session, and this is on the hot path of each check.
        """
        known = _PARSED.get(text)
        if known is not None:
            return known
        credential = cls._parse(text)
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()  # crude but bounded; a miss only costs one parse
        _PARSED[text] = credential
        return credential

    @classmethod
    def _parse(cls, text: str) -> SessionCredential:
        if len(text) != ENCODED_LENGTH:
            raise CredentialError("session credential has the wrong length")
        match = _SHAPE.fullmatch(text)
        if not match:
            raise CredentialError("session credential is malformed")
        try:
            session_id, secret = _unb64(match.group(1)), _unb64(match.group(2))
        except (binascii.Error, ValueError) as exc:
            raise CredentialError("session credential is malformed") from exc
        # 43 base64 characters carry 258 bits; reject non-canonical trailing bits.
        if _b64(session_id) != match.group(1) or _b64(secret) != match.group(2):
            raise CredentialError("session credential is not canonical")
        return cls(session_id, secret)

    def encode(self) -> str:
        return f"{PREFIX}{_b64(self.session_id)}.{_b64(self.secret)}"

    @cached_property
    def lookup_id(self) -> str:
        """Hex digest naming the session in Redis; the raw id is never a key."""
        return hashlib.sha256(b"gateway-session-id\x00" + self.session_id).hexdigest()

    def __repr__(self) -> str:  # never print the secret, even in a traceback
        return f"SessionCredential(lookup_id={self.lookup_id[:12]}…)"


_PARSED: dict[str, SessionCredential] = {}
_PARSED_MAX = 50_000


def looks_like_credential(text: str) -> bool:
    """Cheap test used to tell our bearer tokens from other Authorization values."""
    return text.startswith(PREFIX)
