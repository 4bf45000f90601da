"""Login attempts: the server-side state of one walk through the login sequence.

Each ``GET /auth/login`` starts its own attempt, so several tabs never break each other. An
attempt is bound to the browser by a binding secret in a short-lived cookie: the record is
sealed (AES-GCM, like sessions) with a key derived from it, so a callback from another
browser cannot open it. Each step's ``state`` is stored under its own key and consumed with
GETDEL, which makes it single use even when two callbacks race.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import secrets
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import redis

from gateway.crypto import RecordCipher
from gateway.errors import SessionInvalid
from gateway.redis.clients import is_wrong_type, translate_redis_errors
from gateway.sessions.keyspace import Keyspace
from gateway.sessions.model import Identity, TokenSet
from login_app.errors import AttemptExpired, StateMismatch

logger = logging.getLogger(__name__)

ATTEMPT_TTL_SECONDS = 600
_BINDING_BYTES = 32
# What a TokenSet is made from (``presentable`` is derived, not stored).
_TOKEN_FIELDS = tuple(item.name for item in fields(TokenSet) if item.init)


def new_binding() -> str:
    return secrets.token_urlsafe(_BINDING_BYTES)


def binding_bytes(binding: str | None) -> bytes:
    """The binding cookie's secret; a missing or malformed cookie matches no attempt."""
    if not binding or len(binding) > 64:
        raise StateMismatch("this login was started in another browser or its cookie is gone")
    try:
        raw = base64.urlsafe_b64decode(binding + "=" * (-len(binding) % 4))
    except (binascii.Error, ValueError) as exc:
        raise StateMismatch("the login cookie is malformed") from exc
    if len(raw) != _BINDING_BYTES:
        raise StateMismatch("the login cookie is malformed")
    return raw


@dataclass
class LoginAttempt:
    attempt_id: str
    redirect_url: str
    steps: list[str]  # provider ids still to visit, in order
    step: int = 0
    state: str = ""
    nonce: str = ""
    code_verifier: str = ""
    tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    identity: dict[str, Any] | None = None
    replaces: str | None = None  # credential of the session this login replaces
    carried_subject: str | None = None  # whose tokens were carried over from that session
    for_device: str | None = None  # a CLI login's device id: the new session goes to the CLI
    approver_subject: str | None = None  # who approved that CLI login in this browser
    requested: str | None = None  # the provider the login was started for (never skipped)
    skipped: list[str] = field(default_factory=list)  # optional providers that were down

    @property
    def provider_id(self) -> str:
        return self.steps[self.step]

    @property
    def finished(self) -> bool:
        return self.step >= len(self.steps)

    def begin_step(self) -> None:
        """Fresh state, nonce and PKCE verifier for the current step."""
        self.state = f"{self.attempt_id}.{secrets.token_urlsafe(24)}"
        self.nonce = secrets.token_urlsafe(24)
        self.code_verifier = secrets.token_urlsafe(64)  # 86 chars, RFC 7636 §4.1: 43..128

    def add_tokens(self, provider_id: str, tokens: TokenSet) -> None:
        self.tokens[provider_id] = {name: getattr(tokens, name) for name in _TOKEN_FIELDS}

    def token_sets(self) -> dict[str, TokenSet]:
        return {pid: TokenSet(**fields) for pid, fields in self.tokens.items()}

    def identity_value(self) -> Identity | None:
        if self.identity is None:
            return None
        return Identity(**{**self.identity, "groups": tuple(self.identity.get("groups", ()))})


def attempt_id_of(state: str) -> str:
    attempt_id, dot, _ = state.partition(".")
    if not dot or not attempt_id or len(state) > 200:
        raise StateMismatch("the state parameter is malformed")
    return attempt_id


