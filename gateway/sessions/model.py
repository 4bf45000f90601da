"""The session model and its serialized, encrypted form.

A :class:`Session` is plain data. :class:`SessionCodec` turns it into the bytes stored in
Redis (protobuf, then AES-GCM) and back; the key names come from :mod:`keyspace`. The store
modules do the I/O; nothing here talks to Redis.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field, replace

from google.protobuf.message import DecodeError

from gateway.crypto import RecordCipher
from gateway.errors import SessionInvalid
from gateway.proto import gateway_session_pb2 as pb
from gateway.sessions.credentials import SessionCredential
from gateway.sessions.keyspace import Keyspace

SCHEMA_VERSION = 1
# RFC 6750 b64token plus what GitLab and JupyterHub tokens use: visible ASCII, no spaces.
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]{1,8192}")


@dataclass(frozen=True, slots=True)
class TokenSet:
    access_token: str
    refresh_token: str = ""
    id_token: str = ""
    token_type: str = "Bearer"
    scope: str = ""
    expires_at: int = 0  # unix seconds; 0: no expiry known
    needs_login: bool = False
    obtained_at: int = 0  # unix seconds; 0: unknown
    # Checked once here, not on every request that injects the token (a regex over ~1 KB).
    presentable: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """``presentable``: False for a token that could not travel safely in a header
        (e.g. CR/LF in it)."""
        ok = _TOKEN_CHARS.fullmatch(self.access_token) is not None
        object.__setattr__(self, "presentable", ok)

    def expired_at(self, now: float) -> bool:
        return self.expires_at != 0 and now >= self.expires_at

    def needs_refresh(self, now: float, margin: float) -> bool:
        """True when the access token expires within ``margin`` and can be refreshed.

        The margin never exceeds half the token's lifetime, so a provider issuing tokens
        shorter-lived than the margin is not asked for a new token on every request.
        """
        if self.needs_login or self.expires_at == 0 or not self.refresh_token:
            return False
        if self.obtained_at:
            margin = min(margin, max(self.expires_at - self.obtained_at, 0) / 2)
        return now >= self.expires_at - margin


@dataclass(frozen=True, slots=True)
class Identity:
    subject: str
    email: str = ""
    name: str = ""
    groups: tuple[str, ...] = ()
    provider_session_id: str = ""
    claims: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Session:
    identity: Identity
    created_at: int
    expires_at: int
    tokens: dict[str, TokenSet] = field(default_factory=dict)

    def expired_at(self, now: float) -> bool:
        return now >= self.expires_at

    def with_tokens(self, provider_id: str, tokens: TokenSet) -> Session:
        return replace(self, tokens={**self.tokens, provider_id: tokens})


def _to_message(session: Session) -> pb.Session:
    identity = session.identity
    message = pb.Session(
        version=SCHEMA_VERSION,
        identity=pb.Identity(
            subject=identity.subject,
            email=identity.email,
            name=identity.name,
            groups=list(identity.groups),
            provider_session_id=identity.provider_session_id,
            claims=identity.claims,
        ),
        created_at=session.created_at,
        expires_at=session.expires_at,
    )
    for provider_id, tokens in session.tokens.items():
        message.tokens[provider_id].CopyFrom(
            pb.TokenSet(
                access_token=tokens.access_token,
                refresh_token=tokens.refresh_token,
                id_token=tokens.id_token,
                token_type=tokens.token_type,
                scope=tokens.scope,
                expires_at=tokens.expires_at,
                needs_login=tokens.needs_login,
                obtained_at=tokens.obtained_at,
            )
        )
    return message


def _from_message(message: pb.Session) -> Session:
    if message.version != SCHEMA_VERSION:
        raise SessionInvalid(f"session record has schema version {message.version}")
    identity = message.identity
    if not identity.subject or message.expires_at <= 0:
        raise SessionInvalid("session record lacks a subject or an expiry")
    return Session(
        identity=Identity(
            subject=identity.subject,
            email=identity.email,
            name=identity.name,
            groups=tuple(identity.groups),
            provider_session_id=identity.provider_session_id,
            claims=dict(identity.claims),
        ),
        created_at=message.created_at,
        expires_at=message.expires_at,
        tokens={
            provider_id: TokenSet(
                access_token=t.access_token,
                refresh_token=t.refresh_token,
                id_token=t.id_token,
                token_type=t.token_type,
                scope=t.scope,
                expires_at=t.expires_at,
                needs_login=t.needs_login,
                obtained_at=t.obtained_at,
            )
            for provider_id, t in message.tokens.items()
        },
    )


class SessionCodec:
    """Seals and opens a session's record, bound to the record's Redis key."""

    def __init__(self, cipher: RecordCipher, keys: Keyspace | None = None) -> None:
        self._cipher = cipher
        self.keys = keys or Keyspace()

    def record_key(self, credential: SessionCredential) -> str:
        return self.keys.session_record(credential.lookup_id)

    def encode(self, credential: SessionCredential, session: Session) -> bytes:
        serialized = _to_message(session).SerializeToString(deterministic=True)
        # Tokens are mostly base64 text: deflate saves about a quarter of Redis memory. The
        # plaintext's first byte says whether it is compressed. (Compressing before
        # encrypting leaks sizes only to whoever sees the record, and nothing in a session
        # is chosen by one party to learn another's secret from its size.)
        compressed = zlib.compress(serialized, 6)
        if len(compressed) < len(serialized):
            plaintext = _DEFLATED + compressed
        else:
            plaintext = _RAW + serialized
        return self._cipher.seal(
            plaintext,
            session_secret=credential.secret,
            associated=self.record_key(credential).encode("ascii"),
        )

    def decode(self, credential: SessionCredential, sealed: bytes) -> Session:
        plaintext = self._cipher.open(
            sealed,
            session_secret=credential.secret,
            associated=self.record_key(credential).encode("ascii"),
        )
        message = pb.Session()
        try:
            message.ParseFromString(_inflate(plaintext))
        except DecodeError as exc:
            raise SessionInvalid("session record does not parse") from exc
        return _from_message(message)


_RAW, _DEFLATED = b"\x00", b"\x01"
_MAX_RECORD_BYTES = 256 * 1024


def _inflate(plaintext: bytes) -> bytes:
    marker, body = plaintext[:1], plaintext[1:]
    if marker == _RAW:
        return body
    if marker != _DEFLATED:
        raise SessionInvalid("session record has an unknown encoding")
    inflater = zlib.decompressobj()
    try:
        inflated = inflater.decompress(body, _MAX_RECORD_BYTES)
    except zlib.error as exc:
        raise SessionInvalid("session record does not inflate") from exc
    if inflater.unconsumed_tail or not inflater.eof:
        raise SessionInvalid("session record is truncated or too large")
    return inflated
