"""Which session a request belongs to when it carries several session cookies.

A browser sends every cookie of our name whose domain and path match: ours (host-only,
``Path=/``) and any that a sibling host planted for the parent domain or that an old deploy
left under a narrower path. We cannot remove those (a Set-Cookie only replaces the cookie of
its own name, domain and path, and the browser does not say which is which), so expiring "the"
cookie in reply to such a request would end the user's live session and leave the other one,
and the next login would end the same way: a redirect loop.

The rule, shared by ext_authz and the login app: the session is the one live session among
the candidates. Several live sessions of one user are the same person (an old cookie under
another path): the first sent is used. Live sessions of different users are a conflict: one
of them was planted (cookie tossing), and acting in either could act in an attacker's session,
so neither is used, and the request is answered with a page that says what to do rather than
a login, which could not end it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.sessions.credentials import SessionCredential
from gateway.sessions.model import Session


@dataclass(frozen=True, slots=True)
class Chosen:
    credential: SessionCredential
    session: Session


class Conflict:
    """Live sessions of different users in one request: use none of them."""


CONFLICT = Conflict()


def choose_session(
    loaded: Sequence[tuple[SessionCredential, Session | None]], now: float
) -> Chosen | Conflict | None:
    """The live session ``loaded`` (candidates in the order sent, with what each opened)
    names; None when none is live, :data:`CONFLICT` when live ones disagree on the user."""
    live = [(c, s) for c, s in loaded if s is not None and not s.expired_at(now)]
    if not live:
        return None
    subjects = {session.identity.subject for _, session in live}
    if len(subjects) > 1:
        return CONFLICT
    credential, session = live[0]
    return Chosen(credential, session)
