"""Every Redis key and pub/sub channel the gateway uses, named in this one place.

All names start with ``redis.key_prefix``. Keys that must live together on one Redis Cluster
node carry the same hash tag (the part in braces): a session's record and its refresh locks,
a login attempt and its states, a device flow's record. User and provider-session indexes
are tagged by a digest of their name, so a subject never appears in a key.

These formats are what is in Redis today: changing one strands every record written under
the old name (sessions end, logins in flight fail). tests/unit/test_keyspace.py pins them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

# 16**4 directory buckets: a few entries each at a million sessions, and still only 65,536
# small keys at most.
DIRECTORY_DIGITS = 4


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Keyspace:
    """The names under one key prefix (validated by the config: no braces, no globs)."""

    prefix: str = "gw:"

    # -- sessions -------------------------------------------------------------------------

    def session_record(self, lookup_id: str) -> str:
        """A session's encrypted record (also the associated data its encryption binds)."""
        return f"{self.prefix}s:{{{lookup_id}}}"

    def session_records_pattern(self) -> str:
        """SCAN pattern matching every session record."""
        return f"{self.prefix}s:*"

    def session_directory(self, lookup_id: str) -> str:
        """Hash of the sessions whose lookup ids start with the same
        :data:`DIRECTORY_DIGITS` hex digits (operators revoke one session by a prefix of
        its id); any longer prefix names the same bucket."""
        return f"{self.prefix}s-dir:{{{lookup_id[:DIRECTORY_DIGITS]}}}"

    def session_records_starting(self, hex_prefix: str) -> str:
        """SCAN pattern matching the records whose lookup ids start with ``hex_prefix``
        (hex digits only, so nothing in it is a glob character)."""
        return f"{self.prefix}s:{{{hex_prefix}*"

    def refresh_lock(self, lookup_id: str, provider_id: str) -> str:
        """The lock that lets one process at a time refresh one provider's tokens; in the
        session's hash slot, next to its record."""
        return f"{self.prefix}lock:{{{lookup_id}}}:{provider_id}"

    def user_index(self, subject: str) -> str:
        """Hash of one user's sessions by lookup id (logout everywhere, operator CLI)."""
        return f"{self.prefix}user:{{{_digest(subject)}}}"

    def user_index_pattern(self) -> str:
        """SCAN pattern matching every user's index (the prefix holds no glob character)."""
        return f"{self.prefix}user:*"

    def provider_session_index(self, provider_session_id: str) -> str:
        """Hash of the sessions born from one IdP session (back-channel logout by sid)."""
        return f"{self.prefix}sid:{{{_digest(provider_session_id)}}}"

    def invalidation_channel(self) -> str:
        """Pub/sub channel announcing, by lookup id, every change to a session."""
        return f"{self.prefix}invalidate"

    # -- the login app's short-lived state ---------------------------------------------------

    def login_attempt(self, attempt_id: str) -> str:
        return f"{self.prefix}login:{{{attempt_id}}}"

    def login_state(self, attempt_id: str, state: str) -> str:
        """One step's state, armed for one callback; under its attempt's hash tag."""
        return f"{self.prefix}login-state:{{{attempt_id}}}:{_digest(state)}"

    def login_rounds(self, binding_digest: str, provider_id: str) -> str:
        """Counter of the logins one browser started for one provider."""
        return f"{self.prefix}login-rounds:{{{binding_digest}}}:{provider_id}"

    def device(self, device_id: str) -> str:
        """A CLI (device) login's record."""
        return f"{self.prefix}device:{{{device_id}}}"

    def device_user_code(self, user_code: str) -> str:
        """The device a user code names."""
        return f"{self.prefix}device-user:{{{user_code}}}"

    def device_counter(self, kind: str, client: str) -> str:
        """A rate limit's fixed-window counter of ``kind`` requests from ``client``."""
        return f"{self.prefix}device-{kind}:{{{client}}}"

    def own_logout(self, provider_session_id: str) -> str:
        """The note that our own logout is ending an IdP session (its echo spares some)."""
        return f"{self.prefix}own-logout:{{{_digest(provider_session_id)}}}"

    def readiness_probe(self) -> str:
        """A tiny key the login app's readiness writes, with a short TTL: a Redis that
        answers PING but refuses writes (maxmemory, a read-only replica) cannot log anyone in."""
        return f"{self.prefix}ready-probe"

    def logout_token_seen(self, jti: str) -> str:
        """A back-channel logout token already honoured (replay defence)."""
        return f"{self.prefix}logout-jti:{jti}"
