"""SIGHUP asks a server to reload; it must never be what ends one.

A signal's default action applies until a process installs its handler, and SIGHUP's default
is to terminate: a reload sent to a server that is still importing its modules (a worker
just started or restarted, an operator's ``kill -HUP`` racing a rollout) would kill it. So
SIGHUP is held back instead, from the first thing a server does until its handler is in:
blocked, a SIGHUP stays pending and is delivered the moment it is let through, as a reload
of the configuration file (which then reads the file as it is by then).

The blocked mask is inherited by threads, across fork and across exec: a parent that holds
SIGHUP while it starts children hands the hold on to them, closing the window before the
child runs any code of ours. Threads started while SIGHUP is held keep it blocked for good,
which is what we want: only the main thread, where Python runs signal handlers, takes it.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

_HANGUP = {signal.SIGHUP}


def hold_hangups() -> None:
    """Keep SIGHUP pending from now on, in this thread and whatever it starts."""
    signal.pthread_sigmask(signal.SIG_BLOCK, _HANGUP)


def release_hangups() -> None:
    """Let SIGHUP through: call once its handler is installed (one held meanwhile runs it)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _HANGUP)


@contextmanager
def hangups_held() -> Iterator[None]:
    """SIGHUP held inside the block, as it was outside after it (children started inside
    begin with it held)."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _HANGUP)
    try:
        yield
    finally:
        if signal.SIGHUP not in previous:
            release_hangups()