class AttemptStore:
    def __init__(self, client: redis.Redis, cipher: RecordCipher, keys: Keyspace) -> None:
        self._redis = client
        self._cipher = cipher
        self._keys = keys

    def _key(self, attempt_id: str) -> str:
        return self._keys.login_attempt(attempt_id)

    def _state_key(self, state: str) -> str:
        # Under the attempt's hash tag, like _key: save's pipeline and consume's GETDEL + GET
        # go to one cluster node (each command is single-key; none needs to be atomic).
        return self._keys.login_state(attempt_id_of(state), state)

    def start(
        self,
        redirect_url: str,
        steps: list[str],
        replaces: str | None = None,
        *,
        for_device: str | None = None,
        approver_subject: str | None = None,
        requested: str | None = None,
    ) -> LoginAttempt:
        return LoginAttempt(
            attempt_id=secrets.token_urlsafe(18),
            redirect_url=redirect_url,
            steps=steps,
            replaces=replaces,
            for_device=for_device,
            approver_subject=approver_subject,
            requested=requested,
        )

    def save(self, attempt: LoginAttempt, binding: str) -> None:
        """Store the attempt and arm its current step's state for one callback."""
        key = self._key(attempt.attempt_id)
        plaintext = json.dumps(asdict(attempt)).encode()
        sealed = self._cipher.seal(
            plaintext, session_secret=binding_bytes(binding), associated=key.encode()
        )
        with translate_redis_errors("saving a login attempt"):
            pipe = self._redis.pipeline(transaction=False)
            pipe.set(key, sealed, ex=ATTEMPT_TTL_SECONDS)
            if attempt.state:
                pipe.set(self._state_key(attempt.state), b"1", ex=ATTEMPT_TTL_SECONDS)
            pipe.execute()

    def consume(self, state: str, binding: str | None) -> LoginAttempt:
        """The attempt a callback belongs to; its state can never be used again."""
        secret = binding_bytes(binding)
        attempt_id = attempt_id_of(state)
        key = self._key(attempt_id)
        with translate_redis_errors("reading a login attempt"):
            armed = self._redis.getdel(self._state_key(state))
            sealed = self._redis.get(key)
        if sealed is None:
            raise AttemptExpired("this login attempt is unknown or has expired")
        if armed is None:
            raise StateMismatch("this login reply was already used or does not belong here")
        try:
            plaintext = self._cipher.open(
                bytes(sealed),  # type: ignore[arg-type]  # a bytes client returns bytes
                session_secret=secret,
                associated=key.encode(),
            )
        except SessionInvalid as exc:
            raise StateMismatch("this login was started in another browser") from exc
        try:
            attempt = LoginAttempt(**json.loads(plaintext))
        except (TypeError, ValueError) as exc:  # saved by another version during a deploy
            raise AttemptExpired("this login attempt cannot be read any more") from exc
        if not hmac.compare_digest(attempt.state, state):
            raise StateMismatch("the state does not match this login step")
        return attempt

    def count_round(self, binding: str, provider_id: str, window: int) -> int:
        """How many logins this browser started for ``provider_id`` within ``window``
        seconds, this one included."""
        digest = hashlib.sha256(binding_bytes(binding)).hexdigest()
        key = self._keys.login_rounds(digest, provider_id)
        with translate_redis_errors("counting logins"):
            for _ in range(2):
                pipe = self._redis.pipeline(transaction=False)
                pipe.set(key, 0, ex=window, nx=True)  # the window starts with the first round
                pipe.incr(key)
                _, count = pipe.execute(raise_on_error=False)
                if not isinstance(count, redis.ResponseError):
                    break
                if not is_wrong_type(count) and "not an integer" not in str(count):
                    raise count
                # Something not a counter of ours is there (another type, or text): this
                # browser's logins would fail until it expired, if it ever does. A new
                # window starts instead.
                logger.warning("a login rounds counter held something else; starting over")
                self._redis.delete(key)
            else:
                raise count
        return int(count)

    def finish(self, attempt: LoginAttempt) -> None:
        with translate_redis_errors("ending a login attempt"):
            self._redis.delete(self._key(attempt.attempt_id))
