"""Provider sessions this gateway asked the provider to end, and which of ours outlive that.

Logging out one gateway session (a browser's, or a CLI's) ends that session only. For a
browser it also ends the provider's session (RP-initiated logout), and the provider answers
with a back-channel logout for that session (its ``sid``): the echo of our own logout. That
echo must end no more than the logout did, or the browser's logout would also end the CLI
sessions approved in it (they were logged in within the same provider session). Every other
back-channel logout is the provider's own word (the person logged out at the provider, an
administrator ended the session or the user) and ends every gateway session it names.

So before the browser is sent to the provider's end-session endpoint, the gateway sessions of
that provider session that are to live on are noted; the first back-channel logout for that
``sid`` within the window takes the note and spares them. A session logged in after the note
was taken is not in it, and a later logout of the same sid ends the spared ones too.
"""

from __future__ import annotations

import json
import logging

import redis

from gateway.redis.clients import is_wrong_type, translate_redis_errors
from gateway.sessions.keyspace import Keyspace

logger = logging.getLogger(__name__)

# Long enough for a person on the provider's "log out?" confirmation page; past it the echo
# ends everything, which is the safe side.
ECHO_WINDOW_SECONDS = 600


class OwnLogouts:
    def __init__(self, client: redis.Redis, keys: Keyspace) -> None:
        self._redis = client
        self._keys = keys

    def _key(self, provider_session_id: str) -> str:
        return self._keys.own_logout(provider_session_id)

    def remember(self, provider_session_id: str, surviving: list[str]) -> None:
        """Note that our logout is ending ``provider_session_id`` and that the gateway
        sessions ``surviving`` (lookup ids) are to outlive it."""
        if not surviving:
            return  # nothing to spare: the echo may end whatever it finds
        with translate_redis_errors("noting a logout"):
            self._redis.set(
                self._key(provider_session_id), json.dumps(surviving), ex=ECHO_WINDOW_SECONDS
            )

    def take(self, provider_session_id: str) -> frozenset[str]:
        """The lookup ids a back-channel logout of ``provider_session_id`` is to spare; each
        note is used once."""
        with translate_redis_errors("reading a logout note"):
            try:
                raw = self._redis.getdel(self._key(provider_session_id))
            except redis.ResponseError as exc:
                if not is_wrong_type(exc):
                    raise
                # Not a note of ours: spare nothing (the safe side), and let it go.
                logger.warning("a logout note key held a value of the wrong type")
                self._redis.delete(self._key(provider_session_id))
                raw = None
        if raw is None:
            return frozenset()
        try:
            spared = json.loads(raw)
        except ValueError:
            return frozenset()  # unreadable: spare nothing (the safe side)
        if not isinstance(spared, list):
            return frozenset()
        return frozenset(item for item in spared if isinstance(item, str))
