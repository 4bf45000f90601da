"""`gateway authz` with several worker processes behind one Envoy: load spreads, a dead
worker is replaced, and SIGTERM stops them all cleanly."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
import requests

from devtools.processes import ManagedProcess, free_ports, port_open
from gateway.config import load_config
from tests.support.servers import (
    EchoBackend,
    EnvoyServer,
    RedisServer,
    base_config,
    gateway_env,
    write_config,
)
from tests.support.stack import Stack

pytestmark = pytest.mark.integration

WORKERS = 3


@pytest.fixture(params=["grpc", "http"])
def supervised(request, tmp_path: Path, redis_server: RedisServer, echo_backend: EchoBackend):
    raw = base_config(redis_url=redis_server.url, backend_url=echo_backend.url)
    first = free_ports(WORKERS)
    raw["ext_authz"].update(
        listen=f"127.0.0.1:{first}", workers=WORKERS, transport=request.param, decision_log="all"
    )
    config_path = write_config(tmp_path / "gateway.yaml", raw)
    config = load_config(config_path, gateway_env())
    authz = ManagedProcess(
        "ext-authz-supervisor",
        [sys.executable, "-m", "ext_authz", "--config", str(config_path)],
        env=gateway_env(),
    ).start(lambda: all(port_open(first + i) for i in range(WORKERS)))
    envoy = EnvoyServer(config_path, tmp_path / "envoy.yaml", list(config.ext_authz.endpoints()))
    envoy.start()
    stack = Stack(config_path, config, None, envoy)  # type: ignore[arg-type]
    yield stack, authz
    envoy.stop()
    authz.stop()


def worker_pids(authz: ManagedProcess) -> dict[int, int]:
    """The latest pid the supervisor reported for each worker."""
    pids = {}
    for line in authz.log_path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("message") == "worker started":
            pids[entry["worker"]] = entry["pid"]
    return pids


def call(stack: Stack, cookie: str, http: requests.Session) -> int:
    return http.get(
        stack.envoy.url + "/api/x", headers={"Cookie": f"{stack.cookie_name}={cookie}"}, timeout=10
    ).status_code


def test_workers_share_the_load_survive_a_crash_and_stop_on_sigterm(supervised):
    stack, authz = supervised
    cookie = stack.create_session(tokens={"primary": "tok"}).encode()
    http = requests.Session()
    assert {call(stack, cookie, http) for _ in range(60)} == {200}
    answered_by = {
        json.loads(line).get("worker")
        for line in authz.output().splitlines()
        if '"message": "check"' in line
    }
    assert answered_by == set(range(WORKERS))  # least-request spreads over every worker

    victim = worker_pids(authz)[1]
    os.kill(victim, signal.SIGKILL)
    statuses = [call(stack, cookie, http) for _ in range(30)]
    assert set(statuses) <= {200, 503}  # never a request through without a decision
    deadline = time.monotonic() + 10
    while worker_pids(authz)[1] == victim:
        assert time.monotonic() < deadline, authz.output()[-2000:]
        time.sleep(0.2)
    time.sleep(1.5)  # Envoy's health check sees the new worker
    assert {call(stack, cookie, http) for _ in range(30)} == {200}

    pids = worker_pids(authz).values()
    authz.signal(signal.SIGTERM)
    assert authz.process is not None and authz.process.wait(15) == 0
    for pid in pids:
        assert (
            not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
        )
