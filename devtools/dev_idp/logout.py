"""Ending an IdP session: forget it, revoke its tokens, tell the relying parties."""

from __future__ import annotations

from typing import Any

from devtools.dev_idp.backchannel import BackchannelNotifier
from devtools.dev_idp.store import Store


class SessionTerminator:
    """Ends IdP sessions the way Keycloak does on logout."""

    def __init__(self, store: Store, backchannel: BackchannelNotifier):
        self._store = store
        self._backchannel = backchannel

    def end(self, sid: str) -> list[dict[str, Any]]:
        """End session ``sid`` if it is still live; return the back-channel deliveries.

        Ending twice is harmless: the second call finds no session and notifies no one.
        """
        session = self._store.end_session(sid)
        if session is None or not self._backchannel.enabled:
            return []
        user = self._store.user(session.username)
        sub = user.sub if user is not None else None
        return [
            self._backchannel.notify(client_id=client_id, sid=sid, sub=sub)
            for client_id in sorted(session.client_ids)
        ]

    def end_and_notify(
        self, sid: str, *, sub: str | None, client_ids: list[str] | None = None
    ) -> list[dict[str, Any]]:
        """Admin-initiated logout: end ``sid`` (if live) and always send logout tokens.

        Without ``client_ids`` the token goes to the clients that used the session, or to
        every client when the session is unknown, so tests can target any ``sid``.
        """
        session = self._store.end_session(sid)
        if client_ids is None:
            if session is not None and session.client_ids:
                client_ids = sorted(session.client_ids)
            else:
                client_ids = [client.client_id for client in self._store.clients()]
        if sub is None and session is not None:
            user = self._store.user(session.username)
            sub = user.sub if user is not None else None
        return [
            self._backchannel.notify(client_id=client_id, sid=sid, sub=sub)
            for client_id in client_ids
        ]
