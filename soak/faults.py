"""The faults the fault-injection suite injects into a running gateway, each begun and ended.

A fault acts on the real processes: the dev IdPs' ``/_admin/faults``, Redis through an
administrative connection of its own (CONFIG, CLIENT PAUSE, CLIENT KILL) or by signal, and the
ext_authz supervisor, its workers and the login app by signal. Storm-like faults repeat an
action every ``tick_seconds`` while they last. ``end`` returns the moment the fault was
really over (a Redis pause runs out after the last one was sent), from which recovery counts.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import redis

from gateway.providers.transport import HTTP_TIMEOUT

if TYPE_CHECKING:
    from soak.environment import Environment

# Longer than every check waits for a refresh and than the default read timeout of provider
# calls (the refresh timeout before issue 12, when the gateway gave up and the provider then
# completed the refresh, rotating the token, for nobody); shorter than tokens.refresh_timeout,
# which a refresh now runs to. Past that, no client could keep the answer.
IDP_STALL_SECONDS = HTTP_TIMEOUT[1] + 2.0
REDIS_PAUSE_MS = 400  # each CLIENT PAUSE: longer than redis.timeout, so commands time out
REDIS_PAUSE_EVERY = 0.5
RESET_EVERY = 0.1
HANGUP_EVERY = 0.2
THAW_SECONDS = 0.15  # a stopped worker runs this long every FREEZE_EVERY
FREEZE_EVERY = 0.5
PIN_EVERY = 0.1
QUIET_BEFORE_KILL = 1.0  # re-pinning maxmemory to what Redis holds


@dataclass
class FaultTarget:
    """What faults act on: the running gateway and an admin connection to its Redis."""

    env: Environment
    admin: redis.Redis

    @classmethod
    def of(cls, env: Environment) -> FaultTarget:
        # Its own long timeout: CLIENT PAUSE holds this connection too, and a reset storm
        # must not take the suite's control of Redis with it.
        client = redis.Redis.from_url(env.redis.url, socket_timeout=5, socket_connect_timeout=5)
        return cls(env, client)

    def idps(self, mode: str, slow_seconds: float | None = None) -> None:
        for idp in self.env.stack.idps.values():
            idp.set_faults(mode, slow_seconds=slow_seconds)

    def worker_pids(self) -> list[int]:
        supervisor = self.env.stack.supervisor
        assert supervisor is not None, "the fault suite runs ext_authz supervised"
        return supervisor.worker_pids()


@dataclass(frozen=True)
class Fault:
    """One fault: ``begin``, an optional repeated ``tick``, and ``end``."""

    name: str
    summary: str  # for the report's table
    begin: Callable[[FaultTarget], None]
    end: Callable[[FaultTarget], None]
    tick: Callable[[FaultTarget], None] | None = None
    tick_seconds: float = 1.0
    # Shorter would not test what the name says: at least min_seconds plus this many access
    # token lifetimes (the suite's tokens are refreshed at half their lifetime).
    min_seconds: float = 0.0
    min_token_lifetimes: float = 0.0
    lingers_seconds: float = 0.0  # after end(), the fault still acts this long


def _nothing(_: FaultTarget) -> None:
    return None


# -- the IdP ---------------------------------------------------------------------------------


def _idp_stall(target: FaultTarget) -> None:
    target.idps("slow", slow_seconds=IDP_STALL_SECONDS)


def _idp_stall_503(target: FaultTarget) -> None:
    target.idps("slow503", slow_seconds=IDP_STALL_SECONDS)


def _idp_down(target: FaultTarget) -> None:
    target.idps("error503")


def _idp_ok(target: FaultTarget) -> None:
    target.idps("ok")


# -- Redis -----------------------------------------------------------------------------------


class _MaxMemory:
    """Redis at its maxmemory with noeviction: maxmemory pinned (again every ``PIN_EVERY``) to
    what Redis holds, so one small write fits (a refresh lock) and the next is refused (OOM),
    as when a full Redis frees a little now and then."""

    def __init__(self) -> None:
        self._saved: dict[str, str] = {}

    def begin(self, target: FaultTarget) -> None:
        admin = target.admin
        self._saved = {
            name: str(admin.config_get(name)[name]) for name in ("maxmemory", "maxmemory-policy")
        }
        admin.config_set("maxmemory-policy", "noeviction")
        self.pin(target)

    def pin(self, target: FaultTarget) -> None:
        used = int(target.admin.info("memory")["used_memory"])
        target.admin.config_set("maxmemory", str(used))

    def end(self, target: FaultTarget) -> None:
        for name, value in self._saved.items():
            target.admin.config_set(name, value)


def _pause_redis(target: FaultTarget) -> None:
    target.admin.execute_command("CLIENT", "PAUSE", REDIS_PAUSE_MS, "ALL")


def _reset_connections(target: FaultTarget) -> None:
    # SKIPME yes (the default): the admin connection stays.
    target.admin.execute_command("CLIENT", "KILL", "TYPE", "normal")


def _kill_redis(target: FaultTarget) -> None:
    target.env.redis.kill()


def _restart_redis(target: FaultTarget) -> None:
    target.env.redis.start_again()
    target.admin.connection_pool.disconnect()  # its connection died with the server


# -- ext_authz and the login app -------------------------------------------------------------


class _StoppedWorker:
    """SIGSTOP one worker (the supervisor sees it alive and leaves it), let it run for
    ``THAW_SECONDS`` every ``tick_seconds`` (a starved or debugged process: each freeze may
    land anywhere in a refresh), and SIGCONT it at the end."""

    def __init__(self) -> None:
        self._pid: int | None = None

    def begin(self, target: FaultTarget) -> None:
        self._pid = target.worker_pids()[-1]
        os.kill(self._pid, signal.SIGSTOP)

    def thaw_briefly(self, target: FaultTarget) -> None:
        assert self._pid is not None
        os.kill(self._pid, signal.SIGCONT)
        time.sleep(THAW_SECONDS)  # the fault itself: how long the worker may run
        os.kill(self._pid, signal.SIGSTOP)

    def end(self, target: FaultTarget) -> None:
        assert self._pid is not None
        os.kill(self._pid, signal.SIGCONT)


def _hangups(target: FaultTarget) -> None:
    """SIGHUP to the supervisor (which forwards it), to each worker and to the login app."""
    stack = target.env.stack
    assert stack.supervisor is not None and stack.login_app is not None
    stack.supervisor.signal(signal.SIGHUP)
    for pid in target.worker_pids():
        try:
            os.kill(pid, signal.SIGHUP)
        except ProcessLookupError:  # a worker that died: the supervisor restarts it
            pass
    stack.login_app.signal(signal.SIGHUP)


def _kill_worker_then_hangups(target: FaultTarget) -> None:
    """A worker dies; the supervisor starts another, into the storm that follows.

    The IdPs refuse refreshes (503, rotating nothing) for a moment around the kill: a
    worker killed between a provider's rotation and the write to Redis loses that session
    whatever the gateway does, and this fault is about the SIGHUPs."""
    target.idps("error503")
    time.sleep(QUIET_BEFORE_KILL)  # lets refreshes already at the provider finish
    os.kill(target.worker_pids()[0], signal.SIGKILL)
    target.idps("ok")
    _hangups(target)


def catalogue() -> dict[str, Fault]:
    """Every fault by name, in the order the suite runs them."""
    maxmemory = _MaxMemory()
    stopped = _StoppedWorker()
    faults = [
        Fault(
            "idp_stall",
            f"both IdPs' token endpoints stall {IDP_STALL_SECONDS:g}s, then complete the refresh",
            _idp_stall,
            _idp_ok,
            # Every session's first refresh in the fault (due within half a token lifetime)
            # times out, and the retries after it (queued for the worker's threads) are
            # stalled too.
            min_seconds=HTTP_TIMEOUT[1] + 4.0,
            min_token_lifetimes=0.5,
            lingers_seconds=IDP_STALL_SECONDS,
        ),
        Fault(
            "idp_stall_503",
            f"both IdPs' token endpoints stall {IDP_STALL_SECONDS:g}s, then answer 503",
            _idp_stall_503,
            _idp_ok,
            min_seconds=HTTP_TIMEOUT[1] + 1.0,
            min_token_lifetimes=0.5,
            lingers_seconds=IDP_STALL_SECONDS,
        ),
        Fault(
            "idp_down",
            "both IdPs' token endpoints answer 503 past the access tokens' expiry",
            _idp_down,
            _idp_ok,
            min_seconds=1.0,
            min_token_lifetimes=1.0,
        ),
        Fault(
            "redis_maxmemory",
            "Redis at maxmemory (noeviction, pinned to its usage): writes refused",
            maxmemory.begin,
            maxmemory.end,
            tick=maxmemory.pin,
            tick_seconds=PIN_EVERY,
        ),
        Fault(
            "redis_slow",
            f"Redis paused {REDIS_PAUSE_MS} ms of every {REDIS_PAUSE_EVERY * 1000:g} ms",
            _pause_redis,
            _nothing,
            tick=_pause_redis,
            tick_seconds=REDIS_PAUSE_EVERY,
            lingers_seconds=REDIS_PAUSE_MS / 1000,
        ),
        Fault(
            "redis_resets",
            f"every Redis client connection killed every {RESET_EVERY * 1000:g} ms",
            _reset_connections,
            _nothing,
            tick=_reset_connections,
            tick_seconds=RESET_EVERY,
        ),
        Fault(
            "redis_restart",
            "Redis SIGKILLed, restarted on its port from its append-only file",
            _kill_redis,
            _restart_redis,
        ),
        Fault(
            "authz_sigstop",
            "one of the two ext_authz workers SIGSTOPped, SIGCONTed for "
            f"{THAW_SECONDS * 1000:g} ms every {FREEZE_EVERY * 1000:g} ms",
            stopped.begin,
            stopped.end,
            tick=stopped.thaw_briefly,
            tick_seconds=FREEZE_EVERY,
        ),
        Fault(
            "sighup_storm",
            f"SIGHUP every {HANGUP_EVERY * 1000:g} ms to the ext_authz supervisor, "
            "each worker and the login app",
            _hangups,
            _nothing,
            tick=_hangups,
            tick_seconds=HANGUP_EVERY,
        ),
        Fault(
            "sighup_worker_start",
            "an ext_authz worker killed (no refresh in flight), the SIGHUP storm running "
            "while its replacement starts",
            _kill_worker_then_hangups,
            _nothing,
            tick=_hangups,
            tick_seconds=HANGUP_EVERY,
        ),
    ]
    return {fault.name: fault for fault in faults}


def wait_until(condition: Callable[[], bool], timeout: float, every: float = 0.1) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(every)
    return True
