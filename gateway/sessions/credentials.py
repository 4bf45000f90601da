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


# How many different session cookies of one request are tried. Browsers send the cookie of
# the longest path first, then older before newer; a cookie planted by a sibling host or an
# old deploy under another path or domain comes with ours and cannot be removed by us (a
# Set-Cookie only replaces the cookie of its own path and domain), so ours must still count.
# Each one tried may cost a Redis read: the number is bounded.
MAX_SESSION_COOKIES = 4
# How many session cookie values are read at most, malformed ones included: a header can
# carry thousands of cookies of our name, and parsing each would hold the worker's loop
# for milliseconds. More than this many before ours hide it: whoever can plant them can
# plant a session of their own too (gateway.sessions.choice), so nothing is given away.
MAX_SESSION_VALUES = 16


@dataclass(frozen=True, slots=True)
class PresentedCredential:
    credential: SessionCredential
    source: CredentialSource
    # Further well-formed session cookies of the same request, in the order sent. The caller
    # uses the one whose session is live (gateway.sessions.choice), never just the first.
    alternatives: tuple[SessionCredential, ...] = ()

    @property
    def candidates(self) -> tuple[SessionCredential, ...]:
        return (self.credential, *self.alternatives)


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
    authorization: str, cookie_header: str, cookie_names: Collection[str]
) -> PresentedCredential | None:
    """The session credential a request carries, None if it carries none: the one rule
    both servers read requests by.

    A bearer token wins over the cookie: API clients say what they mean explicitly (pass
    ``authorization=""`` where only a browser's cookie may count). Raises
    :class:`CredentialError` for a credential that is present but unusable.

    The Cookie header is read whatever its size: other sites of the domain may fill it
    with cookies of their own (a cookie bomb), and that must not cost the user the session.
    Its size is bounded by Envoy's request header limit and the HTTP servers', not here.
    Malformed session cookies are passed over when a well-formed one is there too.
    """
    bearer = bearer_text(authorization)
    if bearer is not None:
        return PresentedCredential(SessionCredential.parse(bearer), CredentialSource.BEARER)
    texts = session_cookie_values(cookie_header, cookie_names, MAX_SESSION_VALUES)
    if not texts:
        return None
    candidates: list[SessionCredential] = []
    problem: CredentialError | None = None
    for text in texts:
        try:
            credential = SessionCredential.parse(text)
        except CredentialError as exc:
            problem = problem or exc
            continue
        if credential not in candidates:
            candidates.append(credential)
            if len(candidates) == MAX_SESSION_COOKIES:
                break
    if not candidates:
        assert problem is not None  # every value failed to parse
        raise problem
    return PresentedCredential(candidates[0], CredentialSource.COOKIE, tuple(candidates[1:]))


def session_cookie_values(
    cookie_header: str, cookie_names: Collection[str], limit: int | None = None
) -> list[str]:
    """The values of the named cookies in ``cookie_header``, in the order sent (the first
    ``limit`` of them): the pairs :func:`split_cookies` would find, without splitting a
    header of tens of kilobytes (a cookie bomb costs a substring search, in C, not a Python
    object per cookie; many cookies of our own name cost no more than ``limit`` of them)."""
    found: list[tuple[int, str]] = []
    for name in cookie_names:
        start, of_name = 0, 0
        while (at := cookie_header.find(name, start)) != -1 and of_name != limit:
            start = at + len(name)
            value = _value_of_pair_at(cookie_header, at, len(name))
            if value is not None:
                found.append((at, value))
                of_name += 1
    found.sort()  # the first `limit` of each name include the first `limit` of all
    return [value for _, value in found[:limit]]


def _value_of_pair_at(header: str, at: int, name_length: int) -> str | None:
    """The value when ``header[at:]`` starts a pair of that name (only whitespace between
    the name and a separator or the start, and between it and '='), else None."""
    before = at - 1
    while before >= 0 and header[before].isspace():
        before -= 1
    if before >= 0 and header[before] not in ";,":
        return None  # inside another cookie's name or value
    equals = at + name_length
    while equals < len(header) and header[equals].isspace():
        equals += 1
    if equals == len(header) or header[equals] != "=":
        return None  # a longer name, or no value
    end = len(header)
    for separator in ";,":
        found = header.find(separator, equals)
        if found != -1:
            end = min(end, found)
    return header[equals + 1 : end].strip().strip('"')
