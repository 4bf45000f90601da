"""ext_authz SIGKILLed under a steady stream of requests: Envoy fails closed (503) and no
request ever reaches a backend without a decision; a fresh process on the same address is
picked up, and with two workers the survivor carries on."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from devtools.processes import ManagedProcess, port_open
from tests.support.servers import EchoBackend, ExtAuthzServer, RedisServer, gateway_env
from tests.support.stack import Stack, start_stack

pytestmark = pytest.mark.integration

CLIENT_THREADS = 4
MAX_REQUESTS_PER_THREAD = 3000  # bounds the stream even if every answer is instant
TOKEN = "primary-token-under-load"
# Unauthenticated kinds: no credential at all, and a made-up provider token that must not
# be taken for one.
KINDS = ("session", "anonymous", "spoofed", "session")
HEALTH_CHECK_INTERVAL = 1.0  # gateway/envoy/render.py _ext_authz_cluster, with several workers


@dataclass(frozen=True)
class Outcome:
    kind: str
    started: float  # time.monotonic()
    status: int  # 0: no HTTP answer at all
    backend_saw_authorization: tuple[str, ...] | None  # None: the backend was not reached


def headers_for(kind: str, stack: Stack, cookie: str) -> dict[str, str]:
    headers = {"Accept": "application/json"}
    if kind == "session":
        headers["Cookie"] = f"{stack.cookie_name}={cookie}"
    elif kind == "spoofed":
        headers["Authorization"] = f"Bearer {TOKEN}"
    return headers


def one_request(http: requests.Session, stack: Stack, kind: str, cookie: str) -> Outcome:
    started = time.monotonic()
    try:
        response = http.get(
            stack.url + "/api/load", headers=headers_for(kind, stack, cookie), timeout=5
        )
    except requests.RequestException:
        return Outcome(kind, started, 0, None)
    seen = None
    if response.headers.get("content-type") == "application/json":
        body = json.loads(response.text or "{}")
        if "method" in body and "headers" in body:  # the echo backend's answer
            seen = tuple(body["headers"].get("authorization", []))
    return Outcome(kind, started, response.status_code, seen)


def run_stream(
    stack: Stack, cookie: str, seconds: float, during: Callable[[], None] | None = None
) -> list[Outcome]:
    """Requests from several threads for ``seconds``; ``during`` runs meanwhile, once."""
    deadline = time.monotonic() + seconds
    outcomes: list[Outcome] = []
    lock = threading.Lock()

    def client(offset: int) -> None:
        http = requests.Session()
        mine = []
        for number in range(MAX_REQUESTS_PER_THREAD):
            if time.monotonic() >= deadline:
                break
            mine.append(one_request(http, stack, KINDS[(number + offset) % len(KINDS)], cookie))
        with lock:
            outcomes.extend(mine)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENT_THREADS)]
    for thread in threads:
        thread.start()
    if during is not None:
        during()
    for thread in threads:
        thread.join(seconds + 10)
    assert not any(thread.is_alive() for thread in threads)
    return sorted(outcomes, key=lambda outcome: outcome.started)


def assert_no_request_without_a_decision(outcomes: list[Outcome]) -> Counter[tuple[str, int]]:
    """Every answer is the backend with the injected token (sessions only), a denial, or 503."""
    for outcome in outcomes:
        assert outcome.status != 0, outcome  # Envoy itself never went away
        if outcome.kind == "session":
            assert outcome.status in (200, 503), outcome
        else:
            assert outcome.status in (401, 503), outcome
        if outcome.status == 200:
            assert outcome.backend_saw_authorization == (f"Bearer {TOKEN}",), outcome
        else:
            assert outcome.backend_saw_authorization is None, outcome
    return Counter((outcome.kind, outcome.status) for outcome in outcomes)


def assert_all_decided_normally(outcomes: list[Outcome]) -> None:
    assert outcomes
    expected = {"session": 200, "anonymous": 401, "spoofed": 401}
    assert [o for o in outcomes if o.status != expected[o.kind]] == []


def seconds_until_sessions_work(stack: Stack, cookie: str, *, limit: float) -> float:
    """How long until a session's request gets through again (``limit`` if it never does)."""
    started = time.monotonic()
    http = requests.Session()
    while time.monotonic() - started < limit:
        if one_request(http, stack, "session", cookie).status == 200:
            return time.monotonic() - started
        time.sleep(0.05)
    return limit


def transport_config(transport: str) -> Callable[[dict], None]:
    def adjust(raw: dict) -> None:
        raw["ext_authz"]["transport"] = transport

    return adjust


