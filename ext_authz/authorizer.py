"""One check from start to end: the decision core around one session lookup.

This is where a lookup failure is turned into a reason the core understands, and where it
is decided, visibly, that every failure fails closed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from ext_authz.decision import Decider, Decision, Lookup, SessionNeeded
from ext_authz.refresh import Refresher, RefreshFailed, SessionGone
from ext_authz.request import CheckRequest
from gateway.errors import SessionInvalid, StoreUnavailable
from gateway.sessions.choice import Conflict, choose_session
from gateway.sessions.credentials import SessionCredential
from gateway.sessions.model import Session

logger = logging.getLogger(__name__)


class SessionSource(Protocol):
    async def load(self, credential: SessionCredential) -> Session | None: ...

    def evict(self, credential: SessionCredential) -> None: ...


class Authorizer:
    def __init__(
        self,
        decider: Decider,
        sessions: SessionSource,
        refresher: Refresher | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._decider = decider
        self._sessions = sessions
        self._refresher = refresher
        self._clock = clock

    async def _load(self, credential: SessionCredential) -> tuple[Session | None, str | None]:
        """The credential's session, or the :class:`Lookup` reason there is none."""
        try:
            return await self._sessions.load(credential), None
        except StoreUnavailable as exc:
            # Never read as "logged out": the session may be fine, Redis is not.
            logger.warning("session store unavailable: %s", exc)
            return None, Lookup.UNAVAILABLE
        except SessionInvalid as exc:
            logger.info("session record refused: %s", exc)
            return None, Lookup.INVALID

    async def _pick(
        self, step: SessionNeeded
    ) -> tuple[SessionNeeded, Session | None, str | None] | Conflict:
        """Several session cookies came (another path or domain, see gateway.sessions.choice):
        go on with the one whose session is live. With none live the first one's outcome
        stands, but "Redis is down" wins over "gone", lest a live session be taken for dead."""
        outcomes = [(c, *await self._load(c)) for c in step.presented.candidates]
        choice = choose_session([(c, s) for c, s, _ in outcomes], self._clock())
        if isinstance(choice, Conflict):
            return choice
        if choice is not None:
            presented = replace(step.presented, credential=choice.credential, alternatives=())
            return replace(step, presented=presented), choice.session, None
        if any(failure == Lookup.UNAVAILABLE for _, _, failure in outcomes):
            return step, None, Lookup.UNAVAILABLE
        _, session, failure = outcomes[0]
        return step, session, failure

    def reconfigure(self, decider: Decider, refresher: Refresher | None) -> None:
        """Use new routes and providers from now on; checks under way finish with the old."""
        self._decider, self._refresher = decider, refresher

    async def check(self, request: CheckRequest) -> Decision:
        step = self._decider.begin(request)
        if not isinstance(step, SessionNeeded):
            return step
        if step.presented.alternatives:
            picked = await self._pick(step)
            if isinstance(picked, Conflict):
                logger.warning("live sessions of different users in one request")
                return self._decider.conflict(step)
            step, session, failure = picked
        else:
            session, failure = await self._load(step.presented.credential)
        refresh_failed = False
        provider_id = step.route.provider
        lookup_id = step.presented.credential.lookup_id
        refresher = self._refresher
        if session is not None and refresher is not None:
            # Only over a session Redis just gave (or the cache holds): see unstored_tokens.
            session = refresher.with_unstored(lookup_id, session)
        now = self._clock()
        if (
            session is not None
            and provider_id is not None
            and refresher is not None
            and refresher.needs_refresh(session, provider_id, now, lookup_id)
        ):
            try:
                session = await refresher.refreshed(step.presented.credential, provider_id)
                self._sessions.evict(step.presented.credential)
            except RefreshFailed as exc:
                # Keep the session: the old token serves while still valid, else 503; or the
                # new one, when the provider answered and Redis has not taken it yet.
                logger.info("refresh not done", extra={"reason": exc.reason})
                session = refresher.with_unstored(lookup_id, session)
                refresh_failed = True
            except SessionGone:
                session, failure = None, Lookup.UNKNOWN
            except SessionInvalid as exc:
                # Re-read around the refresh, the record no longer opens: as if on loading.
                logger.info("session record refused: %s", exc)
                session, failure = None, Lookup.INVALID
            except Exception:
                # A refresh that broke in a way nobody foresaw must not turn a check that the
                # still-valid token can answer into a denial: as if the provider were down.
                logger.exception("refresh failed unexpectedly")
                refresh_failed = True
            now = self._clock()
            fresh = session.tokens.get(provider_id) if session is not None else None
            if fresh is not None and fresh.expired_at(now):
                # Expiry counts from when the refresh was sent, so a provider that answered
                # later than the token lives gives one already expired: a reason to retry
                # (503, the next check refreshes again), not to send the user to log in.
                refresh_failed = True
        return self._decider.complete(step, session, failure, now, refresh_failed=refresh_failed)
