"""Session credentials: what a browser keeps in its cookie and a CLI sends as a bearer token.

How a request carries one is read here too (:func:`read_presented`), by both servers, so
ext_authz and the login app never disagree about which session a request belongs to.

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
from collections.abc import Collection
from dataclasses import dataclass
from enum import Enum
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
# About 600 bytes an entry: a worker's memory must not grow with the sessions it has seen,
# and a parse it misses costs microseconds (the session cache keeps the hot sessions).
_PARSED_MAX = 1024


def looks_like_credential(text: str) -> bool:
    """Cheap test used to tell our bearer tokens from other Authorization values."""
    return text.startswith(PREFIX)


class CredentialSource(Enum):
    COOKIE = "cookie"
    BEARER = "bearer"


@dataclass(frozen=True, slots=True)
class PresentedCredential:
    credential: SessionCredential
    source: CredentialSource


def split_cookies(cookie_header: str) -> list[tuple[str, str]]:
    """Name/value pairs of a Cookie header.

    Envoy joins repeated Cookie headers (HTTP/2 sends one per cookie) with commas, so both
    ';' and ',' separate pairs; neither may appear in a cookie value (RFC 6265 cookie-octet).
    """
    pairs = []
    for chunk in cookie_header.replace(",", ";").split(";"):
        name, sep, value = chunk.strip().partition("=")
        if sep and name:
            pairs.append((name.strip(), value.strip().strip('"')))
    return pairs


def bearer_text(authorization: str) -> str | None:
    """The gateway token sent as ``Authorization: Bearer gws_…``, unparsed; None for no
    Authorization header or one meant for the backend (a foreign JWT, Basic, ...)."""
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and looks_like_credential(token) else None


def read_presented(
    authorization: str,
    cookie_header: str,
    cookie_names: Collection[str],
    max_cookie_bytes: int,
) -> PresentedCredential | None:
    """The session credential a request carries, None if it carries none: the one rule
    both servers read requests by.

    A bearer token wins over the cookie: API clients say what they mean explicitly (pass
    ``authorization=""`` where only a browser's cookie may count). Raises
    :class:`CredentialError` for a credential that is present but unusable.
    """
    bearer = bearer_text(authorization)
    if bearer is not None:
        return PresentedCredential(SessionCredential.parse(bearer), CredentialSource.BEARER)
    if not cookie_header:
        return None
    if len(cookie_header.encode("utf-8", "surrogatepass")) > max_cookie_bytes:
        raise CredentialError("cookie header is too large")
    values = {value for name, value in split_cookies(cookie_header) if name in cookie_names}
    if not values:
        return None
    if len(values) > 1:
        # Two different session cookies mean someone planted one (cookie tossing from a
        # sibling host or a more specific path, which browsers send first). Taking either
        # could act in the attacker's session (say, approve a CLI login into it, or end the
        # wrong one), so a request with two is treated as carrying an unusable credential by
        # both servers alike; the same cookie twice is harmless and counts once.
        raise CredentialError("more than one session cookie")
    return PresentedCredential(SessionCredential.parse(values.pop()), CredentialSource.COOKIE)