@pytest.fixture(params=["grpc", "http"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def start(
    directory: Path, redis: RedisServer, backend: EchoBackend, transport: str, workers: int
) -> tuple[Stack, str]:
    stack = start_stack(
        directory, redis, backend, transport_config(transport), authz_workers=workers
    )
    return stack, stack.create_session(tokens={"primary": TOKEN}).encode()


def restart_on_same_address(stack: Stack, killed: ExtAuthzServer) -> ManagedProcess:
    """A fresh ext_authz with the killed one's command line, so the same ``--listen``."""
    replacement = ManagedProcess("ext-authz-replacement", killed.process.argv, env=gateway_env())
    replacement.start(lambda: port_open(killed.port))
    stack.stoppers.append(replacement.stop)
    return replacement


def test_killing_the_only_worker_mid_stream_fails_closed_and_a_replacement_is_picked_up(
    tmp_path, redis_server, echo_backend, transport
):
    stack, cookie = start(tmp_path, redis_server, echo_backend, transport, workers=1)
    killed_at: list[float] = []

    def kill_midway() -> None:
        time.sleep(1.0)
        stack.ext_authz.signal(signal.SIGKILL)
        killed_at.append(time.monotonic())

    try:
        outcomes = run_stream(stack, cookie, 2.5, kill_midway)
        counts = assert_no_request_without_a_decision(outcomes)
        before = [o for o in outcomes if o.started < killed_at[0] - 0.05]
        after = [o for o in outcomes if o.started > killed_at[0] + 0.2]
        assert_all_decided_normally(before)
        assert after and {o.status for o in after} == {503}  # nobody decides: nobody gets in
        assert counts[("session", 200)] > 20 and counts[("session", 503)] > 20, counts

        restart_on_same_address(stack, stack.ext_authz)
        assert seconds_until_sessions_work(stack, cookie, limit=5.0) < 5.0
        assert_all_decided_normally(run_stream(stack, cookie, 0.5))
    finally:
        stack.stop()


def health_checks_so_far(stack: Stack) -> int:
    stats = requests.get(
        f"http://127.0.0.1:{stack.envoy.admin_port}/stats",
        params={"filter": r"^cluster\.ext_authz\.health_check\.attempt$"},
        timeout=2,
    ).text
    return int(stats.rpartition(":")[2])


def kill_one_of_two_mid_stream(
    directory: Path, redis: RedisServer, backend: EchoBackend, transport: str, seconds: float
) -> tuple[list[Outcome], float]:
    """The stream's outcomes with worker 0 of two SIGKILLed, and the kill's time.

    The kill comes right after one of Envoy's health checks, so the dead worker stays in the
    rotation for the next HEALTH_CHECK_INTERVAL: the window a retry must cover, the same in
    every run."""
    stack, cookie = start(directory, redis, backend, transport, workers=2)
    killed_at: list[float] = []

    def kill_one() -> None:
        time.sleep(0.3)
        # Each worker has its own health check, both on the same 1 s beat: wait for a round
        # to start, then for it to end, so worker 0 was checked a moment ago.
        seen = health_checks_so_far(stack)
        deadline = time.monotonic() + HEALTH_CHECK_INTERVAL * 3
        while (latest := health_checks_so_far(stack)) == seen and time.monotonic() < deadline:
            time.sleep(0.005)
        while time.monotonic() < deadline:
            time.sleep(0.05)
            seen, latest = latest, health_checks_so_far(stack)
            if latest == seen:
                break
        stack.workers[0].signal(signal.SIGKILL)
        killed_at.append(time.monotonic())

    try:
        return run_stream(stack, cookie, seconds, kill_one), killed_at[0]
    finally:
        stack.stop()


def test_killing_one_of_two_workers_leaves_the_other_answering(
    tmp_path, redis_server, echo_backend, transport
):
    outcomes, killed_at = kill_one_of_two_mid_stream(
        tmp_path, redis_server, echo_backend, transport, seconds=3.2
    )
    counts = assert_no_request_without_a_decision(outcomes)
    # Envoy's next health check (one failure suffices) drops the dead worker; from then on
    # every request is decided by the survivor.
    settled = [o for o in outcomes if o.started > killed_at + HEALTH_CHECK_INTERVAL + 0.4]
    assert_all_decided_normally(settled)
    # Until then the survivor already answers its share: no total outage.
    meanwhile = [o for o in outcomes if killed_at < o.started < killed_at + HEALTH_CHECK_INTERVAL]
    assert sum(o.status == 200 for o in meanwhile) > 20, counts
    assert counts[("session", 200)] > 100, counts


def test_grpc_checks_sent_to_a_dead_worker_are_retried_on_the_other(
    tmp_path, redis_server, echo_backend
):
    outcomes, killed_at = kill_one_of_two_mid_stream(
        tmp_path, redis_server, echo_backend, "grpc", seconds=2.2
    )
    assert_no_request_without_a_decision(outcomes)
    # Before the next health check drops it, the dead worker still gets its share of checks.
    window = [o for o in outcomes if killed_at <= o.started <= killed_at + 0.8]
    unavailable = [o for o in window if o.status == 503]
    # Without retries about half of this window fails; with them only a few checks that
    # were already on the dead worker when it died.
    assert len(unavailable) <= len(window) // 8, (len(unavailable), len(window))
